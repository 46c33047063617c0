"""``vizkit shortcuts`` as a function: ``run_shortcuts(ShortcutsConfig(...))`` -> ``ShortcutsReport``; ``shortcuts``
is the same analysis on images already loaded (no files written).

DATA is read with ``vizkit.load.dataset`` (folders by class, or a list file); unreadable files are skipped with
one line each and the exit code is 2 at the end. A first-level folder name must be a class name of the model or a
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

from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob
from vizkit.jobs.gradcam import num_classes
from vizkit.load import LoadedModel, deprocess
from vizkit.load.dataset import ImageDataset, ImageList, image_loader, list_images
from vizkit.project.gradcam import default_gradcam_layer
from vizkit.project.shortcuts.clusters import ClassAnalysis, analyse_class, box_share, confirm, suspicion
from vizkit.project.shortcuts.maps import DEFAULT_METHOD, NEEDS_LAYER, attribution_maps, check_method
from vizkit.project.shortcuts.reliance import probability_drop
from vizkit.project.shortcuts.spray import DEFAULT_SIDE, pool_maps, spectral_clusters
from vizkit.project.targets import parse_targets

DISPLAY = 112


@dataclass(kw_only=True)
class ShortcutsConfig(ModelJob):
    """Options of ``vizkit shortcuts``. ``classes``: names or indices to analyse (empty: all); ``clusters``: "auto"
    (eigengap) or a number; ``side``: the SpRAy grid; ``limit``: only the first N images of DATA."""

    data: str | Path
    classes: Sequence[str] = ()
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
class ShortcutsResult:
    """Per image (index into ``paths``; -1 / NaN where unread or not analysed): ``explained`` class, ``cluster``
    within its class, ``share`` of its evidence in its cluster's box; ``pooled`` (N, s, s) and ``display``
    (N, d, d) maps; ``embedding`` (N, 2). ``classes`` sorted by suspicion, highest first."""

    paths: list[str]
    method: str
    layer: str | None
    input_hw: tuple[int, int]
    explained: np.ndarray
    pooled: np.ndarray
    display: np.ndarray
    classes: list[ClassAnalysis]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] | None = None

    @property
    def cluster(self) -> np.ndarray:
        out = np.full(len(self.paths), -1, np.int64)
        for c in self.classes:
            out[c.images] = c.spectral.labels
        return out

    @property
    def embedding(self) -> np.ndarray:
        out = np.full((len(self.paths), 2), np.nan, np.float32)
        for c in self.classes:
            out[c.images] = c.spectral.embedding
        return out

    @property
    def share(self) -> np.ndarray:
        """Each analysed image's share of evidence inside its own cluster's box (on the display maps)."""
        out = np.full(len(self.paths), np.nan, np.float32)
        for c in self.classes:
            for cl in c.clusters:
                idx = c.images[cl.members]
                out[idx] = box_share(self.display[idx], _scale_box(cl.box, self.input_hw, self.display.shape[1:]))
        return out

    def to_json(self) -> dict:
        """The schema of shortcuts.json (classes already sorted by suspicion, descending)."""
        return {"method": self.method, "layer": self.layer, "classes": [{
            "class": c.class_index, "name": c.name, "images": int(c.images.size), "suspicion": c.suspicion,
            "eigengap": c.spectral.eigengap, "clusters": [{
                "members": [self.paths[int(i)] for i in c.images[cl.members]], "size": cl.size,
                "compact": cl.compact, "box": [int(v) for v in cl.box], "relevance_in_box": cl.relevance_in_box,
            } for cl in c.clusters]} for c in self.classes]}


def _scale_box(box: tuple[int, int, int, int], src: tuple[int, int], dst: tuple[int, ...]) -> tuple[int, int, int, int]:
    (h, w), (dh, dw) = src, dst
    y0, x0, y1, x1 = box
    return (y0 * dh) // h, (x0 * dw) // w, -((-y1 * dh) // h), -((-x1 * dw) // w)


@dataclass
class ShortcutsReport(JobReport):
    result: ShortcutsResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


def folder_classes(images: ImageList, loaded: LoadedModel, n_classes: int) -> list[int] | None:
    """Model class index of every first-level folder (None without folders); a folder that names no class of the
    model is a user error."""
    if images.classes is None:
        return None
    mapped = []
    for name in images.classes:
        try:
            (index,) = parse_targets([name], loaded.class_names, n_classes)
        except UserInputError as err:
            raise UserInputError(f"folder '{name}' of {images.source} is not a class of the model ({err})") from None
        if index is None:
            raise UserInputError(f"folder '{name}' of {images.source} is not a class name or index of the model")
        mapped.append(index)
    return mapped


def run_shortcuts(config: ShortcutsConfig, *, progress: Callable[[int, int], None] | None = None,
                  on_skip: Callable[[str, str], None] | None = None, write: bool = True) -> ShortcutsReport:
    """Run ``vizkit shortcuts``: maps for DATA, SpRAy per class, then OUT/shortcuts/ (unless ``write`` is False)."""
    config.check()
    started = time.perf_counter()
    loaded = config.load()
    images = list_images(config.data, config.limit)
    timings = {"load_model": time.perf_counter() - started}
    result = shortcuts(loaded, images, config, progress=progress, on_skip=on_skip, timings=timings)
    report = ShortcutsReport(failures=[Failure(p, m, 2) for p, m in result.skipped], result=result, timings=timings)
    if write:
        from vizkit.render.shortcuts import write_shortcuts_outputs

        report.written.append(write_shortcuts_outputs(result, loaded, images, config, timings))
    return report


def shortcuts(loaded: LoadedModel, images: ImageList, config: ShortcutsConfig, *,
              progress: Callable[[int, int], None] | None = None, on_skip: Callable[[str, str], None] | None = None,
              timings: dict[str, float] | None = None) -> ShortcutsResult:
    """Maps, SpRAy and cluster statistics for ``images`` (no files written)."""
    config.check()
    timings = {} if timings is None else timings
    prep = loaded.preprocessing
    shape = (1, prep.channels, prep.crop, prep.crop)
    n_classes = num_classes(loaded.model, shape)
    layer = config.layer
    if config.method in NEEDS_LAYER:
        layer = layer or default_gradcam_layer(loaded.model, shape)
    wanted = {int(c) for c in parse_targets(config.classes, loaded.class_names, n_classes) if c is not None} \
        if config.classes else None
    mapped = folder_classes(images, loaded, n_classes)
    start = time.perf_counter()
    explained, pooled, display, skipped = _maps(loaded, images, config, layer, mapped, wanted, progress, on_skip)
    timings["maps"] = time.perf_counter() - start
    start = time.perf_counter()
    analyses = []
    present = set(explained[explained >= 0].tolist())
    for cls in sorted(present if wanted is None else present & wanted):
        idx = np.flatnonzero(explained == cls)
        spectral = spectral_clusters(pooled[idx].reshape(idx.size, -1), config.n_clusters(), embed=config.embed)
        name = loaded.class_names[cls] if loaded.class_names and cls < len(loaded.class_names) else f"class {cls}"
        analyses.append(analyse_class(cls, name, idx, pooled[idx], spectral, (prep.crop, prep.crop)))
    timings["spray"] = time.perf_counter() - start
    start = time.perf_counter()
    dataset = ImageDataset(images, prep)
    for analysis in analyses:
        _confirm_by_deletion(loaded, dataset, analysis, config.batch_size, pooled.shape[-1])
    analyses.sort(key=lambda a: (-a.suspicion, a.class_index))
    timings["deletion"] = time.perf_counter() - start
    return ShortcutsResult([str(p) for p in images.paths], config.method, layer, (prep.crop, prep.crop), explained,
                           pooled, display, analyses, skipped, loaded.class_names)


def _confirm_by_deletion(loaded: LoadedModel, dataset: ImageDataset, analysis: ClassAnalysis, batch_size: int,
                         side: int) -> None:
    """Reliance of each compact cluster (``vizkit.project.shortcuts.reliance``): its box, grown by one grid cell,
    removed from its members; then the class's suspicion again."""
    device = next(loaded.model.parameters()).device
    margin = -(-loaded.preprocessing.crop // side)
    target = torch.tensor([analysis.class_index])
    for cluster in analysis.clusters:
        if not cluster.compact:
            continue
        drops = []
        members = [int(i) for i in analysis.images[cluster.members]]
        for start in range(0, len(members), batch_size):
            xs = [x for x, _, _, _ in (dataset[i] for i in members[start:start + batch_size]) if x is not None]
            if xs:
                x = torch.stack(xs).to(device)
                drops.append(probability_drop(loaded.model, x, target.expand(len(xs)), cluster.box, margin))
        confirm(cluster, np.concatenate(drops) if drops else np.zeros(0))
    analysis.suspicion = suspicion(analysis)


def _maps(loaded: LoadedModel, images: ImageList, config: ShortcutsConfig, layer: str | None,
          mapped: list[int] | None, wanted: set[int] | None, progress: Callable[[int, int], None] | None,
          on_skip: Callable[[str, str], None] | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]]]:
    n, crop = len(images.paths), loaded.preprocessing.crop
    s, d = min(config.side, crop), min(DISPLAY, crop)
    explained = np.full(n, -1, np.int64)
    pooled = np.zeros((n, s, s), np.float32)
    display = np.zeros((n, d, d), np.float32)
    indices = None
    if mapped is not None and wanted is not None and images.labels is not None:
        indices = [i for i, lab in enumerate(images.labels) if mapped[lab] in wanted]
    device = next(loaded.model.parameters()).device
    dataset = ImageDataset(images, loaded.preprocessing)
    skipped, done, total = [], 0, n if indices is None else len(indices)
    for batch in image_loader(dataset, batch_size=config.batch_size, device=device, indices=indices):
        for i, message in batch.skipped:
            skipped.append((str(images.paths[i]), message))
            if on_skip:
                on_skip(str(images.paths[i]), message)
        done += len(batch.skipped) + batch.index.numel()
        if batch.index.numel():
            targets = batch.label.clone()
            if mapped is not None:
                targets = torch.tensor([mapped[int(t)] if t >= 0 else -1 for t in batch.label], dtype=torch.long)
            maps, cls = attribution_maps(loaded.model, batch.x.to(device), targets.to(device), config.method, layer)
            idx = batch.index.numpy()
            explained[idx] = cls.cpu().numpy()
            pooled[idx] = pool_maps(maps, s).cpu().numpy()
            display[idx] = F.adaptive_avg_pool2d(maps[:, None].float(), d)[:, 0].cpu().numpy()
        if progress:
            progress(done, total)
    return explained, pooled, display, skipped


def exemplar_images(dataset: ImageDataset, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """(H, W, 3) uint8 pictures of the given images, as the model saw them (for the PDF and the gallery)."""
    pictures = {}
    for i in sorted(set(int(i) for i in indices)):
        x, _, _, _ = dataset[i]
        if x is not None:
            pictures[i] = deprocess(x, dataset.prep)
    return pictures


__all__ = ["ShortcutsConfig", "ShortcutsReport", "ShortcutsResult", "exemplar_images", "folder_classes",
           "run_shortcuts", "shortcuts"]
