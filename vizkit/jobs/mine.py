"""``vizkit mine`` as a function: ``run_mine(MineConfig(data=...))`` scans a dataset (pass 1, exact top-K per
channel), projects the selected units' top images (pass 2) and writes ``OUT/mine/``; ``mine_dataset(model, data,
layers, k=...)`` is the scan alone from Python, for your own model and data.

One process, or one per device under ``torchrun`` (``vizkit.scan.distributed``): each rank scans its
``DistributedSampler`` shard, the states are merged exactly, rank 0 projects and writes. Every
``checkpoint_every`` images the state is saved atomically; ``resume`` continues from it.

``mine_dataset``'s ``data`` may be a folder or image-list file (with ``prep``), an ``ImageList`` or
``ImageDataset``, a DataLoader of ``ImageBatch`` (``vizkit.scan.stream.image_loader``), or any DataLoader/iterable
yielding image tensors ``(B, C, H, W)`` or ``(images, labels)`` pairs -- a torchvision ``ImageFolder`` loader, for
example. For the last kind the global image index is the position in the stream (paths are taken from
``dataset.samples`` when the loader reads its dataset in order).
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vizkit.capture.probe import model_device
from vizkit.capture.receptive_field import ReceptiveField
from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob, resolve_device
from vizkit.jobs.context import RunContext, input_shape, tiny_activation_notes
from vizkit.jobs.mine_dream import mine_dream_settings, mine_dreams
from vizkit.jobs.mine_relevance import check_rank, heatmap_units, ranking_label, ranking_notes, resolve_ranking
from vizkit.load.dataset import ImageDataset, ImageList, list_images
from vizkit.load.models import LoadedModel
from vizkit.load.preprocessing import Preprocessing
from vizkit.outputs.progress import task as progress_task
from vizkit.project.mine_projection import UnitTopProjections, project_units, select_units
from vizkit.project.results import MineOutput
from vizkit.scan.checkpoint import CheckpointSaver, checkpoint_path, resume, scan_identity
from vizkit.scan.distributed import Ranks, gather_objects, gather_state, process_group, shard
from vizkit.scan.state import ScanState, ScorerFactory, scan_batches
from vizkit.scan.stream import DatasetStream, StreamCounter, as_batches, as_image_batch, nothing_read
from vizkit.scan.topk import MineResult, Ranking

if TYPE_CHECKING:
    from vizkit.project.mine_heatmaps import UnitHeatmaps

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
    rank: str = "activation"          # --rank: activation | relevance (vizkit.jobs.mine_relevance)
    target: str | int | None = None   # --class C with --rank relevance: an index or a class name
    dream: bool = False               # --dream: what each rendered unit wants (vizkit.jobs.mine_dream)
    dream_steps: int | None = None
    dream_size: int | None = None

    def check(self) -> None:
        check_rank(self.rank, self.target)
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
        if self.dream:  # its settings are checked before the scan too
            mine_dream_settings(self.dream_steps, self.dream_size, self.seed)


@dataclass
class MineReport(JobReport):
    """What ``run_mine`` did; ``failures`` lists the skipped (unreadable) files. ``result`` is None on ranks > 0."""

    result: MineResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


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
        ranking, scorer = resolve_ranking(config.rank, config.target, ctx.model, ctx.loaded.class_names,
                                          ctx.input_shape, config.batch_size)
        timings = {"load_model": ctx.load_seconds}
        t0 = time.perf_counter()
        state, skipped = _scan(config, images, ctx, layers, ranks, progress, on_skip, ranking, scorer)
        merged = gather_state(state, ranks)
        every_skipped = sorted({s for part in gather_objects(skipped, ranks) for s in part})
        timings["scan"] = time.perf_counter() - t0
    paths = [str(p) for p in images.paths]
    if merged.count == 0:  # every rank: nothing to rank or write
        raise nothing_read(config.data, len(paths), [(paths[i], message) for i, message in every_skipped])
    if not ranks.main:
        # Rank 0 alone reports the skipped files and the exit code: torchrun stops every other worker as soon as one
        # exits non-zero, which would kill rank 0 while it writes the outputs.
        return MineReport(timings=timings)
    result = merged.result(paths, classes=images.classes if config.per_class else None, labels=images.labels,
                           skipped=[(paths[i], message) for i, message in every_skipped])
    result.ranking = ranking
    folder = _write(config, result, ctx, layers, images, ranks, timings)
    failures = [Failure(path, message, 2) for path, message in result.skipped]
    return MineReport(written=[folder], failures=failures, result=result, timings=timings)


def _scan(config: MineConfig, images: ImageList, ctx: RunContext, layers: list[str], ranks: Ranks,
          progress: Callable[[int, int], None] | None, on_skip: Callable[[str, str], None] | None,
          ranking: Ranking | None = None, scorer: ScorerFactory | None = None
          ) -> tuple[ScanState, list[tuple[int, str]]]:
    """This rank's pass over its shard, from the checkpoint on when resuming; checkpoints every N images."""
    n_classes = len(images.classes) if config.per_class and images.classes else 0
    state = ScanState(layers, config.top_k, n_classes=n_classes, device=ctx.device)
    indices, owned = shard(len(images.paths), ranks)
    path = checkpoint_path(Path(config.out) / MINE_DIR, ranks)
    identity = (scan_identity(images, ctx.loaded, layers, config.top_k, config.per_class, ranks,
                              ranking_label(ranking or Ranking()))
                if config.checkpoint_every or config.resume else {})
    start, before = resume(path, identity, state, len(indices)) if config.resume else (0, [])
    stream = DatasetStream(ImageDataset(images, ctx.loaded.preprocessing), batch_size=config.batch_size,
                           workers=config.workers, device=ctx.device, indices=indices, start=start, skipped=before,
                           progress=progress, on_skip=on_skip)
    saver = CheckpointSaver(path, identity, config.checkpoint_every or 0, state, stream)
    if config.checkpoint_every:
        stream.hooks.append(saver)
    scan_batches(ctx.model, stream, state, owned=owned, scorer=scorer)
    if config.checkpoint_every:  # the finished state: --resume then goes straight to the projections
        saver.save()
    return state, stream.skipped


def _settings(config: MineConfig, ctx: RunContext, layers: list[str], images: ImageList, ranks: Ranks,
              result: MineResult) -> dict:
    return {"data": str(config.data), "layers": layers, "top_k": config.top_k, "per_class": config.per_class,
            "units": config.units, "project": config.project, "batch_size": config.batch_size,
            "workers": config.workers, "limit": config.limit, "device": str(ctx.device),
            "ranks": ranks.world, "checkpoint_every": config.checkpoint_every, "resume": config.resume,
            "images_listed": len(images.paths), "images_scanned": result.images_scanned,
            "dataset_fingerprint": images.fingerprint(),
            "dead_units": {name: int(np.sum(layer.dead)) for name, layer in result.layers.items()},
            "rank": result.ranking.mode, "class": result.ranking.target}


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
    selected = {layer: select_units(result, layer, config.units) for layer in layers}
    shown = progress_task("project", sum(len(c) for c in selected.values()), "units")  # stderr, under the CLI
    for layer in layers:
        channels = selected[layer]
        log.info("projecting %d units of %s", len(channels), layer)
        rf = rfs.get(layer)
        projections += project_units(ctx.model, result, dataset, layer, channels, prep=ctx.loaded.preprocessing,
                                     receptive_field=rf if isinstance(rf, ReceptiveField) else None,
                                     batch_size=min(config.batch_size, 16), device=ctx.device,
                                     progress=shown.counter(detail=layer))
    shown.close()
    return projections


def _write(config: MineConfig, result: MineResult, ctx: RunContext, layers: list[str], images: ImageList,
           ranks: Ranks, timings: dict[str, float]) -> Path:
    """Pass 2 (unless ``--no-project``), then ``mine.npz``, ``mine.pdf``, ``html/`` and the manifest through the
    one writer, atomically under ``OUT/mine`` (the checkpoints there stay)."""
    from vizkit.render.writer import write_outputs

    projections: list[UnitTopProjections] = []
    relevance = config.rank != "activation"  # pass 2 draws conditional heatmaps instead (vizkit.jobs.mine_relevance)
    if config.project and not relevance:
        t0 = time.perf_counter()
        projections = _project(config, result, ctx, layers, images)
        timings["project"] = time.perf_counter() - t0
    heatmaps: list[UnitHeatmaps] = []
    if config.project and relevance:
        t0 = time.perf_counter()
        heatmaps = heatmap_units(ctx.model, result, ImageDataset(images, ctx.loaded.preprocessing), layers,
                                 config.units, ctx.loaded.preprocessing, ctx.device)
        timings["heatmaps"] = time.perf_counter() - t0
    # relevance shares are not activations: the tiny-activation note does not apply to them
    notes = ranking_notes(result.ranking) + (mine_notes(result, config.project) if not relevance else
                                             [] if config.project else [NO_PROJECT_NOTE])
    dreams, dream_settings = mine_dreams(config, ctx, projections, timings)  # --dream; ({}, {}) without
    t0 = time.perf_counter()
    output = MineOutput(result, projections, notes, heatmaps, dreams, dream_settings)
    info = ctx.info(None, _settings(config, ctx, layers, images, ranks, result))
    folder = write_outputs(output, info, config.out, timings=dict(timings))
    timings["render"] = time.perf_counter() - t0
    return folder


def mine_dataset(model: nn.Module | LoadedModel, data: str | os.PathLike | ImageList | Dataset | Iterable[Any],
                 layers: Sequence[str] | None = None, k: int = 9, *, per_class: bool = False,
                 prep: Preprocessing | None = None, batch_size: int = 32, workers: int = 0, limit: int | None = None,
                 classes: Sequence[str] | None = None, device: torch.device | str | None = None,
                 rank: str = "activation", target: str | int | None = None) -> MineResult:
    """Scan ``data`` once and return every channel's exact top-``k`` images per layer (see ``vizkit.scan.state``).

    ``layers``: names from ``model.named_modules()``; default one per resolution stage. ``prep``: how files are
    preprocessed (taken from a ``LoadedModel``). ``classes``: class names for ``per_class`` when ``data`` does not
    name them (an ``ImageList`` from a folder with subfolders, or a dataset with a ``classes`` attribute, does).
    ``device``: where the state lives and the batches go; default the model's device. The model is left as it was.
    ``rank="relevance"``, ``target=C`` (index or class name): rank by each unit's relevance for class C
    (``vizkit.scan.relevance``: zennit-crp's RelMax) instead of its spatial maximum.
    """
    ctx = None
    if isinstance(model, LoadedModel):  # its context: the input shape and default layers from one probe
        ctx = RunContext.from_loaded(model if prep is None else replace(model, preprocessing=prep))
        model, prep = ctx.model, ctx.loaded.preprocessing
    device = torch.device(device) if device is not None else model_device(model)
    batches, paths, labels, names = as_batches(data, prep, batch_size, workers, limit, device)
    first, batches = _peek(batches)
    if ctx is not None:
        layers = ctx.layers(layers)  # the run's probe: one forward for the default layers
    else:  # a bare module: the input shape comes from prep, else from the first batch
        shape = input_shape(prep) if prep is not None else _input_shape(first)
        layers = list(dict.fromkeys(layers)) if layers else default_layers(model, shape)
        resolve_layers(model, layers)
    names = list(classes) if classes is not None else names
    if per_class and not names:
        raise UserInputError("per_class needs class names: a folder with class subfolders, a dataset with a "
                             "'classes' attribute, or classes=[...]")
    ranking, scorer = Ranking(), None
    if rank != "activation" or target is not None:  # relevance: the class is checked against the model's outputs
        ranking, scorer = resolve_ranking(rank, target, model, ctx.loaded.class_names if ctx else None,
                                          ctx.input_shape if ctx else _input_shape(first), batch_size)
    state = ScanState(layers, k, n_classes=len(names) if per_class and names else 0, device=device)
    run = scan_batches(model, batches, state, scorer=scorer)
    if paths is None:
        paths = [f"#{i}" for i in range(run.seen)]
    skipped = [(str(paths[i]), message) for i, message in run.skipped]
    result = state.result([str(p) for p in paths], classes=names or None, labels=labels, skipped=skipped)
    result.ranking = ranking
    return result


def _peek(batches: Iterable[Any]) -> tuple[Any, Iterable[Any]]:
    """The first batch and an iterable that still yields it (a DataLoader is only iterated once)."""
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise UserInputError("mine: the data yielded no batches")
    return first, itertools.chain([first], iterator)


def _input_shape(batch: Any) -> tuple[int, ...]:
    x = as_image_batch(batch, StreamCounter()).x
    if x.dim() != 4:
        raise UserInputError("mine: give layers=[...] or prep= (no image batch to pick default layers from)")
    return (1, *x.shape[1:])


__all__ = ["MINE_DIR", "MineConfig", "MineReport", "mine_dataset", "mine_notes", "run_mine"]
