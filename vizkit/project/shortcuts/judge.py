"""The detector at the tensor level: maps -> SpRAy per class -> merged clusters -> evidence -> verdict.

``judge_class(model, x, maps, recipients, cls, thresholds)`` judges one class from its images ``x`` (N, C, H, W),
their attribution maps (N, H, W) for that class and images of the other classes (the transplant's recipients);
``judge(model, x, y, recipients_x, recipients_y, thresholds)`` does every class and ranks them by suspicion,
highest first (so the most suspicious class is detailed even when nothing is flagged).

A class with fewer than ``MIN_CLASS_IMAGES`` images gets a warning: the eigengap heuristic chooses among up to
``spray.MAX_CLUSTERS`` (8) clusters, and a cluster is judged only with ``MIN_MEMBERS`` (3) images or more, so
below 8 x 3 = 24 images a split into the clusters it would look for cannot even exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vizkit.project.shortcuts.evidence import Evidence, carriers, cluster_evidence, pixel_mask, relevance_region
from vizkit.project.shortcuts.maps import attribution_maps
from vizkit.project.shortcuts.merge import Group, merge_clusters
from vizkit.project.shortcuts.spray import (
    DEFAULT_SIDE,
    MAX_CLUSTERS,
    MIN_CLUSTER,
    Spectral,
    pool_maps,
    spectral_clusters,
)
from vizkit.project.shortcuts.verdict import Thresholds, score

if TYPE_CHECKING:
    from vizkit.project.shortcuts.tcav import TcavResult

MIN_MEMBERS = MIN_CLUSTER
MIN_CLASS_IMAGES = MIN_MEMBERS * MAX_CLUSTERS


@dataclass(eq=False)  # compared by identity: fields are arrays
class ClusterVerdict:
    """A merged cluster: ``members`` index the class's images, ``parts`` the spectral clusters it joins."""

    group: Group
    evidence: Evidence | None
    score: float
    tcav: TcavResult | None = None

    @property
    def members(self) -> np.ndarray:
        return self.group.members


@dataclass(eq=False)
class ClassVerdict:
    class_index: int
    images: np.ndarray
    spectral: Spectral
    clusters: list[ClusterVerdict] = field(default_factory=list)
    suspicion: float = 0.0
    flagged: bool = False
    warning: str | None = None
    name: str = ""

    @property
    def top(self) -> ClusterVerdict | None:
        """The most suspicious cluster."""
        judged = [c for c in self.clusters if c.evidence is not None]
        return max(judged, key=lambda c: c.score) if judged else None

    def split_merge(self) -> str:
        """How the spectral clusters were joined, e.g. 'k=4 spectral clusters -> 2: {0, 2}, {1}, {3}' ."""
        parts = ", ".join("{" + ", ".join(map(str, c.group.parts)) + "}" + (f" {c.group.split}" * bool(c.group.split))
                          for c in self.clusters)
        return f"k={self.spectral.k} spectral clusters -> {len(self.clusters)}: {parts}"


def small_class_warning(cls: int, n: int) -> str | None:
    if n >= MIN_CLASS_IMAGES:
        return None
    return (f"class {cls} has {n} images: SpRAy needs at least {MIN_CLASS_IMAGES} ({MAX_CLUSTERS} clusters of "
            f"{MIN_MEMBERS}) for its clusters to mean anything; add images of this class")


def split_carriers(x: torch.Tensor, groups: list[Group], pooled: np.ndarray, recipients: torch.Tensor
                   ) -> list[Group]:
    """Each group whose region's pattern only some members carry (``evidence.carriers``; both parts at least
    ``MIN_MEMBERS``) becomes two: the carriers, then the rest (same spectral parts)."""
    out = []
    for g in groups:
        others = torch.cat([x[torch.from_numpy(np.setdiff1d(np.arange(len(x)), g.members))], recipients])
        has = carriers(x[torch.from_numpy(g.members)], others, pixel_mask(g.region, (x.shape[-2], x.shape[-1])))
        if MIN_MEMBERS <= has.sum() <= has.size - MIN_MEMBERS:
            for part, kind in ((g.members[has], "carriers"), (g.members[~has], "rest")):
                out.append(Group(part, g.parts, relevance_region(pooled[part]), kind))
        else:
            out.append(g)
    return out


def judge_class(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, recipients: torch.Tensor, cls: int,
                th: Thresholds, *, side: int = DEFAULT_SIDE, n_clusters: int | None = None, embed: bool = False
                ) -> ClassVerdict:
    """Verdict on one class (module docstring); ``embed``: also the t-SNE picture of its maps."""
    pooled = pool_maps(maps.float().cpu(), side).numpy()
    x = x.cpu()
    spectral = spectral_clusters(pooled.reshape(len(pooled), -1), n_clusters, embed=embed)
    groups = split_carriers(x, merge_clusters(x, pooled, spectral.labels, recipients.cpu(), th.merge_iou,
                                              th.merge_similarity), pooled, recipients.cpu())
    clusters = []
    for g in groups:
        if g.members.size < MIN_MEMBERS:
            clusters.append(ClusterVerdict(g, None, 0.0))
            continue
        ev = cluster_evidence(model, x, pooled, g.members, recipients.cpu(), cls, g.region)
        clusters.append(ClusterVerdict(g, ev, score(ev, th)))
    suspicion = max((c.score for c in clusters), default=0.0)
    return ClassVerdict(cls, np.arange(len(x)), spectral, clusters, suspicion, suspicion >= th.flag,
                        small_class_warning(cls, len(x)))


def judge(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipients_x: torch.Tensor,
          recipients_y: torch.Tensor, th: Thresholds, *, method: str | None = None, batch: int = 64,
          side: int = DEFAULT_SIDE) -> list[ClassVerdict]:
    """Every class of ``y``: maps with ``method`` (default the fitted one) for the labelled class, then
    ``judge_class`` with the other classes' images of ``recipients_x`` as recipients; by suspicion."""
    method = method or th.method
    maps = torch.cat([attribution_maps(model, x[i:i + batch], y[i:i + batch], method)[0].cpu()
                      for i in range(0, len(x), batch)])
    verdicts = []
    for cls in sorted(set(y.tolist())):
        idx = np.flatnonzero((y == cls).numpy())
        v = judge_class(model, x[idx], maps[idx], recipients_x[recipients_y != cls], int(cls), th, side=side)
        v.images = idx
        verdicts.append(v)
    verdicts.sort(key=lambda v: (-v.suspicion, v.class_index))
    return verdicts


__all__ = ["MIN_CLASS_IMAGES", "MIN_MEMBERS", "ClassVerdict", "ClusterVerdict", "judge", "judge_class",
           "small_class_warning", "split_carriers"]
