"""``ShortcutsResult``: what ``vizkit shortcuts`` found, plain numpy (no model, no torch), re-exported by
``vizkit.project.results`` so the one writer picks its files by type.

Per class a ``judge.ClassVerdict`` (its merged clusters, each with its evidence and score); per cluster the
pictures' figures (``ClusterView``: mean map, the region's bounding box, the share of the mean map in it, the
exemplars closest to the mean) are derived here from the pooled maps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vizkit.project.shortcuts.evidence import Evidence
from vizkit.project.shortcuts.judge import ClassVerdict, ClusterVerdict
from vizkit.project.shortcuts.verdict import FEATURES, Thresholds

EXEMPLARS = 8
EVIDENCE_COLUMNS = tuple(Evidence.__dataclass_fields__)

Box = tuple[int, int, int, int]


def cell_bounds(i0: int, i1: int, cells: int, pixels: int) -> tuple[int, int]:
    """Input pixels [start, end) of grid cells i0..i1 (as ``evidence.pixel_mask`` maps cells to pixels)."""
    return -((-i0 * pixels) // cells), -((-(i1 + 1) * pixels) // cells)


def region_box(region: np.ndarray, input_hw: tuple[int, int]) -> Box:
    """Bounding box of a boolean (s, s) region in input pixels [y0, x0, y1, x1) (the whole image if empty)."""
    h, w = input_hw
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return 0, 0, h, w
    y0, y1 = cell_bounds(int(rows.min()), int(rows.max()), region.shape[0], h)
    x0, x1 = cell_bounds(int(cols.min()), int(cols.max()), region.shape[1], w)
    return y0, x0, y1, x1


def box_share(maps: np.ndarray, box: Box) -> np.ndarray:
    """Per map of (N, H, W) (non-negative), the share of its total inside ``box`` (0 for an all-zero map).

    The same quantity as Quantus' ``RelevanceMassAccuracy`` with the box as ground-truth mask."""
    y0, x0, y1, x1 = box
    maps = np.asarray(maps, np.float64)
    total = maps.sum(axis=(1, 2))
    inside = maps[:, y0:y1, x0:x1].sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


@dataclass
class ClusterView:
    """What the pages show of one cluster: ``exemplars`` index the class's images, closest to the mean first."""

    mean_map: np.ndarray
    box: Box
    relevance_in_box: float
    exemplars: np.ndarray


def cluster_view(pooled: np.ndarray, members: np.ndarray, region: np.ndarray, input_hw: tuple[int, int]
                 ) -> ClusterView:
    """``pooled``: the class's (N, s, s) maps; ``members`` and ``region`` from the verdict."""
    p = pooled[members]
    mean = p.mean(axis=0) if len(p) else np.zeros(pooled.shape[1:], np.float32)
    box = region_box(region, input_hw)
    gy0, gx0, gy1, gx1 = region_box(region, (int(region.shape[0]), int(region.shape[-1])))
    inside = float(mean[gy0:gy1, gx0:gx1].sum())
    order = np.argsort(((p - mean) ** 2).reshape(len(p), -1).sum(axis=1), kind="stable")
    return ClusterView(mean.astype(np.float32), box, inside, members[order[:EXEMPLARS]])


def contributions(evidence: Evidence, th: Thresholds) -> dict[str, float]:
    """Each figure's term ``w_f (x_f - mean_f) / scale_f`` of the score's logit (``verdict.score``)."""
    values = evidence.to_dict()
    return {f: th.weights[f] * (values[f] - th.mean[f]) / (th.scale[f] or 1.0) for f in FEATURES}


@dataclass
class ShortcutsResult:
    """Per image (index into ``paths``; -1 / NaN where unread or not analysed): ``explained`` class, ``cluster``
    within its class, ``share`` of its evidence in its cluster's box; ``pooled`` (N, s, s) and ``display``
    (N, d, d) maps; ``embedding`` (N, 2). ``classes`` sorted by suspicion, highest first. ``pictures``: (H, W, 3)
    uint8 exemplars as the model saw them, by image index (filled for the PDF and the gallery)."""

    paths: list[str]
    method: str
    layer: str | None
    input_hw: tuple[int, int]
    explained: np.ndarray
    pooled: np.ndarray
    display: np.ndarray
    classes: list[ClassVerdict]
    thresholds: Thresholds = field(default_factory=Thresholds)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] | None = None
    pictures: dict[int, np.ndarray] = field(default_factory=dict)

    def view(self, verdict: ClassVerdict, cluster: ClusterVerdict) -> ClusterView:
        return cluster_view(self.pooled[verdict.images], cluster.members, cluster.group.region, self.input_hw)

    def cluster_flagged(self, cluster: ClusterVerdict) -> bool:
        return cluster.evidence is not None and cluster.score >= self.thresholds.flag

    @property
    def cluster(self) -> np.ndarray:
        out = np.full(len(self.paths), -1, np.int64)
        for v in self.classes:
            for k, c in enumerate(v.clusters):
                out[v.images[c.members]] = k
        return out

    @property
    def embedding(self) -> np.ndarray:
        out = np.full((len(self.paths), 2), np.nan, np.float32)
        for v in self.classes:
            out[v.images] = v.spectral.embedding
        return out

    @property
    def share(self) -> np.ndarray:
        """Each analysed image's share of evidence inside its own cluster's box (on the display maps)."""
        out = np.full(len(self.paths), np.nan, np.float32)
        for v in self.classes:
            for c in v.clusters:
                idx = v.images[c.members]
                box = scale_box(self.view(v, c).box, self.input_hw, self.display.shape[1:])
                out[idx] = box_share(self.display[idx], box)
        return out

    @property
    def flagged(self) -> list[int]:
        """Flagged class indices, by suspicion."""
        return [v.class_index for v in self.classes if v.flagged]

    def detailed(self) -> list[ClassVerdict]:
        """The classes the PDF details: the flagged ones, else the most suspicious (never class 0 by default)."""
        flagged = [v for v in self.classes if v.flagged]
        return flagged or [v for v in self.classes[:DETAIL_WHEN_QUIET] if v.top is not None]

    def exemplar_indices(self) -> list[int]:
        """Image indices of every cluster's exemplars (the pictures the PDF and the gallery show)."""
        return sorted({int(v.images[i]) for v in self.classes for c in v.clusters for i in self.view(v, c).exemplars})

    def to_json(self) -> dict:
        """The schema of shortcuts.json (docs/outputs.md); classes by suspicion, descending."""
        th = self.thresholds
        return {"method": self.method, "layer": self.layer,
                "verdict": {"flag": th.flag, "fitted_method": th.method, "fitted_on": len(th.fitted.get("labs", []))},
                "classes": [self._class_json(v) for v in self.classes]}

    def _class_json(self, v: ClassVerdict) -> dict:
        return {"class": v.class_index, "name": v.name, "images": int(v.images.size), "suspicion": v.suspicion,
                "flagged": v.flagged, "eigengap": v.spectral.eigengap, "k": v.spectral.k,
                "k_reason": v.spectral.reason, "split_merge": v.split_merge(), "warning": v.warning,
                "clusters": [self._cluster_json(v, c) for c in v.clusters]}

    def _cluster_json(self, v: ClassVerdict, c: ClusterVerdict) -> dict:
        view = self.view(v, c)
        out = {"members": [self.paths[int(i)] for i in v.images[c.members]], "size": int(c.members.size),
               "flagged": self.cluster_flagged(c), "score": c.score, "parts": list(c.group.parts),
               "split": c.group.split or None, "box": [int(b) for b in view.box],
               "relevance_in_box": view.relevance_in_box,
               "evidence": None if c.evidence is None else c.evidence.to_dict(),
               "contributions": None if c.evidence is None else contributions(c.evidence, self.thresholds),
               "tcav": None}
        if c.tcav is not None:
            out["tcav"] = {"layer": c.tcav.layer, "score": c.tcav.score, "p_value": c.tcav.p_value,
                           "significant": c.tcav.significant, "scores": c.tcav.scores.tolist(),
                           "random_scores": c.tcav.random_scores.tolist()}
        return out

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """Per image: paths, explained class, cluster (within the class), share in own cluster box, pooled and
        display maps, embedding. Per class (ranked): ``classes``, ``suspicion``, ``flagged``; per analysed class
        ``eigenvalues_<class>``, and per cluster ``scores_<class>`` (k,), ``evidence_<class>`` (k, columns of
        ``evidence_columns``; NaN for a cluster too small to judge) and ``regions_<class>`` (k, s, s) bool."""
        arrays = {"paths": np.array(self.paths), "explained": self.explained, "cluster": self.cluster,
                  "share_in_box": self.share, "maps": self.pooled, "display_maps": self.display,
                  "embedding": self.embedding, "classes": np.array([v.class_index for v in self.classes], np.int64),
                  "suspicion": np.array([v.suspicion for v in self.classes], np.float64),
                  "flagged": np.array([v.flagged for v in self.classes], bool),
                  "evidence_columns": np.array(EVIDENCE_COLUMNS)}
        s = self.pooled.shape[1:]
        for v in self.classes:
            arrays[f"eigenvalues_{v.class_index}"] = v.spectral.eigenvalues
            arrays[f"scores_{v.class_index}"] = np.array([c.score for c in v.clusters], np.float64)
            arrays[f"evidence_{v.class_index}"] = np.array(
                [[np.nan] * len(EVIDENCE_COLUMNS) if c.evidence is None else list(c.evidence.to_dict().values())
                 for c in v.clusters], np.float64).reshape(-1, len(EVIDENCE_COLUMNS))
            arrays[f"regions_{v.class_index}"] = np.array([c.group.region for c in v.clusters], bool).reshape(-1, *s)
        return arrays


DETAIL_WHEN_QUIET = 2


def scale_box(box: Box, src: tuple[int, int], dst: tuple[int, ...]) -> Box:
    """``box`` (y0, x0, y1, x1) in ``src`` pixels as the covering box in ``dst`` pixels."""
    (h, w), (dh, dw) = src, dst
    y0, x0, y1, x1 = box
    return (y0 * dh) // h, (x0 * dw) // w, -((-y1 * dh) // h), -((-x1 * dw) // w)


__all__ = ["DETAIL_WHEN_QUIET", "EVIDENCE_COLUMNS", "EXEMPLARS", "ClusterView", "ShortcutsResult", "box_share",
           "cell_bounds", "cluster_view", "contributions", "region_box", "scale_box"]
