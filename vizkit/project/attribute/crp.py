"""Concept relevance (CRP; Achtibat et al. 2023) through zennit, on zennit-crp's definition.

For class t and channel c of layer L: run LRP with a composite from the output (relevance seeded with the class's
score, ``one_hot * logits``) down to L's output, giving the relevance map ``R_L`` (N, C_L, h, w). The channel's
*conditional relevance* is ``sum_hw R_L[:, c]``; its *conditional heatmap* is the input relevance when the backward
continues from L with every channel but c masked to zero. This is what zennit-crp's ``CondAttribution`` computes
for the condition ``{"y": [t], L: [c]}`` with ``ChannelConcept`` (``attribute(..., abs_norm=False)``).

Here one forward and one backward to L serve every unit (the relevance above L does not depend on the unit); only
the part below L is run once per unit. zennit-crp's default partial backward (``exclude_parallel=True``) records
the layer's relevance twice over (its ``.grad`` is both an ``autograd.grad`` input and a ``backward`` root); its
heatmaps, and its relevances with ``exclude_parallel=False``, equal these (tests/test_attribute_crp.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vizkit.capture.recorder import resolve_layers
from vizkit.errors import ModelError, UserInputError
from vizkit.project.attribute.inputs import AttrTarget, check_images, guarded, objective, resolve_target
from vizkit.project.attribute.lrp import DEFAULT_COMPOSITE, make_composite


@dataclass
class ConditionalRelevance:
    """units: the channels asked for; relevance (N, U): each unit's conditional relevance for the target;
    heatmaps (N, U, C, H, W): its conditional input relevance; layer_relevance (N, C_L): every channel's."""

    units: list[int]
    relevance: torch.Tensor
    heatmaps: torch.Tensor
    layer_relevance: torch.Tensor


def conditional_relevance(model: nn.Module, x: torch.Tensor, layer: str, units: Sequence[int],
                          target: AttrTarget = None, composite: str = DEFAULT_COMPOSITE) -> ConditionalRelevance:
    """CRP's conditional relevance and heatmaps of ``units`` (channels of ``layer``) for ``target`` (see the module
    docstring); the model is left exactly as it was."""
    check_images(x)
    module = resolve_layers(model, [layer])[layer]
    units = [int(u) for u in units]
    with guarded(model, inplace_off=True):
        resolved = resolve_target(model, x, target, x.shape[0])
        zennit = make_composite(composite, model, (float(x.min()), float(x.max())))
        seen: list[torch.Tensor] = []

        def keep(m: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and not seen:
                seen.append(output)

        inp = x.detach().clone().requires_grad_(True)
        handle = module.register_forward_hook(keep)
        try:
            with torch.enable_grad(), zennit.context(model) as modified:
                score = objective(modified(inp), resolved)
                if not seen or not seen[0].requires_grad:
                    raise ModelError(f"layer '{layer}' gave no output the target depends on; pick a layer on the "
                                     "path to the output")
                maps = seen[0]
                if units and not 0 <= min(units) <= max(units) < maps.shape[1]:
                    raise UserInputError(f"units {units} are outside layer '{layer}''s {maps.shape[1]} channels")
                (rel,) = torch.autograd.grad(score, maps, score.detach(), retain_graph=True)
                heatmaps = []
                for i, u in enumerate(units):
                    masked = torch.zeros_like(rel)
                    masked[:, u] = rel[:, u]
                    (h,) = torch.autograd.grad(maps, inp, masked, retain_graph=i + 1 < len(units))
                    heatmaps.append(h)
        finally:
            handle.remove()
    per_channel = rel.detach().flatten(2).sum(dim=2)
    stacked = torch.stack(heatmaps, dim=1) if heatmaps else x.new_zeros((x.shape[0], 0, *x.shape[1:]))
    return ConditionalRelevance(units, per_channel[:, units], stacked.detach(), per_channel)


__all__ = ["ConditionalRelevance", "conditional_relevance"]
