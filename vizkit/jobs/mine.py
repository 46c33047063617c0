"""``vizkit mine`` as a function: ``run_mine(MineConfig(data=...))`` scans a dataset (pass 1, exact top-K per
channel), projects the selected units' top images (pass 2) and writes ``OUT/mine/``; ``mine_dataset(model, data,
layers, k=...)`` is the scan alone from Python, for your own model and data.

Before the scan one probe forward settles what each layer ranks (``vizkit.scan.saturation``: the value before a
saturating activation) and drops default layers that duplicate another's top-K images; K is capped at the number
of images listed. Layers without a spatial map are refused as ``vizkit deconv`` refuses them, unless
``--no-project``.

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

from vizkit.capture.probe import model_device, probe_input
from vizkit.capture.receptive_field import ReceptiveField
from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob, resolve_device
from vizkit.jobs.context import RunContext, input_shape
from vizkit.jobs.mine_dream import check_dream, mine_dream_settings, mine_dreams
from vizkit.jobs.mine_notes import (
    NO_PROJECT_NOTE,
    image_independent_layers,
    independence_note,
    mine_notes,
    plan_notes,
    top_k_note,
)
from vizkit.jobs.mine_relevance import check_rank, heatmap_units, ranking_label, ranking_notes, resolve_ranking
from vizkit.load.dataset import ImageDataset, ImageList, list_images
from vizkit.load.models import LoadedModel
from vizkit.load.preprocessing import Preprocessing
from vizkit.outputs.progress import task as progress_task
from vizkit.project.mine_projection import UnitTopProjections, project_units, select_units
from vizkit.project.results import MineOutput
from vizkit.scan.checkpoint import CheckpointSaver, checkpoint_path, resume, scan_identity
from vizkit.scan.distributed import Ranks, gather_objects, gather_state, process_group, shard
from vizkit.scan.saturation import RankPlan, plan_ranking, probe_batch
from vizkit.scan.state import ScanState, ScorerFactory, scan_batches
from vizkit.scan.stream import DatasetStream, StreamCounter, as_batches, as_image_batch, nothing_read
from vizkit.scan.topk import MineResult, Ranking

if TYPE_CHECKING:
    from vizkit.project.mine_heatmaps import UnitHeatmaps

log = logging.getLogger("vizkit")

MINE_DIR = "mine"  # OUT/mine/: the checkpoints here, the outputs from the writer (mine_document's folder)


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
    units: str | None = None          # --units: all | top:N | channels 5 or 3,7,12 (default: top:16)
    project: bool = True              # False: stop after the scan (--no-project)
    checkpoint_every: int | None = None
    resume: bool = False
    rank: str = "activation"          # --rank: activation | relevance (vizkit.jobs.mine_relevance)
    target: str | int | None = None   # --class C with --rank relevance: an index or a class name
    dream: bool | None = None         # --dream/--no-dream; None: on where projections ignore the image (mine_dream)
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
        count = spec[4:].strip() if spec.startswith("top:") else None
        listed = re.fullmatch(r"\d+(\s*,\s*\d+)*\s*,?", spec)
        if self.project and spec != "all" and not listed and (count is None or not count.isdigit() or int(count) < 1):
            # checked before the scan: select_units would only refuse it after hours of scanning
            raise UserInputError(f"--units {spec!r}: use all, top:N or channels like 5 or 3,7,12")
        if self.dream is not False:  # its settings are checked before the scan too
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
        check_dream(config.dream, ctx.input_shape[1])
        ranking, scorer = resolve_ranking(config.rank, config.target, ctx.model, ctx.loaded.class_names,
                                          ctx.input_shape, config.batch_size)
        timings = {"load_model": ctx.load_seconds}
        plan = _plan(ctx, config.layers, config.project)
        if scorer is not None:  # relevance is ranked as computed: no pre-cap sources
            plan = RankPlan(plan.layers, duplicates=plan.duplicates)
        layers = plan.layers
        k = min(config.top_k, max(len(images.paths), 1))
        t0 = time.perf_counter()
        state, skipped = _scan(replace(config, top_k=k), images, ctx, plan, ranks, progress, on_skip, ranking,
                               scorer)
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
    notes = top_k_note(config.top_k, k, len(images.paths)) + plan_notes(plan.duplicates)
    folder = _write(replace(config, top_k=k), result, ctx, layers, images, ranks, timings, notes)
    failures = [Failure(path, message, 2) for path, message in result.skipped]
    return MineReport(written=[folder], failures=failures, result=result, timings=timings)


def _plan(ctx: RunContext, requested: Sequence[str] | None, project: bool) -> RankPlan:
    """The layers (refused as ``deconv`` refuses them when they will be projected) and what each ranks; default
    layers that duplicate another's top-K images are dropped. One probe forward, the same on every rank."""
    layers = ctx.spatial_layers(requested) if project else ctx.layers(requested)
    return plan_ranking(ctx.model, layers, probe_batch(ctx.model, ctx.input_shape), dedupe=not requested)


def _scan(config: MineConfig, images: ImageList, ctx: RunContext, plan: RankPlan, ranks: Ranks,
          progress: Callable[[int, int], None] | None, on_skip: Callable[[str, str], None] | None,
          ranking: Ranking | None = None, scorer: ScorerFactory | None = None
          ) -> tuple[ScanState, list[tuple[int, str]]]:
    """This rank's pass over its shard, from the checkpoint on when resuming; checkpoints every N images."""
    n_classes = len(images.classes) if config.per_class and images.classes else 0
    layers = plan.layers
    state = ScanState(layers, config.top_k, n_classes=n_classes, device=ctx.device, sources=plan.sources)
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
           ranks: Ranks, timings: dict[str, float], notes: list[str]) -> Path:
    """Pass 2 (unless ``--no-project``), then ``mine.npz``, ``mine.pdf``, ``html/`` and the manifest through the
    one writer, atomically under ``OUT/mine`` (the checkpoints there stay)."""
    from vizkit.render.writer import write_outputs

    projections: list[UnitTopProjections] = []
    independent: list[str] = []  # rendered layers whose projections do not depend on the image
    relevance = config.rank != "activation"  # pass 2 draws conditional heatmaps instead (vizkit.jobs.mine_relevance)
    if config.project and not relevance:
        t0 = time.perf_counter()
        projections = _project(config, result, ctx, layers, images)
        timings["project"] = time.perf_counter() - t0
        blank = probe_input(ctx.model, ctx.input_shape)
        independent = image_independent_layers(ctx.model, layers, blank)
        notes = notes + independence_note(independent)
    heatmaps: list[UnitHeatmaps] = []
    if config.project and relevance:
        t0 = time.perf_counter()
        heatmaps = heatmap_units(ctx.model, result, ImageDataset(images, ctx.loaded.preprocessing), layers,
                                 config.units, ctx.loaded.preprocessing, ctx.device)
        timings["heatmaps"] = time.perf_counter() - t0
    # relevance shares are not activations: the activation notes (caps, ties, tiny values) do not apply to them
    notes = (ranking_notes(result.ranking) + notes + ([] if config.project else [NO_PROJECT_NOTE]) if relevance
             else mine_notes(result, config.project, notes))
    dreams, dream_settings = mine_dreams(config, ctx, projections, timings, independent)  # ({}, {}): no dream
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
                 rank: str = "activation", target: str | int | None = None, uncap: bool = True) -> MineResult:
    """Scan ``data`` once and return every channel's exact top-``k`` images per layer (see ``vizkit.scan.state``).

    ``layers``: names from ``model.named_modules()``; default one per resolution stage. ``prep``: how files are
    preprocessed (taken from a ``LoadedModel``). ``classes``: class names for ``per_class`` when ``data`` does not
    name them (an ``ImageList`` from a folder with subfolders, or a dataset with a ``classes`` attribute, does).
    ``device``: where the state lives and the batches go; default the model's device. The model is left as it was.
    ``rank="relevance"``, ``target=C`` (index or class name): rank by each unit's relevance for class C
    (``vizkit.scan.relevance``: zennit-crp's RelMax) instead of its spatial maximum.
    ``uncap``: rank a layer that ends in a saturating activation by the value before it (``LayerTopK.ranked`` says
    so) and drop default layers that duplicate another's top-K images, as ``vizkit mine`` does; False: rank every
    layer's output as asked. ``k`` is capped at the number of images when the data has a length.
    """
    ctx = None
    if isinstance(model, LoadedModel):  # its context: the input shape and default layers from one probe
        ctx = RunContext.from_loaded(model if prep is None else replace(model, preprocessing=prep))
        model, prep = ctx.model, ctx.loaded.preprocessing
    device = torch.device(device) if device is not None else model_device(model)
    batches, paths, labels, names = as_batches(data, prep, batch_size, workers, limit, device)
    first, batches = _peek(batches)
    shape = ctx.input_shape if ctx is not None else input_shape(prep) if prep is not None else _input_shape(first)
    if ctx is not None:
        chosen = ctx.layers(layers)  # the run's probe: one forward for the default layers
    else:  # a bare module: the input shape comes from prep, else from the first batch
        if layers:
            chosen = list(dict.fromkeys(layers))
        elif shape is None:
            raise UserInputError("mine: give layers=[...] or prep= (no image batch to pick default layers from)")
        else:
            chosen = default_layers(model, shape)
        resolve_layers(model, chosen)
    plan = (plan_ranking(model, chosen, probe_batch(model, shape), dedupe=not layers) if uncap and shape
            else RankPlan(chosen))
    names = list(classes) if classes is not None else names
    if per_class and not names:
        raise UserInputError("per_class needs class names: a folder with class subfolders, a dataset with a "
                             "'classes' attribute, or classes=[...]")
    ranking, scorer = Ranking(), None
    if rank != "activation" or target is not None:  # relevance: the class is checked against the model's outputs
        if shape is None:
            raise UserInputError("mine: rank='relevance' needs image batches or prep= (for the input shape)")
        ranking, scorer = resolve_ranking(rank, target, model, ctx.loaded.class_names if ctx else None, shape,
                                          batch_size)
        plan = RankPlan(plan.layers)  # relevance is ranked as computed: no pre-cap sources
    if paths is not None:
        k = min(k, max(len(paths), 1))
    state = ScanState(plan.layers, k, n_classes=len(names) if per_class and names else 0, device=device,
                      sources=plan.sources)
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


def _input_shape(batch: Any) -> tuple[int, ...] | None:
    """(1, C, H, W) of the first batch's images; None when the batch is not images."""
    x = as_image_batch(batch, StreamCounter()).x
    return (1, *x.shape[1:]) if x.dim() == 4 and x.is_floating_point() else None


__all__ = ["MINE_DIR", "NO_PROJECT_NOTE", "MineConfig", "MineReport", "mine_dataset", "mine_notes", "run_mine"]
