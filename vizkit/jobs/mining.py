"""``vizkit mine`` as a function: ``run_mine(MineConfig(data=...))`` scans a dataset (pass 1, exact top-K per
channel), projects the selected units' top images (pass 2) and writes ``OUT/mine/``.

One process, or one per device under ``torchrun`` (``vizkit.jobs.distributed``): each rank scans its
``DistributedSampler`` shard, the states are merged exactly, rank 0 projects and writes. Every
``checkpoint_every`` images the state is saved atomically; ``resume`` continues from it.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vizkit.capture.receptive_field import ReceptiveField
from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob, resolve_device
from vizkit.jobs.context import RunContext, tiny_activation_notes
from vizkit.jobs.distributed import Ranks, gather_objects, gather_state, process_group, shard
from vizkit.jobs.mine_checkpoint import Checkpoint, checkpoint_path, load_checkpoint, model_digest, save_checkpoint
from vizkit.load.dataset import ImageDataset, ImageList, image_loader, list_images
from vizkit.project.mine_projection import UnitTopProjections, project_units, select_units
from vizkit.project.results import MineOutput
from vizkit.project.scan import ScanState, scan_batches
from vizkit.project.topk import MineResult

log = logging.getLogger("vizkit")

MINE_DIR = "mine"  # OUT/mine/: the checkpoints here, the outputs from the writer (mine_document's folder)
NO_PROJECT_NOTE = "--no-project: the scan only; no unit was projected or rendered"


@dataclass(kw_only=True)
class MineConfig(ModelJob):
    """Options of ``vizkit mine``; ``data``: a folder (recursive, subfolders = classes) or a text file of paths."""

    data: str | Path
    layers: Sequence[str] | None = None
    top_k: int = 9
    batch_size: int = 32
    workers: int = 0
    limit: int | None = None
    per_class: bool = False
    units: str | None = None          # --units: all | top:N | N | 3,7,12 (default: the projection module's)
    project: bool = True              # False: stop after the scan (--no-project)
    checkpoint_every: int | None = None
    resume: bool = False

    def check(self) -> None:
        for name, value, low in (("--top-k", self.top_k, 1), ("--batch-size", self.batch_size, 1),
                                 ("--workers", self.workers, 0), ("--checkpoint-every", self.checkpoint_every, 1),
                                 ("--limit", self.limit, 1)):
            if value is not None and value < low:
                raise UserInputError(f"{name} must be at least {low}, got {value}")
        spec = (self.units or "all").strip()
        count = spec[4:] if spec.startswith("top:") else spec
        listed = re.fullmatch(r"\d+(\s*,\s*\d+)*\s*,?", spec)
        if self.project and spec != "all" and (not count.isdigit() or int(count) < 1) and not listed:
            # checked before the scan: select_units would only refuse it after hours of scanning
            raise UserInputError(f"--units {spec!r}: use all, top:N, N or a comma list of channels like 3,7,12")


@dataclass
class MineReport(JobReport):
    """What ``run_mine`` did; ``failures`` lists the skipped (unreadable) files. ``result`` is None on ranks > 0."""

    result: MineResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _identity(images: ImageList, ctx: RunContext, layers: list[str], config: MineConfig,
              ranks: Ranks) -> dict[str, str]:
    """What a checkpoint must match to be resumed (names are the words of the refusal message)."""
    loaded = ctx.loaded
    return {"dataset": images.fingerprint(), "model": loaded.name, "weights": model_digest(loaded.model),
            "preprocessing": json.dumps(loaded.preprocessing.to_dict(), sort_keys=True),
            "layer list": ",".join(layers), "top-k": str(config.top_k), "per-class": str(config.per_class),
            "number of ranks": str(ranks.world)}


def run_mine(config: MineConfig, *, progress: Callable[[int, int], None] | None = None,
             on_skip: Callable[[str, str], None] | None = None) -> MineReport:
    """Run ``vizkit mine``. Dataset, model, layer and checkpoint problems raise before the scan; unreadable images
    are reported through ``on_skip(path, reason)`` as they are met and in the report (exit code 2).
    ``progress(done, total)``: this process's images scanned so far (resumed ones included) out of its share."""
    config.check()
    images = list_images(config.data, config.limit)
    if config.per_class and not images.classes:
        raise UserInputError(f"--per-class needs class subfolders in {config.data} (DATA/<class>/<image>)")
    with process_group(resolve_device(config.device)) as (ranks, device):
        ctx = RunContext.from_job(replace(config, device=str(device)))  # each rank on its own device
        layers = ctx.layers(config.layers)
        timings = {"load_model": ctx.load_seconds}
        t0 = time.perf_counter()
        state, skipped = _scan(config, images, ctx, layers, ranks, progress, on_skip)
        merged = gather_state(state, ranks)
        every_skipped = sorted({s for part in gather_objects(skipped, ranks) for s in part})
        timings["scan"] = time.perf_counter() - t0
    paths = [str(p) for p in images.paths]
    if not ranks.main:
        # Rank 0 alone reports the skipped files and the exit code: torchrun stops every other worker as soon as one
        # exits non-zero, which would kill rank 0 while it writes the outputs.
        return MineReport(timings=timings)
    result = merged.result(paths, classes=images.classes if config.per_class else None, labels=images.labels,
                           skipped=[(paths[i], message) for i, message in every_skipped])
    folder = _write(config, result, ctx, layers, images, ranks, timings)
    failures = [Failure(path, message, 2) for path, message in result.skipped]
    return MineReport(written=[folder], failures=failures, result=result, timings=timings)


def _scan(config: MineConfig, images: ImageList, ctx: RunContext, layers: list[str], ranks: Ranks,
          progress: Callable[[int, int], None] | None, on_skip: Callable[[str, str], None] | None
          ) -> tuple[ScanState, list[tuple[int, str]]]:
    """This rank's pass over its shard, from the checkpoint on when resuming; checkpoints every N images."""
    n_classes = len(images.classes) if config.per_class and images.classes else 0
    state = ScanState(layers, config.top_k, n_classes=n_classes, device=ctx.device)
    indices, owned = shard(len(images.paths), ranks)
    path = checkpoint_path(Path(config.out) / MINE_DIR, ranks)
    identity = _identity(images, ctx, layers, config, ranks) if config.checkpoint_every or config.resume else {}
    start, before = 0, []
    if config.resume and path.is_file():
        ckpt = load_checkpoint(path, identity)
        state.load_state_dict(ckpt.state)
        start, before = ckpt.positions, ckpt.skipped
        log.info("resuming %s after %d of %d images", path, start, len(indices))
        for i, message in before:  # named again, so that every run names every file it skips
            if on_skip is not None:
                on_skip(str(images.paths[i]), message)
    elif config.resume:
        log.warning("vizkit: no checkpoint at %s; scanning from the start", path)
    loader = image_loader(ImageDataset(images, ctx.loaded.preprocessing), batch_size=config.batch_size,
                          workers=config.workers, device=ctx.device, indices=indices[start:])
    saved, reported = start, 0

    def on_batch(done: int, skipped: list[tuple[int, str]]) -> None:
        nonlocal saved, reported
        for i, message in skipped[reported:]:
            if on_skip is not None:
                on_skip(str(images.paths[i]), message)
        reported = len(skipped)
        if progress is not None:
            progress(start + done, len(indices))
        if config.checkpoint_every and start + done - saved >= config.checkpoint_every:
            save_checkpoint(path, Checkpoint(identity, start + done, before + skipped, state.state_dict()))
            saved = start + done

    run = scan_batches(ctx.model, loader, state, owned=owned, on_batch=on_batch)
    skipped = before + run.skipped
    if config.checkpoint_every:  # the finished state: --resume then goes straight to the projections
        save_checkpoint(path, Checkpoint(identity, start + run.positions, skipped, state.state_dict()))
    return state, skipped


def _settings(config: MineConfig, ctx: RunContext, layers: list[str], images: ImageList, ranks: Ranks,
              result: MineResult) -> dict:
    return {"data": str(config.data), "layers": layers, "top_k": config.top_k, "per_class": config.per_class,
            "units": config.units, "project": config.project, "batch_size": config.batch_size,
            "workers": config.workers, "limit": config.limit, "device": str(ctx.device),
            "ranks": ranks.world, "checkpoint_every": config.checkpoint_every, "resume": config.resume,
            "images_listed": len(images.paths), "images_scanned": result.images_scanned,
            "dataset_fingerprint": images.fingerprint(),
            "dead_units": {name: int(np.sum(layer.dead)) for name, layer in result.layers.items()}}


def mine_notes(result: MineResult, projected: bool) -> list[str]:
    """What page 1 must say about this scan: activations too small for trained weights, a scan-only run."""
    top = [layer.values[np.isfinite(layer.values)] for layer in result.layers.values()]
    return tiny_activation_notes(top) + ([] if projected else [NO_PROJECT_NOTE])


def _project(config: MineConfig, result: MineResult, ctx: RunContext, layers: list[str],
             images: ImageList) -> list[UnitTopProjections]:
    """Pass 2: re-read each selected unit's top-K images and project them (batched, cone-cropped)."""
    rfs = ctx.receptive_fields()
    dataset = ImageDataset(images, ctx.loaded.preprocessing)
    projections: list[UnitTopProjections] = []
    for layer in layers:
        channels = select_units(result, layer, config.units)
        log.info("projecting %d units of %s", len(channels), layer)
        rf = rfs.get(layer)
        projections += project_units(ctx.model, result, dataset, layer, channels, prep=ctx.loaded.preprocessing,
                                     receptive_field=rf if isinstance(rf, ReceptiveField) else None,
                                     batch_size=min(config.batch_size, 16), device=ctx.device)
    return projections


def _write(config: MineConfig, result: MineResult, ctx: RunContext, layers: list[str], images: ImageList,
           ranks: Ranks, timings: dict[str, float]) -> Path:
    """Pass 2 (unless ``--no-project``), then ``mine.npz``, ``mine.pdf``, ``html/`` and the manifest through the
    one writer, atomically under ``OUT/mine`` (the checkpoints there stay)."""
    from vizkit.render.writer import write_outputs

    projections: list[UnitTopProjections] = []
    if config.project:
        t0 = time.perf_counter()
        projections = _project(config, result, ctx, layers, images)
        timings["project"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    output = MineOutput(result, projections, mine_notes(result, config.project))
    info = ctx.info(None, _settings(config, ctx, layers, images, ranks, result))
    folder = write_outputs(output, info, config.out, timings=dict(timings))
    timings["render"] = time.perf_counter() - t0
    return folder


__all__ = ["MINE_DIR", "MineConfig", "MineReport", "mine_notes", "run_mine"]
