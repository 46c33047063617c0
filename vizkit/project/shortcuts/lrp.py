"""LRP relevance maps for the shortcut detector (Lapuschkin et al. 2019 ran SpRAy on LRP maps), through the one
LRP path of vizkit: ``vizkit.project.attribute.lrp`` (zennit composite, the model's canonizers, hooks only for the
call). The map is the relevance summed over colour channels, positive part: the evidence *for* the class, as for
the other methods of ``maps``. The model is left exactly as it was (``preserve_model_state``).
"""
from __future__ import annotations

import torch
from torch import nn

from vizkit.capture.state import preserve_model_state
from vizkit.project.attribute.lrp import COMPOSITES, DEFAULT_COMPOSITE, lrp_batch, make_composite


def lrp_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, name: str = DEFAULT_COMPOSITE
             ) -> torch.Tensor:
    """(N, H, W) float32 >= 0 for each image's class ``classes[n]`` under the zennit composite ``name``."""
    bounds = (float(x.min()), float(x.max()))
    with preserve_model_state(model):
        relevance = lrp_batch(model, x, [int(c) for c in classes.tolist()], make_composite(name, model, bounds))
    return relevance.sum(dim=1).clamp(min=0).float().detach()


__all__ = ["COMPOSITES", "lrp_maps"]
