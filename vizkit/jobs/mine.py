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
from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob, resolve_device
from vizkit.jobs.distributed import Ranks, gather_objects, gather_state, process_group, shard
from vizkit.jobs.mine_checkpoint import Checkpoint, checkpoint_path, load_checkpoint, model_digest, save_checkpoint
from vizkit.load import LoadedModel
from vizkit.load.dataset import ImageDataset, ImageList, image_loader, list_images
from vizkit.project.deconv import analyse_receptive_fields
from vizkit.project.mine_projection import UnitTopProjections, project_units, select_units
from vizkit.project.scan import ScanState, scan_batches
from vizkit.project.topk import MineResult
from vizkit.render.info import ReportInfo
from vizkit.render.mine_outputs import write_mine_outputs

log = logging.getLogger("vizkit")

MINE_DIR = "mine"


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


def _identity(images: ImageList, loaded: LoadedModel, layers: list[str], config: MineConfig,
              ranks: Ranks) -> dict[str, str]:
    """What a checkpoint must match to be resumed (names are the words of the refusal message)."""
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
    started = time.perf_counter()
    images = list_images(config.data, config.limit)
    if config.per_class and not images.classes:
        raise UserInputError(f"--per-class needs class subfolders in {config.data} (DATA/<class>/<image>)")
    with process_group(resolve_device(config.device)) as (ranks, device):
        loaded = replace(config, device=str(device)).load()
        prep = loaded.preprocessing
        layers = list(dict.fromkeys(config.layers)) if config.layers else default_layers(
            loaded.model, (1, prep.channels, prep.crop, prep.crop))
        resolve_layers(loaded.model, layers)
        timings = {"load_model": time.perf_counter() - started}
        t0 = time.perf_counter()
        state, skipped = _scan(config, images, loaded, layers, ranks, progress, on_skip)
        merged = gather_state(state, ranks)
        every_skipped = sorted({s for part in gather_objects(skipped, ranks) for s in part})
        timings["scan"] = time.perf_counter() - t0
    paths = [str(p) for p in images.paths]
    if not ranks.main:
        return MineReport(failures=[Failure(paths[i], message, 2) for i, message in every_skipped], timings=timings)
    result = merged.result(paths, classes=images.classes if config.per_class else None, labels=images.labels,
                           skipped=[(paths[i], message) for i, message in every_skipped])
    folder = _write(config, result, loaded, layers, images, ranks, timings)
    failures = [Failure(path, message, 2) for path, message in result.skipped]
    return MineReport(written=[folder], failures=failures, result=result, timings=timings)


def _scan(config: MineConfig, images: ImageList, loaded: LoadedModel, layers: list[str], ranks: Ranks,
          progress: Callable[[int, int], None] | None, on_skip: Callable[[str, str], None] | None
          ) -> tuple[ScanState, list[tuple[int, str]]]:
    """This rank's pass over its shard, from the checkpoint on when resuming; checkpoints every N images."""
    device = next(loaded.model.parameters()).device
    n_classes = len(images.classes) if config.per_class and images.classes else 0
    state = ScanState(layers, config.top_k, n_classes=n_classes, device=device)
    indices, owned = shard(len(images.paths), ranks)
    path = checkpoint_path(Path(config.out) / MINE_DIR, ranks)
    identity = _identity(images, loaded, layers, config, ranks) if config.checkpoint_every or config.resume else {}
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
    loader = image_loader(ImageDataset(images, loaded.preprocessing), batch_size=config.batch_size,
                          workers=config.workers, device=device, indices=indices[start:])
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

    run = scan_batches(loaded.model, loader, state, owned=owned, on_batch=on_batch)
    skipped = before + run.skipped
    if config.checkpoint_every:  # the finished state: --resume then goes straight to the projections
        save_checkpoint(path, Checkpoint(identity, start + run.positions, skipped, state.state_dict()))
    return state, skipped


def _info(config: MineConfig, loaded: LoadedModel, layers: list[str], images: ImageList, ranks: Ranks,
          result: MineResult) -> ReportInfo:
    settings = {"data": str(config.data), "layers": layers, "top_k": config.top_k, "per_class": config.per_class,
                "units": config.units, "project": config.project, "batch_size": config.batch_size,
                "workers": config.workers, "limit": config.limit, "device": str(next(loaded.model.parameters()).device),
                "ranks": ranks.world, "checkpoint_every": config.checkpoint_every, "resume": config.resume,
                "images_listed": len(images.paths), "images_scanned": result.images_scanned,
                "dataset_fingerprint": images.fingerprint(),
                "dead_units": {name: int(np.sum(layer.dead)) for name, layer in result.layers.items()}}
    return ReportInfo(str(config.data), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                      loaded.preprocessing.to_dict(), settings, config.command)


def _write(config: MineConfig, result: MineResult, loaded: LoadedModel, layers: list[str], images: ImageList,
           ranks: Ranks, timings: dict[str, float]) -> Path:
    """Pass 2 (unless ``--no-project``): re-read each selected unit's top-K images and project them; then
    ``mine.npz``, ``mine.pdf``, ``html/`` and the manifest, written atomically under ``OUT/mine``."""
    projections: list[UnitTopProjections] = []
    if config.project:
        t0 = time.perf_counter()
        prep = loaded.preprocessing
        rfs = analyse_receptive_fields(loaded.model, (1, prep.channels, prep.crop, prep.crop))
        dataset = ImageDataset(images, prep)
        for layer in layers:
            channels = select_units(result, layer, config.units)
            log.info("projecting %d units of %s", len(channels), layer)
            field = rfs.get(layer)
            projections += project_units(loaded.model, result, dataset, layer, channels, prep=prep,
                                         receptive_field=field if isinstance(field, ReceptiveField) else None,
                                         batch_size=min(config.batch_size, 16))
        timings["project"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    info = _info(config, loaded, layers, images, ranks, result)
    folder = write_mine_outputs(result, projections, info, Path(config.out), timings)
    timings["render"] = time.perf_counter() - t0
    return folder


__all__ = ["MineConfig", "MineReport", "run_mine"]
