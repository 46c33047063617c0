"""``vizkit shortcuts`` as a function: ``run_shortcuts(ShortcutsConfig(...))`` -> ``ShortcutsReport``;
``shortcuts_result(ctx, images, config)`` is the same analysis for a ``RunContext`` already built (no files written).
Files go through the one writer (``vizkit.render.writer.write_outputs``, ``ShortcutsResult``).

DATA is listed with ``vizkit.load.dataset`` (folders by class, or a list file) and read through one
``vizkit.scan.stream.DatasetStream``; unreadable files are skipped with one line each and the exit code is 2 at the
end. A first-level folder name must be a class name of the model or a
class index; without folders each image is explained for its predicted class. Maps are computed a batch at a time
on the device; only their pooled grid (for SpRAy) and a display copy (at most ``DISPLAY`` pixels a side) are kept.
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
from vizkit.project.shortcuts.clusters import ClassAnalysis, analyse_class, confirm, suspicion
from vizkit.project.shortcuts.maps import DEFAULT_METHOD, NEEDS_LAYER, attribution_maps, check_method
from vizkit.project.shortcuts.reliance import probability_drop
from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.project.shortcuts.spray import DEFAULT_SIDE, pool_maps, spectral_clusters
from vizkit.project.targets import class_list, parse_targets
from vizkit.scan.stream import DatasetStream, nothing_read

DISPLAY = 112


@dataclass(kw_only=True)
class ShortcutsConfig(ModelJob):
    """Options of ``vizkit shortcuts``. ``only_classes``: names or indices to analyse (empty: all; not
    ``classes``, which is ``ModelJob``'s class-names file of your own model); ``clusters``: "auto"
    (eigengap) or a number; ``side``: the SpRAy grid; ``limit``: only the first N images of DATA."""

    data: str | Path
    only_classes: Sequence[str] = ()
    method: str = DEFAULT_METHOD
    layer: str | None = None
    clusters: str | int = "auto"
    batch_size: int = 32
    side: int = DEFAULT_SIDE
    limit: int | None = None
    embed: bool = True

    def n_clusters(self) -> int | None:
        value = str(self.clusters).strip().lower()
        if value == "auto":
            return None
        if not value.isdigit() or int(value) < 1:
            raise UserInputError(f"--clusters must be 'auto' or a positive number, got {self.clusters!r}")
        return int(value)

    def check(self) -> None:
        check_method(self.method)
        self.n_clusters()
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.side < 2:
            raise UserInputError(f"the SpRAy grid side must be at least 2, got {self.side}")


@dataclass
class ShortcutsReport(JobReport):
    result: ShortcutsResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


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
    """Run ``vizkit shortcuts``: maps for DATA, SpRAy per class, then OUT/shortcuts/ (unless ``write`` is False)."""
    config.check()
    ctx = RunContext.from_job(config)
    images = list_images(config.data, config.limit)
    timings = {"load_model": ctx.load_seconds}
    result = shortcuts_result(ctx, images, config, progress=progress, on_skip=on_skip, timings=timings)
    report = ShortcutsReport(failures=[Failure(p, m, 2) for p, m in result.skipped], result=result, timings=timings)
    if write:
        from vizkit.render.writer import write_outputs

        report.written.append(write_outputs(result, ctx.info(config.data, run_settings(config, result)), config.out,
                                            timings=timings))
    return report


def run_settings(config: ShortcutsConfig, result: ShortcutsResult) -> dict:
    """The options page 1 and the manifest show (with the flagged classes and the skipped files)."""
    return {"data": str(config.data), "method": result.method, "layer": result.layer,
            "clusters": str(config.clusters), "batch_size": config.batch_size, "side": result.pooled.shape[-1],
            "classes": list(config.only_classes), "flagged": result.flagged,
            "skipped": [{"path": p, "reason": m} for p, m in result.skipped]}


def shortcuts_result(ctx: RunContext, images: ImageList, config: ShortcutsConfig, *,
                     progress: Callable[[int, int], None] | None = None,
                     on_skip: Callable[[str, str], None] | None = None,
                     timings: dict[str, float] | None = None) -> ShortcutsResult:
    """Maps, SpRAy, cluster statistics and the exemplar pictures for ``images`` (no files written)."""
    config.check()
    timings = {} if timings is None else timings
    loaded, crop = ctx.loaded, ctx.input_shape[-1]
    n_classes = num_classes(ctx.model, ctx.input_shape)
    layer = config.layer
    if config.method in NEEDS_LAYER:
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
    explained, pooled, display = _maps(ctx, stream, config, layer, mapped)
    skipped = [(stream.path(i), message) for i, message in stream.skipped]
    if stream.total and len(skipped) >= stream.total:
        raise nothing_read(images.source, stream.total, skipped)
    timings["maps"] = time.perf_counter() - start
    start = time.perf_counter()
    analyses = []
    present = set(explained[explained >= 0].tolist())
    for cls in sorted(present if wanted is None else present & wanted):
        idx = np.flatnonzero(explained == cls)
        spectral = spectral_clusters(pooled[idx].reshape(idx.size, -1), config.n_clusters(), embed=config.embed)
        name = loaded.class_names[cls] if loaded.class_names and cls < len(loaded.class_names) else f"class {cls}"
        analyses.append(analyse_class(cls, name, idx, pooled[idx], spectral, (crop, crop)))
    timings["spray"] = time.perf_counter() - start
    start = time.perf_counter()
    for analysis in analyses:
        _confirm_by_deletion(ctx, stream, analysis, pooled.shape[-1])
    analyses.sort(key=lambda a: (-a.suspicion, a.class_index))
    timings["deletion"] = time.perf_counter() - start
    result = ShortcutsResult([str(p) for p in images.paths], config.method, layer, (crop, crop), explained,
                             pooled, display, analyses, skipped, loaded.class_names)
    result.pictures = exemplar_images(stream.dataset, result.exemplar_indices())
    return result


def _confirm_by_deletion(ctx: RunContext, stream: DatasetStream, analysis: ClassAnalysis, side: int) -> None:
    """Reliance of each compact cluster (``vizkit.project.shortcuts.reliance``): its box, grown by one grid cell,
    removed from its members; then the class's suspicion again."""
    margin = -(-ctx.input_shape[-1] // side)
    target = torch.tensor([analysis.class_index])
    for cluster in analysis.clusters:
        if not cluster.compact:
            continue
        drops = []
        for batch in stream.over([int(i) for i in analysis.images[cluster.members]]):
            if batch.index.numel():
                drops.append(probability_drop(ctx.model, batch.x.to(ctx.device), target.expand(len(batch.index)),
                                              cluster.box, margin))
        confirm(cluster, np.concatenate(drops) if drops else np.zeros(0))
    analysis.suspicion = suspicion(analysis)


def _maps(ctx: RunContext, stream: DatasetStream, config: ShortcutsConfig, layer: str | None,
          mapped: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(explained class, pooled map, display map) per image of DATA; -1 and zeros where an image was not read."""
    n, crop = len(stream.dataset), ctx.input_shape[-1]
    s, d = min(config.side, crop), min(DISPLAY, crop)
    explained = np.full(n, -1, np.int64)
    pooled = np.zeros((n, s, s), np.float32)
    display = np.zeros((n, d, d), np.float32)
    for batch in stream:
        if not batch.index.numel():
            continue
        targets = batch.label.clone()
        if mapped is not None:
            targets = torch.tensor([mapped[int(t)] if t >= 0 else -1 for t in batch.label], dtype=torch.long)
        maps, cls = attribution_maps(ctx.model, batch.x.to(ctx.device), targets.to(ctx.device), config.method, layer)
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
           "run_settings", "run_shortcuts", "shortcuts_result"]
