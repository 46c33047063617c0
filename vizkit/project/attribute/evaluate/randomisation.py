"""The model-randomisation sanity check (Adebayo et al. 2018) for any attribution method.

The same method, with the same targets, on a deep copy of the model whose every parameter is redrawn from a normal
distribution with that tensor's own mean and standard deviation (``vizkit.project.sanity.randomise_``: activations
keep their scale, docs/DESIGN.md "Traps"); buffers are kept. The score is Spearman's rank correlation of the two
maps' per-pixel magnitude (``|attribution|`` summed over channels), per image. A method whose map survives the
randomisation (correlation near 1) shows the image or the architecture, not what the model learned: lower is
better. The user's model is never touched.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from vizkit.project.attribute.compute import attribute
from vizkit.project.attribute.inputs import AttrTarget, guarded, resolve_target
from vizkit.project.sanity import randomise_, rank_correlation


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy with every parameter redrawn (see the module docstring)."""
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    for module in twin.modules():
        randomise_(module, generator)
    return twin


def pixel_magnitude(attribution: torch.Tensor) -> np.ndarray:
    return attribution.detach().abs().sum(dim=1).cpu().double().numpy()


def randomisation_check(model: nn.Module, x: torch.Tensor, method: str, target: AttrTarget = None, *,
                        seed: int = 0, attribution: torch.Tensor | None = None, batch_size: int = 16,
                        **options: Any) -> np.ndarray:
    """(N,) rank correlation of ``method``'s map on the model and on a randomised copy (targets fixed to the
    original model's, so both explain the same class). ``attribution``: the original map when already computed;
    ``options`` go to ``attribute``. Random methods see the same seed on both models."""
    with guarded(model):
        resolved = resolve_target(model, x, target, batch_size)
    twin = randomised_copy(model, seed)
    if attribution is None:
        torch.manual_seed(seed)
        attribution = attribute(model, x, method, resolved, batch_size=batch_size, **options)
    torch.manual_seed(seed)
    randomised = attribute(twin, x, method, resolved, batch_size=batch_size, **options)
    return map_correlation(attribution, randomised)


def map_correlation(attribution: torch.Tensor, randomised: torch.Tensor) -> np.ndarray:
    """(N,) Spearman correlation of the two maps' per-pixel magnitudes, image by image."""
    a, b = pixel_magnitude(attribution), pixel_magnitude(randomised)
    return np.array([rank_correlation(a[i], b[i]) for i in range(a.shape[0])])


__all__ = ["map_correlation", "randomisation_check", "randomised_copy"]
