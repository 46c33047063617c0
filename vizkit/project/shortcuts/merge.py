"""Clusters that follow the mark: spectral clusters of one class whose evidence shares a place and a pattern are
one finding. Spectral clustering groups maps by where *all* their evidence is, so a mark seen beside objects at
different places is cut into two to four clusters, each with the mark's region in common.

Two clusters are joined when their regions (``evidence.relevance_region``) overlap, ``IoU >= iou``, and the
region's content looks alike: the cosine of the two clusters' mean pixels over the union of their regions, each
minus the reference mean there (the recipients': what the place shows on an ordinary image), is ``>= similarity``.
Joins chain (union-find). Both thresholds are fitted on the lab family (``vizkit.lab.fit``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vizkit.project.shortcuts.evidence import pixel_mask, relevance_region


@dataclass(eq=False)  # compared by identity: fields are arrays
class Group:
    """A merged cluster: ``members`` index the class's images; ``parts`` the spectral labels it joins."""

    members: np.ndarray
    parts: list[int]
    region: np.ndarray
    split: str = ""  # "carriers" or "rest" when a carrier split cut the parts in two (``judge.split_carriers``)


def region_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 0.0


def content_similarity(a: torch.Tensor, b: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """Cosine of ``mean(a) - mean(reference)`` and ``mean(b) - mean(reference)`` over the masked pixels."""
    if not bool(mask.any()) or len(a) == 0 or len(b) == 0:
        return 0.0
    ref = reference[:, :, mask].double().mean(dim=0) if len(reference) else 0.0
    da = (a[:, :, mask].double().mean(dim=0) - ref).flatten()
    db = (b[:, :, mask].double().mean(dim=0) - ref).flatten()
    norm = float(da.norm() * db.norm())
    return float(da @ db) / norm if norm > 0 else 0.0


def pair_figures(x: torch.Tensor, pooled: np.ndarray, labels: np.ndarray, reference: torch.Tensor
                 ) -> tuple[list[np.ndarray], dict[tuple[int, int], tuple[float, float]]]:
    """Each spectral cluster's region, and (IoU, similarity) of every pair of clusters (i < j)."""
    k = int(labels.max()) + 1 if labels.size else 0
    regions = [relevance_region(pooled[labels == c]) for c in range(k)]
    hw = (x.shape[-2], x.shape[-1])
    pairs = {}
    for i in range(k):
        for j in range(i + 1, k):
            mask = pixel_mask(regions[i] | regions[j], hw)
            pairs[(i, j)] = (region_iou(regions[i], regions[j]),
                             content_similarity(x[torch.from_numpy(labels == i)], x[torch.from_numpy(labels == j)],
                                                reference, mask))
    return regions, pairs


def merge_clusters(x: torch.Tensor, pooled: np.ndarray, labels: np.ndarray, reference: torch.Tensor,
                   iou: float, similarity: float) -> list[Group]:
    """Groups of spectral clusters joined by the rule of the module docstring, largest first."""
    regions, pairs = pair_figures(x, pooled, labels, reference)
    parent = list(range(len(regions)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for (i, j), (o, s) in pairs.items():
        if o >= iou and s >= similarity:
            parent[root(j)] = root(i)
    groups = []
    for r in sorted({root(i) for i in range(len(regions))}):
        parts = [c for c in range(len(regions)) if root(c) == r]
        members = np.flatnonzero(np.isin(labels, parts))
        region = regions[parts[0]] if len(parts) == 1 else relevance_region(pooled[members])
        groups.append(Group(members, parts, region))
    groups.sort(key=lambda g: (-g.members.size, g.parts[0]))
    return groups


__all__ = ["Group", "content_similarity", "merge_clusters", "pair_figures", "region_iou"]
