"""``vizkit gradcam`` as a function: ``run_gradcam(GradCamConfig(...))``; ``gradcam_tensor`` works on a batch of
preprocessed images, ``gradcam_image`` loads one file first (for notebooks: no files written).

Images are processed ``batch_size`` at a time: one forward pass per batch, one backward per target index (seeded
with each image's own class). A bad image is reported and skipped without losing the rest of its batch.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vizkit.capture.probe import num_classes
from vizkit.capture.recorder import resolve_layers
from vizkit.errors import UserInputError, VizkitError
from vizkit.jobs.common import JobReport, VideoJob, for_each_image
from vizkit.jobs.context import RunContext
from vizkit.load import LoadedModel
from vizkit.project.gradcam import gradcam
from vizkit.project.results import GradCamResult
from vizkit.project.targets import parse_targets

_Outcome = tuple[GradCamResult, float] | BaseException  # one image's result and seconds, or its error
NO_RECTIFIER_NOTE = "no rectifier call was intercepted: guided backprop here equals the plain input gradient"


@dataclass
class GradCamConfig(VideoJob):
    """Options of ``vizkit gradcam``. ``images`` empty means the bundled sample photos; ``layer`` None means the
    last spatial feature layer; ``targets``: ``auto``, class indices or class names (several allowed); video files
    among ``images`` go through ``run_video`` (``every``/``max_frames`` choose the frames)."""

    layer: str | None = None
    targets: Sequence[str] = ("auto",)
    batch_size: int = 8

    def check(self) -> None:
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be at least 1, got {self.batch_size}")


def gradcam_tensor(ctx: RunContext, x: torch.Tensor, layer: str,
                   targets: Sequence[int | None]) -> list[GradCamResult]:
    """One ``GradCamResult`` per image of the preprocessed batch ``x`` (N, C, H, W); ``None`` targets = top-1."""
    out = gradcam(ctx.model, x, layer, [list(targets)] * x.shape[0])
    names = ctx.loaded.class_names or []
    notes = []
    if not any("guided" in a.rule for a in out.audit):
        notes.append(NO_RECTIFIER_NOTE)
    results = []
    for n in range(x.shape[0]):
        idx = [int(i) for i in out.targets[n]]
        results.append(GradCamResult(
            input=x[n:n + 1].detach().float().cpu().numpy(),
            image=ctx.display(x[n:n + 1]),
            layer=layer,
            targets=out.targets[n],
            class_names=[names[i] if i < len(names) else f"class {i}" for i in idx],
            scores=out.scores[n],
            cam_raw=out.cam_raw[n],
            cam=out.cam[n],
            guided_backprop=out.guided_backprop[n],
            guided_gradcam=out.guided_gradcam[n],
            predictions=[] if out.logits is None else ctx.predictions(torch.from_numpy(out.logits[n:n + 1])),
            audit=out.audit,
            notes=list(notes),
        ))
    return results


def gradcam_image(loaded: LoadedModel | RunContext, image: str | Path, layer: str | None = None,
                  targets: Sequence[str] = ("auto",)) -> GradCamResult:
    """Load, preprocess and explain one image: everything ``vizkit gradcam`` renders, as a ``GradCamResult``."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    layer = layer or ctx.deepest_layer()
    parsed = parse_targets(targets, ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))
    return gradcam_tensor(ctx, ctx.input(image), layer, parsed)[0]


def run_gradcam(config: GradCamConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit gradcam``: one folder per image under ``config.out``; bad images are reported and skipped.

    Model, layer and target problems raise before any image is read (nothing can be done for any image);
    per-image problems are collected in the returned report so the batch goes on.
    """
    from vizkit.render.writer import write_outputs

    config.check()
    inputs = config.inputs()
    ctx = RunContext.from_job(config)
    layer = config.layer or ctx.deepest_layer()
    resolve_layers(ctx.model, [layer])
    parsed = parse_targets(config.targets, ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))
    images, stems = inputs.stills, inputs.still_stems
    settings = {"layer": layer, "targets": [str(t) for t in config.targets] or ["auto"], "device": str(ctx.device),
                "batch_size": config.batch_size}
    report = JobReport()
    for start in range(0, len(images), config.batch_size):  # one forward per batch, one batch in memory
        batch = slice(start, start + config.batch_size)
        results = _batch_results(ctx, images[batch], stems[batch], layer, parsed)

        def work(path: Path, stem: str, results: dict[str, _Outcome] = results) -> Path:
            value = results[stem]
            if isinstance(value, BaseException):
                raise value
            result, seconds = value
            return write_outputs(result, ctx.info(path, settings), config.out, stem,
                                 {"load_model": ctx.load_seconds, "project": seconds})

        report.extend(for_each_image(images[batch], work, progress, stems=stems[batch]))
    report.extend(config.run_videos(ctx, inputs, "gradcam", progress, layers=[layer], targets=config.targets,
                                    batch_size=config.batch_size))
    return report


def _batch_results(ctx: RunContext, images: list[Path], stems: list[str], layer: str, targets: list[int | None]
                   ) -> dict[str, _Outcome]:
    """Each image's result and seconds, or the error to report for it: a bad file fails alone; a failing forward
    fails the images of its batch."""
    done: dict[str, _Outcome] = {}
    xs, ok = [], []
    for path, stem in zip(images, stems, strict=True):
        try:
            xs.append(ctx.input(path))
            ok.append(stem)
        except VizkitError as err:
            done[stem] = err
    if not ok:
        return done
    start = time.perf_counter()
    try:
        results = gradcam_tensor(ctx, torch.cat(xs), layer, targets)
    except Exception as err:  # noqa: BLE001 - reported for every image of the batch by for_each_image
        return {**done, **dict.fromkeys(ok, err)}
    seconds = (time.perf_counter() - start) / len(ok)
    return {**done, **{stem: (result, seconds) for stem, result in zip(ok, results, strict=True)}}


__all__ = ["GradCamConfig", "gradcam_image", "gradcam_tensor", "run_gradcam"]
