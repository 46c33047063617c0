"""Does the model *use* a compact cluster's region? Remove it and watch the class probability.

Attribution says where the evidence is; for input-level methods such as gradient x input, a high-contrast patch
gets evidence from its magnitude even in a model that never learned it (the lab's control, trained without the
mark, shows the mark in a third of its maps). So a compact cluster is confirmed by deletion: in each member, the
cluster's box grown by ``margin`` pixels on each side (so a mark the pooling grid cut is covered whole) is set to 0
in the model's input space (the mean colour of the normalisation, the reference of gradient x input), and
``reliance`` is the median over members of ``p_class(image) - p_class(image without the box)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vizkit.capture.state import preserve_model_state


def remove_box(x: torch.Tensor, box: tuple[int, int, int, int], margin: int) -> torch.Tensor:
    """A copy of ``x`` (N, C, H, W) with the box grown by ``margin`` (clipped) set to 0."""
    y0, x0, y1, x1 = box
    h, w = x.shape[-2:]
    out = x.clone()
    out[..., max(y0 - margin, 0):min(y1 + margin, h), max(x0 - margin, 0):min(x1 + margin, w)] = 0
    return out


def probability_drop(model: nn.Module, x: torch.Tensor, cls: torch.Tensor, box: tuple[int, int, int, int],
                     margin: int = 0) -> np.ndarray:
    """Per image of ``x``: p(cls) minus p(cls) with the box removed (positive: the model needed the box)."""
    with preserve_model_state(model), torch.no_grad():
        both = torch.cat([x, remove_box(x, box, margin)])
        p = torch.softmax(model(both).float(), dim=1)
    rows = torch.arange(x.shape[0], device=p.device)
    index = cls.to(p.device).long()
    return (p[rows, index] - p[rows + x.shape[0], index]).cpu().numpy()


__all__ = ["probability_drop", "remove_box"]
