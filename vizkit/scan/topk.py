"""The exact running top-K per channel over a dataset: the merge rule, the per-layer result and its arrays.

Rule (everywhere: scan, resume, ranks, ``MineResult.merge``): larger value first; equal values -> smaller global
image index; one entry per image (duplicates, e.g. ``DistributedSampler`` padding, are dropped by index). Within an
image the position is the first maximum in row-major order (``torch.max`` over the flattened grid returns it).
``LayerTopK.ties`` counts, per unit, the top-K entries whose value equals another entry's: their order is the rule's.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vizkit.errors import UserInputError

__all__ = ["ACTIVATION", "EMPTY", "RELEVANCE", "LayerTopK", "MineResult", "Ranking", "merge_topk"]

#: Index of an empty slot while sorting (sorts after every real image); stored as -1 in results.
EMPTY = torch.iinfo(torch.int64).max


def _take(order: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.gather(-1, order) for t in tensors]


def merge_topk(values: torch.Tensor, index: torch.Tensor, payload: Sequence[torch.Tensor], k: int
               ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Keep the best ``k`` candidates along the last dim of ``values``/``index``/``payload`` (same shapes).

    Two stable sorts give the lexicographic order (value desc, index asc); a first pair groups equal indices
    (best value first) so that a repeated image keeps one slot. Empty slots carry index ``EMPTY`` and -inf; their
    payload (integer positions) comes back as -1.
    """
    cols = [values, index, *payload]
    cols = _take(torch.sort(cols[0], dim=-1, descending=True, stable=True).indices, cols)
    cols = _take(torch.sort(cols[1], dim=-1, stable=True).indices, cols)
    dup = torch.zeros_like(cols[1], dtype=torch.bool)
    dup[..., 1:] = cols[1][..., 1:] == cols[1][..., :-1]
    cols[0] = cols[0].masked_fill(dup, float("-inf"))
    cols[1] = cols[1].masked_fill(dup, EMPTY)  # (already sorted by index, so this sort is the tie order)
    cols = _take(torch.sort(cols[0], dim=-1, descending=True, stable=True).indices, cols)
    cols = [c[..., :k] for c in cols]
    empty = cols[1] == EMPTY
    return cols[0], cols[1], [p.masked_fill(empty, -1) for p in cols[2:]]


ACTIVATION, RELEVANCE = "activation", "relevance"  # what a scan ranks (vizkit.scan.relevance)


@dataclass(frozen=True)
class Ranking:
    """What a scan ranked: ``activation`` (each channel's spatial maximum) or ``relevance`` for class ``target``
    (zennit-crp's normalised channel relevance, ``vizkit.scan.relevance``); ``name``: the class's name if known."""

    mode: str = ACTIVATION
    target: int | None = None
    name: str | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """mine.npz's ``rank`` (and ``rank_class``, ``rank_class_name`` for relevance)."""
        out = {"rank": np.array(self.mode, dtype=str)}
        if self.target is not None:
            out["rank_class"] = np.array(self.target, dtype=np.int64)
            out["rank_class_name"] = np.array(self.name or "", dtype=str)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Ranking:
        if "rank" not in arrays:
            return cls()
        target = int(arrays["rank_class"]) if "rank_class" in arrays else None
        name = str(arrays["rank_class_name"]) if "rank_class_name" in arrays else ""
        return cls(str(arrays["rank"]), target, name or None)


@dataclass
class LayerTopK:
    """One layer's scan result (numpy, CPU); what ``mine.npz`` stores per layer."""

    values: np.ndarray                        # (C, K) float32, descending; -inf where fewer than K images
    image_index: np.ndarray                   # (C, K) int64 into MineResult.paths; -1 where fewer than K
    positions: np.ndarray                     # (C, K, 2) int64 (y, x) on the layer's output grid; -1 where empty
    mean: np.ndarray                          # (C,) float32: mean over images of the spatial mean
    rate: np.ndarray                          # (C,) float32: share of images whose spatial max is > 0
    class_values: np.ndarray | None = None         # (n_classes, C, K) with per-class scans
    class_image_index: np.ndarray | None = None    # (n_classes, C, K)
    ranked: str = "activation"                # or "pre-activation of <module>": the value before a cap

    @property
    def ties(self) -> np.ndarray:
        """(C,) int64: entries of the unit's top K whose value equals another entry's (ordered by image index)."""
        v = self.values
        same = (v[:, 1:] == v[:, :-1]) & np.isfinite(v[:, 1:])
        tied = np.zeros(v.shape, bool)
        tied[:, 1:] |= same
        tied[:, :-1] |= same
        return tied.sum(1).astype(np.int64)

    @property
    def filled(self) -> np.ndarray:
        """(C,) int64: top-K slots holding an image (fewer than K when fewer images were scanned)."""
        return (self.image_index >= 0).sum(1).astype(np.int64)

    @property
    def dead(self) -> np.ndarray:
        """(C,) bool: the unit never fired (max <= 0) on any scanned image."""
        return self.rate == 0

    @property
    def channels(self) -> int:
        return int(self.values.shape[0])


@dataclass
class MineResult:
    """The scan of a dataset: per layer the top-K images of every channel, plus what was scanned and skipped."""

    paths: list[str]
    layers: dict[str, LayerTopK]
    k: int
    classes: list[str] | None = None
    labels: list[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    images_scanned: int = 0
    ranking: Ranking = field(default_factory=Ranking)

    def merge(self, other: MineResult) -> MineResult:
        """Exact merge of two scans (e.g. two shards, or two datasets). Same paths: one index space, images
        seen by both keep one slot; different paths: ``other``'s images are appended after ``self``'s. Means and
        rates are weighted by ``images_scanned`` (exact for disjoint image sets)."""
        if list(self.layers) != list(other.layers) or self.k != other.k:
            raise UserInputError(f"cannot merge scans of different layers or K: {list(self.layers)} k={self.k} "
                                 f"vs {list(other.layers)} k={other.k}")
        if (self.classes is None) != (other.classes is None) or (self.classes and self.classes != other.classes):
            raise UserInputError(f"cannot merge scans with different classes: {self.classes} vs {other.classes}")
        if self.ranking != other.ranking:
            raise UserInputError(f"cannot merge scans ranked differently: {self.ranking} vs {other.ranking}")
        same = self.paths == other.paths
        offset = 0 if same else len(self.paths)
        paths = self.paths if same else self.paths + other.paths
        labels = self.labels if same else (None if self.labels is None or other.labels is None
                                           else self.labels + other.labels)
        n1, n2 = self.images_scanned, other.images_scanned
        layers = {name: _merge_layer(self.layers[name], other.layers[name], offset, n1, n2, self.k)
                  for name in self.layers}
        skipped = list(dict.fromkeys([*self.skipped, *other.skipped]))
        return MineResult(list(paths), layers, self.k, self.classes, labels, skipped, n1 + n2, self.ranking)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The scan keys of ``mine.npz``: ``paths``, ``rank`` (+ ``rank_class``, ``rank_class_name``: ``Ranking``),
        ``classes`` (per-class scans), and per layer ``L/values``, ``L/image_index``, ``L/positions``, ``L/mean``,
        ``L/rate``, ``L/ties`` (tied top-K entries per unit), ``L/ranked`` (what was ranked, a string)
        (+ ``L/class_values``, ``L/class_image_index``)."""
        arrays: dict[str, np.ndarray] = {"paths": np.array(self.paths, dtype=str), **self.ranking.arrays()}
        if self.classes is not None:
            arrays["classes"] = np.array(self.classes, dtype=str)
        for name, layer in self.layers.items():
            arrays[f"{name}/values"] = layer.values.astype(np.float32)
            arrays[f"{name}/image_index"] = layer.image_index.astype(np.int64)
            arrays[f"{name}/positions"] = layer.positions.astype(np.int64)
            arrays[f"{name}/mean"] = layer.mean.astype(np.float32)
            arrays[f"{name}/rate"] = layer.rate.astype(np.float32)
            arrays[f"{name}/ties"] = layer.ties
            arrays[f"{name}/ranked"] = np.array(layer.ranked, dtype=str)
            if layer.class_values is not None and layer.class_image_index is not None:
                arrays[f"{name}/class_values"] = layer.class_values.astype(np.float32)
                arrays[f"{name}/class_image_index"] = layer.class_image_index.astype(np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, skipped: Sequence[tuple[str, str]] = (),
                    images_scanned: int = 0, labels: list[int] | None = None) -> MineResult:
        """Rebuild from ``to_arrays()`` output or an opened ``mine.npz`` (extra keys, e.g. projections, are
        ignored). ``images_scanned``/``skipped`` are not arrays: they live in the manifest; pass them back here."""
        names = [key[: -len("/values")] for key in arrays if key.endswith("/values") and "/class_" not in key]
        layers = {}
        for name in names:
            get = arrays.__getitem__
            has_class = f"{name}/class_values" in arrays
            layers[name] = LayerTopK(
                np.asarray(get(f"{name}/values"), np.float32), np.asarray(get(f"{name}/image_index"), np.int64),
                np.asarray(get(f"{name}/positions"), np.int64), np.asarray(get(f"{name}/mean"), np.float32),
                np.asarray(get(f"{name}/rate"), np.float32),
                np.asarray(get(f"{name}/class_values"), np.float32) if has_class else None,
                np.asarray(get(f"{name}/class_image_index"), np.int64) if has_class else None,
                str(get(f"{name}/ranked")) if f"{name}/ranked" in arrays else "activation")
        k = int(next(iter(layers.values())).values.shape[1]) if layers else 0
        classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
        return cls([str(p) for p in arrays["paths"]], layers, k, classes, labels, list(skipped), images_scanned,
                   Ranking.from_arrays(arrays))


def _merge_layer(a: LayerTopK, b: LayerTopK, offset: int, n1: int, n2: int, k: int) -> LayerTopK:
    if a.values.shape != b.values.shape:
        raise UserInputError(f"cannot merge layers of different shapes: {a.values.shape} vs {b.values.shape}")
    if a.ranked != b.ranked:
        raise UserInputError(f"cannot merge scans that ranked different quantities: {a.ranked} vs {b.ranked}")
    values, index, (y, x) = merge_topk(
        torch.from_numpy(np.concatenate([a.values, b.values], -1)),
        _to_sort_index(np.concatenate([a.image_index, _shift(b.image_index, offset)], -1)),
        [torch.from_numpy(np.concatenate([a.positions[..., i], b.positions[..., i]], -1)) for i in (0, 1)], k)
    total = max(n1 + n2, 1)
    mean = (a.mean.astype(np.float64) * n1 + b.mean.astype(np.float64) * n2) / total
    rate = (a.rate.astype(np.float64) * n1 + b.rate.astype(np.float64) * n2) / total
    class_values = class_index = None
    if a.class_values is not None and b.class_values is not None:
        assert a.class_image_index is not None and b.class_image_index is not None
        cv, ci, _ = merge_topk(
            torch.from_numpy(np.concatenate([a.class_values, b.class_values], -1)),
            _to_sort_index(np.concatenate([a.class_image_index, _shift(b.class_image_index, offset)], -1)), [], k)
        class_values, class_index = cv.numpy(), _from_sort_index(ci)
    return LayerTopK(values.numpy(), _from_sort_index(index), torch.stack([y, x], -1).numpy(),
                     mean.astype(np.float32), rate.astype(np.float32), class_values, class_index, a.ranked)


def _shift(index: np.ndarray, offset: int) -> np.ndarray:
    return np.where(index >= 0, index + offset, index)


def _to_sort_index(index: np.ndarray) -> torch.Tensor:
    """-1 (empty) -> EMPTY so that empty slots sort after real images of equal value."""
    t = torch.from_numpy(np.ascontiguousarray(index, np.int64))
    return t.masked_fill(t < 0, EMPTY)


def _from_sort_index(index: torch.Tensor) -> np.ndarray:
    return index.masked_fill(index == EMPTY, -1).cpu().numpy()
