"""What a dream run returns: one row per image (an objective repeats ``diversity`` times)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DreamResult"]


@dataclass
class DreamResult:
    """``objectives`` (N,) names such as ``features.29:12`` or ``class:1``; ``images`` (N, 3, H, W) float32 in
    [0, 1]; ``scores`` (N,) each objective on its final image, untransformed, at the model's input size;
    ``reference`` (N,) the objective's largest value over data (NaN unless :func:`.reference` filled it);
    ``alpha`` (N, H, W) MACO's accumulated gradient magnitude, or None; ``settings`` what made them (manifest);
    ``labels`` (N,) what people read beside each image (``class:281 tabby``; default the objective names);
    ``notes`` what the pages must say about this result."""

    objectives: list[str]
    images: np.ndarray
    scores: np.ndarray
    reference: np.ndarray
    alpha: np.ndarray | None = None
    settings: dict = field(default_factory=dict)
    history: np.ndarray | None = None  # (steps, N) the training-time objective values, for checks and plots
    labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def label(self, i: int) -> str:
        return self.labels[i] if i < len(self.labels) else self.objectives[i]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays for ``dream.npz`` (``objectives`` as a unicode array)."""
        out = {"objectives": np.array(self.objectives, dtype=str), "images": self.images, "scores": self.scores,
               "reference": self.reference}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        return out
