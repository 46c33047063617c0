"""``ShortcutsResult``: what ``vizkit shortcuts`` found, plain numpy (no model, no torch), re-exported by
``vizkit.project.results`` so the one writer picks its files by type."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vizkit.project.shortcuts.clusters import ClassAnalysis, box_share


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
    classes: list[ClassAnalysis]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] | None = None
    pictures: dict[int, np.ndarray] = field(default_factory=dict)

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
                out[idx] = box_share(self.display[idx], scale_box(cl.box, self.input_hw, self.display.shape[1:]))
        return out

    @property
    def flagged(self) -> list[int]:
        """Class indices with a compact cluster, by suspicion."""
        return [a.class_index for a in self.classes if a.flagged]

    def exemplar_indices(self) -> list[int]:
        """Image indices of every cluster's exemplars (the pictures the PDF and the gallery show)."""
        return sorted({int(a.images[i]) for a in self.classes for c in a.clusters for i in c.exemplars})

    def to_json(self) -> dict:
        """The schema of shortcuts.json (classes already sorted by suspicion, descending)."""
        return {"method": self.method, "layer": self.layer, "classes": [{
            "class": c.class_index, "name": c.name, "images": int(c.images.size), "suspicion": c.suspicion,
            "eigengap": c.spectral.eigengap, "clusters": [{
                "members": [self.paths[int(i)] for i in c.images[cl.members]], "size": cl.size,
                "compact": cl.compact, "box": [int(v) for v in cl.box], "relevance_in_box": cl.relevance_in_box,
            } for cl in c.clusters]} for c in self.classes]}

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """paths, explained class, cluster (within the class), share in own cluster box, pooled and display maps,
        embedding; per analysed class its eigenvalues (``eigenvalues_<class>``)."""
        arrays = {"paths": np.array(self.paths), "explained": self.explained, "cluster": self.cluster,
                  "share_in_box": self.share, "maps": self.pooled, "display_maps": self.display,
                  "embedding": self.embedding}
        for a in self.classes:
            arrays[f"eigenvalues_{a.class_index}"] = a.spectral.eigenvalues
        return arrays


def scale_box(box: tuple[int, int, int, int], src: tuple[int, int], dst: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``box`` (y0, x0, y1, x1) in ``src`` pixels as the covering box in ``dst`` pixels."""
    (h, w), (dh, dw) = src, dst
    y0, x0, y1, x1 = box
    return (y0 * dh) // h, (x0 * dw) // w, -((-y1 * dh) // h), -((-x1 * dw) // w)


__all__ = ["ShortcutsResult", "scale_box"]
