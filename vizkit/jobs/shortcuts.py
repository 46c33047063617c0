"""``vizkit shortcuts`` as a function: ``run_shortcuts(ShortcutsConfig(...))`` -> ``ShortcutsReport``;
``shortcuts_result(ctx, images, config)`` is the same analysis for a ``RunContext`` already built (no files written).
Files go through the one writer (``vizkit.render.writer.write_outputs``, ``ShortcutsResult``).

DATA is listed with ``vizkit.load.dataset`` (folders by class, or a list file) and read through one
``vizkit.scan.stream.DatasetStream``; unreadable files are skipped with one line each and the exit code is 2 at the
end. A first-level folder name must be a class name of the model or a
class index; without folders each image is explained for its predicted class. Maps are computed a batch at a time
on the device; only their pooled grid (for SpRAy) and a display copy (at most ``DISPLAY`` pixels a side) are kept.

Then each class is judged (``vizkit.project.shortcuts.judge.judge_class``): its images are read again and held in
memory (N x C x H x W floats: 1,300 images at 224 px take 0.8 GB), with up to ``evidence.MAX_RECIPIENTS`` images
of the other classes, evenly spread over DATA, as the transplant's recipients. ``tcav_runs`` > 0: the top cluster
of every class the PDF details gets Captum's TCAV at ``layer`` (default the deepest spatial layer).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vizkit.capture.probe import num_classes
from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob
from vizkit.jobs.context import RunContext
from vizkit.load import deprocess
from vizkit.load.dataset import ImageDataset, ImageList, list_images
from vizkit.project.attribute.lrp import COMPOSITES
from vizkit.project.shortcuts.evidence import MAX_RECIPIENTS, pixel_mask
from vizkit.project.shortcuts.judge import ClassVerdict, judge_class
from vizkit.project.shortcuts.maps import NEEDS_LAYER, attribution_maps, check_method, method_name
from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.project.shortcuts.spray import DEFAULT_SIDE, pool_maps
from vizkit.project.shortcuts.verdict import Thresholds, load_thresholds
from vizkit.project.targets import class_list, parse_targets
from vizkit.scan.stream import DatasetStream, nothing_read

DISPLAY = 112


@dataclass(kw_only=True)
class ShortcutsConfig(ModelJob):
    """Options of ``vizkit shortcuts``. ``only_classes``: names or indices to analyse (empty: all; not
    ``classes``, which is ``ModelJob``'s class-names file of your own model); ``method``: the attribution method
    (None: the one the verdict was fitted with, ``thresholds.json``); ``composite``: LRP's zennit composite;
    ``clusters``: "auto" (eigengap) or a number (capped at a third of the class); ``side``: the SpRAy grid;
    ``limit``: only the first N images of DATA; ``tcav_runs``: random concepts of the TCAV test (0: no TCAV);
    ``thresholds``: a thresholds.json of your own (``vizkit.lab.fit``)."""

    data: str | Path
    only_classes: Sequence[str] = ()
    method: str | None = None
    composite: str = "epsilon-plus-flat"
    layer: str | None = None
    clusters: str | int = "auto"
    batch_size: int = 32
    side: int = DEFAULT_SIDE
    limit: int | None = None
    tcav_runs: int = 0
    thresholds: str | Path | None = None
    embed: bool = True

    def n_clusters(self) -> int | None:
        value = str(self.clusters).strip().lower()
        if value == "auto":
            return None
        if not value.isdigit() or int(value) < 1:
            raise UserInputError(f"--clusters must be 'auto' or a positive number, got {self.clusters!r}")
        return int(value)

    def resolved_method(self, th: Thresholds) -> str:
        return method_name(self.method or th.method, self.composite)

    def check(self) -> None:
        if self.composite not in COMPOSITES:
            raise UserInputError(f"unknown LRP composite '{self.composite}': use one of {', '.join(COMPOSITES)}")
        if self.method is not None:
            check_method(method_name(self.method, self.composite))
        self.n_clusters()
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.side < 2:
            raise UserInputError(f"the SpRAy grid side must be at least 2, got {self.side}")
        if self.tcav_runs < 0 or self.tcav_runs == 1:
            raise UserInputError(f"--tcav-runs must be 0 (no TCAV) or at least 2 for its t-test, got {self.tcav_runs}")


@dataclass
class ShortcutsReport(JobReport):
    result: ShortcutsResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def folder_classes(images: ImageList, class_names: Sequence[str] | None, n_classes: int) -> list[int] | None:
    """Model class index of every first-level folder (None without folders); a folder that names no class of the
    model is a user error."""
    if images.classes is None:
        return None
    mapped = []
    for name in images.classes:
        try:
            (index,) = parse_targets([name], class_names, n_classes)
        except UserInputError:
            index = None
        if index is None:
            known = class_list(class_names) if class_names else f"{n_classes} classes, no names"
            raise UserInputError(
                f"folder '{name}' of {images.source} is not a class of the model ({known}); name the class folders "
                f"after the model's classes or their indices, or put the images at the top level of "
                f"{images.source} (or list them in a text file) to explain each one for its predicted class")
        mapped.append(index)
    return mapped


def run_shortcuts(config: ShortcutsConfig, *, progress: Callable[[int, int], None] | None = None,
                  on_skip: Callable[[str, str], None] | None = None, write: bool = True) -> ShortcutsReport:
    """Run ``vizkit shortcuts``: maps for DATA, a verdict per class, then OUT/shortcuts/ (unless ``write`` is
    False). ``report.warnings``: classes too small for their clusters to mean anything."""
    config.check()
    ctx = RunContext.from_job(config)
    images = list_images(config.data, config.limit)
    timings = {"load_model": ctx.load_seconds}
    result = shortcuts_result(ctx, images, config, progress=progress, on_skip=on_skip, timings=timings)
    report = ShortcutsReport(failures=[Failure(p, m, 2) for p, m in result.skipped], result=result, timings=timings,
                             warnings=[v.warning for v in result.classes if v.warning])
    if write:
        from vizkit.render.writer import write_outputs

        report.written.append(write_outputs(result, ctx.info(config.data, run_settings(config, result)), config.out,
                                            timings=timings))
    return report


def run_settings(config: ShortcutsConfig, result: ShortcutsResult) -> dict:
    """The options page 1 and the manifest show (with the verdicts and the skipped files)."""
    return {"data": str(config.data), "method": result.method, "layer": result.layer,
            "clusters": str(config.clusters), "batch_size": config.batch_size, "side": result.pooled.shape[-1],
            "classes": list(config.only_classes), "tcav_runs": config.tcav_runs,
            "thresholds": str(config.thresholds) if config.thresholds else "shipped (fitted on the lab family)",
            "flag": result.thresholds.flag, "flagged": result.flagged,
            "suspicion": {str(v.class_index): round(v.suspicion, 6) for v in result.classes},
            "warnings": [v.warning for v in result.classes if v.warning],
            "skipped": [{"path": p, "reason": m} for p, m in result.skipped]}


def shortcuts_result(ctx: RunContext, images: ImageList, config: ShortcutsConfig, *,
                     progress: Callable[[int, int], None] | None = None,
                     on_skip: Callable[[str, str], None] | None = None,
                     timings: dict[str, float] | None = None) -> ShortcutsResult:
    """Maps, a verdict per class and the exemplar pictures for ``images`` (no files written)."""
    config.check()
    timings = {} if timings is None else timings
    asked = method_name(config.method, config.composite) if config.method else None
    th = load_thresholds(config.thresholds, asked)  # those fitted for the method asked, where the file has them
    method = config.resolved_method(th)
    loaded, crop = ctx.loaded, ctx.input_shape[-1]
    n_classes = num_classes(ctx.model, ctx.input_shape)
    layer = config.layer
    if method in NEEDS_LAYER or config.tcav_runs:
        layer = ctx.layers([layer])[0] if layer else ctx.deepest_layer()
    wanted = {int(c) for c in parse_targets(config.only_classes, loaded.class_names, n_classes) if c is not None} \
        if config.only_classes else None
    mapped = folder_classes(images, loaded.class_names, n_classes)
    indices = None
    if mapped is not None and wanted is not None and images.labels is not None:
        indices = [i for i, lab in enumerate(images.labels) if mapped[lab] in wanted]
    stream = DatasetStream(ImageDataset(images, loaded.preprocessing), batch_size=config.batch_size,
                           device=ctx.device, indices=indices, progress=progress, on_skip=on_skip)
    start = time.perf_counter()
    explained, pooled, display = _maps(ctx, stream, config.side, method, layer, mapped)
    skipped = [(stream.path(i), message) for i, message in stream.skipped]
    if stream.total and len(skipped) >= stream.total:
        raise nothing_read(images.source, stream.total, skipped)
    timings["maps"] = time.perf_counter() - start
    start = time.perf_counter()
    present = set(explained[explained >= 0].tolist())
    known = explained if mapped is None or images.labels is None else np.array([mapped[i] for i in images.labels])
    verdicts = [_judge(ctx, stream, explained, known, pooled, cls, th, config) for cls in
                sorted(present if wanted is None else present & wanted)]
    verdicts.sort(key=lambda v: (-v.suspicion, v.class_index))
    timings["verdict"] = time.perf_counter() - start
    result = ShortcutsResult([str(p) for p in images.paths], method, layer, (crop, crop), explained, pooled, display,
                             verdicts, th, skipped, loaded.class_names)
    if config.tcav_runs and layer is not None:
        start = time.perf_counter()
        for v in result.detailed():
            _tcav(ctx, stream, known, v, layer, config.tcav_runs)
        timings["tcav"] = time.perf_counter() - start
    result.pictures = exemplar_images(stream.dataset, result.exemplar_indices())
    return result


def _load(stream: DatasetStream, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """The images ``indices`` (all readable: skipped ones have no class) on the CPU, in that order."""
    parts = [batch.x.cpu() for batch in stream.over([int(i) for i in indices]) if batch.index.numel()]
    return torch.cat(parts) if parts else torch.zeros(0)


def recipient_indices(known: np.ndarray, cls: int, n: int = MAX_RECIPIENTS) -> np.ndarray:
    """Up to ``n`` images of the other classes (``known``: each image's folder class, or its explained class
    without folders; -1 unknown), evenly spread over DATA (deterministic). With folders they come from every class
    of DATA, also those ``--class`` left out."""
    others = np.flatnonzero((known >= 0) & (known != cls))
    if others.size <= n:
        return others
    return others[np.linspace(0, others.size - 1, n).round().astype(int)]


def _judge(ctx: RunContext, stream: DatasetStream, explained: np.ndarray, known: np.ndarray, pooled: np.ndarray,
           cls: int, th: Thresholds, config: ShortcutsConfig) -> ClassVerdict:
    idx = np.flatnonzero(explained == cls)
    x, recipients = _load(stream, idx), _load(stream, recipient_indices(known, cls))
    names = ctx.loaded.class_names
    verdict = judge_class(ctx.model, x, torch.from_numpy(pooled[idx]), recipients, cls, th, side=pooled.shape[-1],
                          n_clusters=config.n_clusters(), embed=config.embed)
    verdict.images = idx
    verdict.name = names[cls] if names and cls < len(names) else f"class {cls}"
    return verdict


def _tcav(ctx: RunContext, stream: DatasetStream, known: np.ndarray, v: ClassVerdict, layer: str,
          runs: int) -> None:
    """Captum's TCAV of the class's top cluster's region (``vizkit.project.shortcuts.tcav``)."""
    from vizkit.project.shortcuts.tcav import concept_test

    top = v.top
    if top is None:
        return
    x = _load(stream, v.images).to(ctx.device)
    pool = _load(stream, recipient_indices(known, v.class_index)).to(ctx.device)
    if len(pool) == 0:
        return
    mask = pixel_mask(top.group.region, (x.shape[-2], x.shape[-1])).to(ctx.device)
    top.tcav = concept_test(ctx.model, layer, x, x[torch.from_numpy(top.members).to(ctx.device)], pool, mask,
                            v.class_index, repeats=runs)


def _maps(ctx: RunContext, stream: DatasetStream, side: int, method: str, layer: str | None,
          mapped: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(explained class, pooled map, display map) per image of DATA; -1 and zeros where an image was not read."""
    n, crop = len(stream.dataset), ctx.input_shape[-1]
    s, d = min(side, crop), min(DISPLAY, crop)
    explained = np.full(n, -1, np.int64)
    pooled = np.zeros((n, s, s), np.float32)
    display = np.zeros((n, d, d), np.float32)
    for batch in stream:
        if not batch.index.numel():
            continue
        targets = batch.label.clone()
        if mapped is not None:
            targets = torch.tensor([mapped[int(t)] if t >= 0 else -1 for t in batch.label], dtype=torch.long)
        maps, cls = attribution_maps(ctx.model, batch.x.to(ctx.device), targets.to(ctx.device), method, layer)
        idx = batch.index.numpy()
        explained[idx] = cls.cpu().numpy()
        pooled[idx] = pool_maps(maps, s).cpu().numpy()
        display[idx] = F.adaptive_avg_pool2d(maps[:, None].float(), d)[:, 0].cpu().numpy()
    return explained, pooled, display


def exemplar_images(dataset: ImageDataset, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """(H, W, 3) uint8 pictures of the given images, as the model saw them (for the PDF and the gallery)."""
    pictures = {}
    for i in sorted(set(int(i) for i in indices)):
        x, _, _, _ = dataset[i]
        if x is not None:
            pictures[i] = deprocess(x, dataset.prep)
    return pictures


__all__ = ["ShortcutsConfig", "ShortcutsReport", "ShortcutsResult", "exemplar_images", "folder_classes",
           "recipient_indices", "run_settings", "run_shortcuts", "shortcuts_result"]
