"""LRP relevance maps through zennit (Lapuschkin et al. 2019 ran SpRAy on LRP maps).

``lrp_maps(model, x, classes, composite)``: zennit's ``Gradient`` attributor under a named composite, the output
relevance a one-hot of each image's class; the map is the relevance summed over colour channels, positive part
(the evidence *for* the class, as for the other methods of ``maps``). BatchNorm layers that follow a linear layer
in a ``Sequential`` are merged into it first (zennit's ``SequentialMergeBatchNorm``, undone on exit), as LRP
rules assume. The model is left exactly as it was (``preserve_model_state``; zennit removes its hooks and
canonizers when its context exits, also after an exception).

Composites (``COMPOSITES``): ``epsilon-plus-flat`` (zennit's recommended one for CNNs: flat rule at the input
layer, z+ at convolutions, epsilon at dense layers), ``epsilon-alpha2-beta1-flat`` and ``epsilon-plus``.

The integrator's note: ``vizkit.project.attribute`` has its own ``lrp``; this one only exists so the shortcut
detector can use LRP before the two meet (same zennit calls; keep one).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import Composite, EpsilonAlpha2Beta1Flat, EpsilonPlus, EpsilonPlusFlat

from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError

COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon-plus-flat": EpsilonPlusFlat,
    "epsilon-alpha2-beta1-flat": EpsilonAlpha2Beta1Flat,
    "epsilon-plus": EpsilonPlus,
}


def composite(name: str) -> Composite:
    """A fresh zennit composite by name, with BatchNorm merging."""
    if name not in COMPOSITES:
        raise UserInputError(f"unknown LRP composite '{name}': use one of {', '.join(COMPOSITES)}")
    return COMPOSITES[name](canonizers=[SequentialMergeBatchNorm()])


def lrp_relevance(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, name: str = "epsilon-plus-flat"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input relevance (N, C, H, W), logits (N, K)) for each image's class ``classes[n]`` under composite ``name``."""
    comp = composite(name)
    with preserve_model_state(model), torch.enable_grad(), Gradient(model=model, composite=comp) as attributor:
        logits = model(x.detach())
        if int(classes.max()) >= logits.shape[1]:
            raise UserInputError(f"class {int(classes.max())} does not exist: the model has {logits.shape[1]} classes")
        one_hot = torch.nn.functional.one_hot(classes.long(), logits.shape[1]).to(logits.dtype)
        out, relevance = attributor(x.detach().clone(), one_hot)
    return relevance.detach(), out.detach()


def lrp_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, name: str = "epsilon-plus-flat"
             ) -> torch.Tensor:
    """(N, H, W) float32 >= 0: relevance summed over channels, positive part."""
    relevance, _ = lrp_relevance(model, x, classes, name)
    return relevance.sum(dim=1).clamp(min=0).float()


__all__ = ["COMPOSITES", "composite", "lrp_maps", "lrp_relevance"]
