"""Video through ``gradcam``, ``activations`` or ``deconv``: ``run_video(ctx, path, mode, out)``.

Frames stream from OpenCV's reader (``vizkit.load.video``) through the command's tensor-level step (the same
``gradcam_tensor`` / ``activations_tensor`` / ``deconv_tensor`` a still image goes through) into three files of
``OUT/<video stem>/``, all written a frame at a time, so memory does not grow with the clip's length:

- ``<mode>.mp4``: the overlay (Grad-CAM) or the grid of maps / projections beside each frame, at the source's
  frame rate divided by ``every``;
- ``<mode>.npz``: per-frame arrays, first axis = selected frame (``frame_index``, ``time`` and the step's own);
- ``<mode>.pdf``: a contact sheet of at most ``sheet_frames`` evenly spaced frames;
- ``<mode>.manifest.json`` last. The folder appears only when everything was written.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from vizkit.capture.activations import DEFAULT_TOP
from vizkit.capture.probe import num_classes
from vizkit.capture.recorder import resolve_layers
from vizkit.errors import UserInputError
from vizkit.jobs.activations import activations_tensor
from vizkit.jobs.context import RunContext
from vizkit.jobs.deconv import deconv_tensor
from vizkit.jobs.gradcam import gradcam_tensor
from vizkit.load import LoadedModel
from vizkit.load.video import VideoFrame, check_selection, frame_input, iter_frames, probe_video
from vizkit.project.targets import parse_targets
from vizkit.render.video_stream import activation_grid_frame, cam_overlay, projection_grid_frame

__all__ = ["MODES", "FrameOut", "VideoOutputs", "run_video"]

MODES = ("gradcam", "activations", "deconv")
SHEET_FRAMES = 12
T = TypeVar("T")


@dataclass(frozen=True)
class FrameOut:
    """What one frame contributes: the picture for the video, its npz row, and its contact-sheet caption."""

    picture: np.ndarray
    row: dict[str, np.ndarray]
    caption: str
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class VideoOutputs:
    """The files of one video run and how many frames went through."""

    folder: Path
    video: Path
    arrays: Path
    sheet: Path
    manifest: Path
    frames: int


Step = Callable[[list[VideoFrame]], list[FrameOut]]


def run_video(loaded: LoadedModel | RunContext, path: str | Path, mode: str, out: str | Path, *, every: int = 1,
              max_frames: int | None = None, layers: Sequence[str] | None = None, targets: Sequence[str] = ("auto",),
              top: int = DEFAULT_TOP, scale: str = "shared", top_k: int = 9, batch_size: int = 8,
              deconv_options: Mapping[str, Any] | None = None, sheet_frames: int = SHEET_FRAMES,
              stem: str | None = None, progress: Callable[[str], None] | None = None) -> VideoOutputs:
    """Run ``mode`` on the frames of ``path`` (see the module docstring); returns the written paths.

    ``layers``: gradcam's layer (the first) or the layers of activations/deconv, default the command's own;
    ``targets``: gradcam's classes; ``top``/``scale``: activations'; ``top_k`` and ``deconv_options`` (``mode``,
    ``crop``, ``engine`` of ``deconv_tensor``): deconv's; ``batch_size``: frames per gradcam forward; ``stem``: the
    output folder's name (default the file's stem). Model, layer and option problems raise before the first frame
    is read.
    """
    from vizkit.outputs.atomic import atomic_dir, output_folder
    from vizkit.outputs.manifest import write_manifest
    from vizkit.outputs.npz_stream import NpzStream
    from vizkit.render.video_sheet import SheetFrame, write_contact_sheet
    from vizkit.render.video_stream import VideoStreamWriter

    if mode not in MODES:
        raise UserInputError(f"video mode {mode!r} is not one of {', '.join(MODES)}")
    if batch_size < 1 or sheet_frames < 1:
        raise UserInputError(f"batch size and sheet frames must be at least 1, got {batch_size} and {sheet_frames}")
    check_selection(every, max_frames)
    info = probe_video(path)  # a missing or unreadable file fails before any model work
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    started = time.perf_counter()
    step, settings = _make_step(ctx, mode, layers, targets, top, scale, top_k, dict(deconv_options or {}))
    fps = info.fps / every if info.fps > 0 else 0.0
    settings = {**settings, "every": every, "max_frames": max_frames, "device": str(ctx.device),
                "source_fps": info.fps, "source_size": [info.width, info.height]}
    frames = iter_frames(path, every=every, max_frames=max_frames)
    keeper: _Keeper[SheetFrame] = _Keeper(sheet_frames)
    final = output_folder(out, stem or Path(path).stem)
    with atomic_dir(final) as tmp:
        with VideoStreamWriter(tmp / f"{mode}.mp4", fps) as video, NpzStream(tmp / f"{mode}.npz") as arrays:
            count, notes = 0, dict[str, None]()  # notes of any frame, in first-seen order, each once
            for batch in _batches(frames, batch_size if mode == "gradcam" else 1):
                for frame, done in zip(batch, step(batch), strict=True):
                    video.write(done.picture)
                    arrays.append({"frame_index": np.int64(frame.index), "time": np.float64(frame.time),
                                   **done.row})
                    keeper.add(count, SheetFrame(frame.index, frame.time, done.picture, done.caption))
                    notes.update(dict.fromkeys(done.notes))
                    count += 1
                if progress is not None:
                    progress(f"{Path(path).name}: {count} frames")
        run_info = ctx.info(path, settings)
        run_info.notes += list(notes)
        selection = f"every {every}" + (f", at most {max_frames}" if max_frames else "")
        summary = [f"{count} frames ({selection}) of {info.frame_count if info.frame_count > 0 else 'unknown'} in "
                   f"the file; {info.width} x {info.height} at {info.fps:g} frames/s",
                   f"files: {mode}.mp4 (every selected frame), {mode}.npz (per-frame arrays); this sheet shows "
                   f"{len(keeper.kept())} evenly spaced frames"]
        write_contact_sheet(tmp / f"{mode}.pdf", keeper.kept(), mode, run_info, summary)
        write_manifest(tmp, run_info, {"load_model": ctx.load_seconds, "total": time.perf_counter() - started},
                       f"{mode}.manifest.json", extra={"frames": count, "video_frames_total": info.frame_count})
    return VideoOutputs(folder=final, video=final / f"{mode}.mp4", arrays=final / f"{mode}.npz",
                        sheet=final / f"{mode}.pdf", manifest=final / f"{mode}.manifest.json", frames=count)


def _batches(frames: Iterator[VideoFrame], size: int) -> Iterator[list[VideoFrame]]:
    while batch := list(itertools.islice(frames, size)):
        yield batch


class _Keeper(Generic[T]):
    """At most ``limit`` evenly spaced items of a stream of unknown length: keeps positions divisible by a stride
    that doubles whenever the list overflows (so between limit/2 and limit items, the first always among them)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.stride = limit, 1
        self.items: list[tuple[int, T]] = []

    def add(self, position: int, item: T) -> None:
        if position % self.stride:
            return
        self.items.append((position, item))
        while len(self.items) > self.limit:
            self.stride *= 2
            self.items = [(p, i) for p, i in self.items if p % self.stride == 0]

    def kept(self) -> list[T]:
        return [item for _, item in self.items]


def _inputs(ctx: RunContext, batch: list[VideoFrame]) -> torch.Tensor:
    return torch.cat([frame_input(f.rgb, ctx.loaded.preprocessing) for f in batch]).to(ctx.device)


def _make_step(ctx: RunContext, mode: str, layers: Sequence[str] | None, targets: Sequence[str], top: int,
               scale: str, top_k: int, deconv_options: dict[str, Any]) -> tuple[Step, dict]:
    """The per-batch function of ``mode`` and its settings, with the model, layers and options checked now."""
    if mode == "gradcam":
        layer = layers[0] if layers else ctx.deepest_layer()
        resolve_layers(ctx.model, [layer])
        parsed = parse_targets(targets, ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))
        return _gradcam_step(ctx, layer, parsed), {"layer": layer, "targets": [str(t) for t in targets]}
    if mode == "activations":
        if top < 1:
            raise UserInputError(f"--top must be at least 1, got {top}")
        chosen = ctx.layers(layers)
        return _activations_step(ctx, chosen, top, scale), {"layers": chosen, "top": top, "scale": scale}
    if top_k < 1:
        raise UserInputError(f"--top-k must be at least 1, got {top_k}")
    chosen = ctx.spatial_layers(layers)
    return _deconv_step(ctx, chosen, top_k, deconv_options), {"layers": chosen, "top_k": top_k, **deconv_options}


def _gradcam_step(ctx: RunContext, layer: str, targets: list[int | None]) -> Step:
    def step(batch: list[VideoFrame]) -> list[FrameOut]:
        done = []
        for r in gradcam_tensor(ctx, _inputs(ctx, batch), layer, targets):
            peaks = np.array([np.unravel_index(int(np.argmax(c)), c.shape) for c in r.cam], np.int64).reshape(-1, 2)
            row = {"targets": r.targets, "scores": r.scores, "cam_raw": r.cam_raw, "cam": r.cam, "peak": peaks}
            caption = f"{r.class_names[0]} {float(r.scores[0]):.2f}; peak (y, x) {tuple(int(v) for v in peaks[0])}"
            done.append(FrameOut(cam_overlay(r.image, r.cam[0]), row, caption, r.notes))
        return done

    return step


def _activations_step(ctx: RunContext, layers: list[str], top: int, scale: str) -> Step:
    """Each tile follows one unit through the clip: the channels strongest on the first frame, kept for all."""
    fixed: dict[str, np.ndarray] = {}

    def step(batch: list[VideoFrame]) -> list[FrameOut]:
        x = _inputs(ctx, batch)
        result = activations_tensor(ctx, x, layers, top=2**62, scale=scale)  # every channel, ranked
        grids = []
        for g in result.grids:
            channels = fixed.setdefault(g.layer, g.channels[:top])
            pick = np.argsort(g.channels)[channels]  # where each fixed channel sits in this frame's ranking
            grids.append(replace(g, channels=channels, maps=g.maps[pick], maxima=g.maxima[pick],
                                 means=g.means[pick]))
        row: dict[str, np.ndarray] = {}
        for g in grids:
            row |= {f"{g.layer}/channels": g.channels, f"{g.layer}/maps": g.maps, f"{g.layer}/max": g.maxima}
        caption = "; ".join(f"{g.layer} max {float(g.maxima.max()):.3g}" for g in grids)
        return [FrameOut(activation_grid_frame(result.image, grids, scale), row, caption, result.notes)]

    return step


def _deconv_step(ctx: RunContext, layers: list[str], top_k: int, options: dict[str, Any]) -> Step:
    def step(batch: list[VideoFrame]) -> list[FrameOut]:
        result = deconv_tensor(ctx, _inputs(ctx, batch), layers, top_k=top_k, **options)
        row: dict[str, np.ndarray] = {}
        for lp in result.layers:
            row |= {f"{lp.layer}/channels": np.array([u.channel for u in lp.units], np.int64),
                    f"{lp.layer}/positions": np.array([u.position or (-1, -1) for u in lp.units], np.int64),
                    f"{lp.layer}/activations": np.array([u.activation for u in lp.units], np.float32)}
        picture = projection_grid_frame(result.image, [np.stack([u.projection for u in lp.units])
                                                        for lp in result.layers])
        caption = "; ".join(f"{lp.layer} top ch {lp.units[0].channel}" for lp in result.layers if lp.units)
        return [FrameOut(picture, row, caption, result.notes)]

    return step
