"""What each SpRAy cluster shows, whether it is a shortcut's signature, and how suspicious a class is.

For a cluster with members' pooled maps ``P_i`` (each sums to 1 over the s x s grid; see ``spray.pool_maps``):

- mean map ``M = mean_i P_i``.
- region ``R``: the grid cells where ``M >= REGION_LEVEL * max(M)`` (half maximum): where the cluster's evidence
  peaks. Any shape, so a thin frame is a region too. ``area`` is its share of the image.
- box ``[y0, x0, y1, x1]``: the bounding box of ``R`` in input pixels (rows y0..y1-1, columns x0..x1-1, each cell
  mapped back to the input pixels it pooled). ``relevance_in_box``: the share of ``M``'s evidence inside the box.
- member mass ``m_i``: the share of member i's own evidence inside ``R``. A uniform map would put ``area`` there.
- fixedness ``f_i = m_i / (the most evidence member i has in any |R| of its own cells)``: 1 when the member's own
  strongest spot *is* ``R``, about 0.5 for members whose evidence sits near R but shifts from image to image
  (objects at similar places), 0.8-0.9 for small objects jittering by a pixel or two. A planted mark sits on the
  same pixels in every image; an object does not.
- a member **carries** the spot when ``f_i >= MIN_FIXEDNESS`` and ``m_i >= MIN_ENRICHMENT * area``.
- **compact**: evidence in a small region at a fixed place across the members: ``area <= MAX_AREA`` (a tenth of
  the image at most) and at least ``MIN_CONSISTENT`` (3/4) of the members carry the spot, with at least
  ``MIN_MEMBERS`` members.
- split: spectral clusters group maps by where their evidence is, not by *why*; a cluster with a small region whose
  carriers are a minority-or-majority but not all (both parts at least ``MIN_MEMBERS`` and carriers at least
  ``MIN_SHARE`` of the class) is split into its carriers and the rest, and both are described again.
- merge: compact clusters at the same place (regions sharing at least ``MIN_OVERLAP`` of the smaller one) are
  merged: one shortcut seen with different objects, which spectral clustering tends to cut apart.
- concentration ``median_i(m_i) - area``: how much more of a typical member's evidence is in R than chance.

- reliance (``vizkit.project.shortcuts.reliance``, computed by the job where the model is at hand): the median drop
  of the class probability when the box is removed from the members. A compact cluster whose region the model
  does not need (reliance < ``MIN_RELIANCE``) is not compact after all: its evidence came from the region's
  contrast, not from the model's use of it (the lab's control model shows the mark in some maps, but removing it
  costs those images a median 0.18 of probability against 0.65 for the model trained with the mark).

**suspicion** of a class = eigengap x the largest ``concentration x reliance`` among its compact clusters
(``concentration`` alone where reliance was not measured; 0 without a compact cluster). It is high only when the
maps split into well-separated groups *and* one group's evidence sits in one small fixed place the model needs:
the SpRAy signature of a Clever-Hans shortcut. A class is **flagged** when it has a compact cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vizkit.project.shortcuts.spray import Spectral

REGION_LEVEL = 0.5
MAX_AREA = 0.10
MIN_ENRICHMENT = 4.0
MIN_FIXEDNESS = 0.9
MIN_SHARE = 0.1
MIN_OVERLAP = 0.5
MIN_RELIANCE = 0.25
MIN_CONSISTENT = 0.75
MIN_MEMBERS = 3
EXEMPLARS = 8

Box = tuple[int, int, int, int]


@dataclass
class ClusterStats:
    """One cluster. ``members``/``exemplars`` index the class's images; maps are on the s x s grid."""

    members: np.ndarray
    mean_map: np.ndarray
    region: np.ndarray
    box: Box
    relevance_in_box: float
    area: float
    member_mass: np.ndarray
    fixedness: np.ndarray
    carries: np.ndarray
    compact: bool
    concentration: float
    exemplars: np.ndarray
    reliance: float | None = None

    @property
    def size(self) -> int:
        return int(self.members.size)


@dataclass
class ClassAnalysis:
    """SpRAy of one class: ``images`` index the dataset's paths; ``clusters`` in label order (0 the largest)."""

    class_index: int
    name: str
    images: np.ndarray
    spectral: Spectral
    clusters: list[ClusterStats] = field(default_factory=list)
    suspicion: float = 0.0

    @property
    def flagged(self) -> bool:
        return any(c.compact for c in self.clusters)


def cell_bounds(i0: int, i1: int, cells: int, pixels: int) -> tuple[int, int]:
    """Input pixels [start, end) pooled by grid cells i0..i1 (adaptive pooling: floor start, ceil end)."""
    return (i0 * pixels) // cells, -((-(i1 + 1) * pixels) // cells)


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


def cluster_stats(pooled: np.ndarray, members: np.ndarray, input_hw: tuple[int, int]) -> ClusterStats:
    """Statistics of one cluster from the class's pooled maps (N, s, s) and its member indices."""
    p = pooled[members]
    mean = p.mean(axis=0)
    peak = float(mean.max()) if mean.size else 0.0
    region = mean >= REGION_LEVEL * peak if peak > 0 else np.zeros_like(mean, bool)
    area = float(region.mean())
    y0, x0, y1, x1 = _grid_box(region)
    inside = float(mean[y0:y1, x0:x1].sum())
    mass, fixed, carries = _carriers(p, region)
    compact = bool(peak > 0 and area <= MAX_AREA and len(members) >= MIN_MEMBERS
                   and float(np.mean(carries)) >= MIN_CONSISTENT)
    concentration = float(np.median(mass) - area) if len(members) else 0.0
    flat = p.reshape(len(members), -1)
    order = np.argsort(((flat - mean.reshape(1, -1)) ** 2).sum(axis=1), kind="stable")
    return ClusterStats(members, mean.astype(np.float32), region, region_box(region, input_hw), inside, area,
                        mass.astype(np.float32), fixed.astype(np.float32), carries, compact, concentration,
                        members[order[:EXEMPLARS]])


def _carriers(p: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each member's mass in the region, its fixedness, and whether it carries the spot (module docstring)."""
    n, cells = p.shape[0], int(region.sum())
    if cells == 0 or n == 0:
        return np.zeros(n), np.zeros(n), np.zeros(n, bool)
    flat = p.reshape(n, -1)
    mass = flat[:, region.reshape(-1)].sum(axis=1)
    best = -np.partition(-flat, cells - 1, axis=1)[:, :cells].sum(axis=1)  # the member's own top-|R| cells
    fixed = np.divide(mass, best, out=np.zeros_like(mass), where=best > 0)
    return mass, fixed, (fixed >= MIN_FIXEDNESS) & (mass >= MIN_ENRICHMENT * region.mean())


def _grid_box(region: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return 0, 0, region.shape[0], region.shape[1]
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def refine_labels(pooled: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Split clusters into carriers and the rest, then merge compact clusters at the same place (module docstring);
    labels 0..k-1 by decreasing size."""
    return _by_size(_merge_same_place(pooled, _split_carriers(pooled, _by_size(labels.copy()))))


def _split_carriers(pooled: np.ndarray, out: np.ndarray) -> np.ndarray:
    hw = (pooled.shape[1], pooled.shape[2])
    n, next_label = out.size, int(out.max()) + 1 if out.size else 0
    for c in range(next_label):
        members = np.flatnonzero(out == c)
        stats = cluster_stats(pooled, members, hw)
        carriers = stats.carries
        if stats.area > MAX_AREA or carriers.all() or not carriers.any():
            continue
        if min(carriers.sum(), (~carriers).sum()) >= MIN_MEMBERS and carriers.sum() >= MIN_SHARE * n:
            out[members[~carriers]] = next_label
            next_label += 1
    return out


def _merge_same_place(pooled: np.ndarray, out: np.ndarray) -> np.ndarray:
    hw = (pooled.shape[1], pooled.shape[2])
    stats = [cluster_stats(pooled, np.flatnonzero(out == c), hw) for c in range(int(out.max()) + 1 if out.size else 0)]
    compact = [s for s in stats if s.compact]
    for i, a in enumerate(compact):
        for b in compact[i + 1:]:
            if (a.region & b.region).sum() >= MIN_OVERLAP * min(a.region.sum(), b.region.sum()):
                out[out == out[b.members[0]]] = out[a.members[0]]  # current labels: merges chain correctly
    return out


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..k-1 by decreasing size (ties: smaller old label first)."""
    if labels.size == 0:
        return labels
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    remap = np.zeros(int(ids.max()) + 1, np.int64)
    remap[order] = np.arange(order.size)
    return remap[labels]


def analyse_class(class_index: int, name: str, images: np.ndarray, pooled: np.ndarray, spectral: Spectral,
                  input_hw: tuple[int, int]) -> ClassAnalysis:
    """Cluster statistics and the suspicion score of one class (see the module docstring); ``spectral.labels``
    are replaced by the refined labels."""
    spectral.labels = refine_labels(pooled, spectral.labels)
    clusters = [cluster_stats(pooled, np.flatnonzero(spectral.labels == c), input_hw)
                for c in range(int(spectral.labels.max()) + 1 if spectral.labels.size else 0)]
    analysis = ClassAnalysis(class_index, name, images, spectral, clusters)
    analysis.suspicion = suspicion(analysis)
    return analysis


def suspicion(analysis: ClassAnalysis) -> float:
    """eigengap x the best ``concentration x reliance`` of a compact cluster (module docstring)."""
    scores = [c.concentration * (1.0 if c.reliance is None else max(c.reliance, 0.0))
              for c in analysis.clusters if c.compact]
    return float(max(analysis.spectral.eigengap * max(scores), 0.0)) if scores else 0.0


def confirm(cluster: ClusterStats, drops: np.ndarray) -> None:
    """Record the members' probability drops; a compact cluster the model does not rely on is not compact."""
    cluster.reliance = float(np.median(drops)) if drops.size else 0.0
    cluster.compact = cluster.compact and cluster.reliance >= MIN_RELIANCE


__all__ = ["EXEMPLARS", "MAX_AREA", "MIN_CONSISTENT", "MIN_ENRICHMENT", "MIN_FIXEDNESS", "MIN_MEMBERS", "MIN_OVERLAP",
           "MIN_RELIANCE", "MIN_SHARE", "REGION_LEVEL", "Box", "ClassAnalysis", "ClusterStats", "analyse_class",
           "box_share", "cell_bounds", "cluster_stats", "confirm", "refine_labels", "region_box", "suspicion"]
