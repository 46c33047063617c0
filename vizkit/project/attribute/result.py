"""What ``vizkit attribute`` hands to its writer: plain numpy and Python values, no torch objects."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vizkit.project.attribute.evaluate.suite import AttributeEvaluation
from vizkit.project.results import Prediction


@dataclass
class MethodMaps:
    """One method's maps. ``label``: as the user named it (``lrp:epsilon-plus``), the npz key's prefix;
    ``attribution`` (N, C, H, W) float32, or (N, 1, H, W) for a CAM; ``library``: who computed it (``captum``,
    ``zennit``, ``vizkit``); ``signed``: whether the sign means something (a diverging colour map);
    ``seconds``: wall time of the whole batch."""

    label: str
    method: str
    library: str
    signed: bool
    attribution: np.ndarray
    seconds: float = 0.0


@dataclass
class AttributeResult:
    """Everything ``vizkit attribute`` writes for a set of N images (float32 arrays unless stated).

    names (N,): the image files' names; input (N, C, H, W) exactly as fed to the model; images (N, H, W, 3) uint8
    for display; targets (N,) int64 (-1 for a target function); target_names (N,); scores (N,): the target's
    softmax probability (a target function's own value); maps: one ``MethodMaps`` per method, in the order asked;
    layer: the CAM layer (None when no CAM ran); predictions: each image's top-5."""

    names: list[str]
    input: np.ndarray
    images: np.ndarray
    targets: np.ndarray
    target_names: list[str]
    scores: np.ndarray
    maps: list[MethodMaps]
    layer: str | None = None
    baseline: str = "black"
    predictions: list[list[Prediction]] = field(default_factory=list)
    evaluation: AttributeEvaluation | None = None  # --evaluate
    notes: list[str] = field(default_factory=list)

    def attribution(self, label: str) -> np.ndarray:
        return next(m.attribution for m in self.maps if m.label == label)


__all__ = ["AttributeResult", "MethodMaps"]
