"""Layer-wise relevance propagation, computed by zennit: vizkit picks the composite and the canonizer, seeds the
backward and removes every hook in ``finally``.

Composites by name (zennit's classes): ``epsilon-plus-flat`` (default; epsilon in dense layers, z+ in
convolutions, flat at the first layer), ``epsilon-plus``, ``epsilon-alpha2-beta1``, ``epsilon-alpha2-beta1-flat``,
``epsilon-gamma-box`` (the first layer's box bounds are the input's minimum and maximum over the whole input).
Canonizers: torchvision ResNets get zennit's ``ResNetCanonizer`` (the residual sum becomes a module the rules see),
torchvision VGGs ``VGGCanonizer``, anything else ``SequentialMergeBatchNorm`` (batch norm folded into the
preceding linear layer, undone afterwards).

Seeding follows zennit's ``Gradient`` attributor: the relevance starts as the target's own score (``one_hot *
logits``); for a target function ``f`` the backward starts at ``f(logits)`` seeded with its value.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.attribute.inputs import objective
from vizkit.project.targets import TargetFn

COMPOSITES = ("epsilon-plus-flat", "epsilon-plus", "epsilon-alpha2-beta1", "epsilon-alpha2-beta1-flat",
              "epsilon-gamma-box")
DEFAULT_COMPOSITE = "epsilon-plus-flat"


def canonizers_for(model: nn.Module) -> list[Any]:
    import torchvision
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    if isinstance(model, torchvision.models.ResNet):
        return [ResNetCanonizer()]
    if isinstance(model, torchvision.models.VGG):
        return [VGGCanonizer()]
    return [SequentialMergeBatchNorm()]


def make_composite(name: str, model: nn.Module, bounds: tuple[float, float] | None = None) -> Any:
    """A fresh zennit composite (with the model's canonizers) for ``name``."""
    from zennit import composites as zc

    classes: dict[str, Callable[..., Any]] = {
        "epsilon-plus-flat": zc.EpsilonPlusFlat, "epsilon-plus": zc.EpsilonPlus,
        "epsilon-alpha2-beta1": zc.EpsilonAlpha2Beta1, "epsilon-alpha2-beta1-flat": zc.EpsilonAlpha2Beta1Flat}
    canonizers = canonizers_for(model)
    if name == "epsilon-gamma-box":
        if bounds is None:
            raise UserInputError("epsilon-gamma-box needs the input's bounds")
        return zc.EpsilonGammaBox(low=bounds[0], high=bounds[1], canonizers=canonizers)
    if name not in classes:
        raise UserInputError(f"unknown LRP composite '{name}'; choose from {', '.join(COMPOSITES)}")
    return classes[name](canonizers=canonizers)


def lrp_batch(model: nn.Module, x: torch.Tensor, target: list[int] | TargetFn, composite: Any) -> torch.Tensor:
    """Relevance at the input for one batch. The composite's hooks and canonizers exist only inside this call."""
    x = x.detach().requires_grad_(True)  # an alias: the caller's tensor keeps its flag, nothing is copied
    with torch.enable_grad(), composite.context(model) as modified:
        score = objective(modified(x), target)
        (relevance,) = torch.autograd.grad(score, x, score.detach())
    return relevance


__all__ = ["COMPOSITES", "DEFAULT_COMPOSITE", "canonizers_for", "lrp_batch", "make_composite"]
