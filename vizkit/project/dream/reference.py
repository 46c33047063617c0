"""What the data gives: each objective's largest value over real images, to set beside its dream's score."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.project.dream.forward import model_device
from vizkit.project.dream.objectives import OUTPUT, Objective, channel

__all__ = ["reference", "reference_values"]


def reference_values(model: nn.Module, objectives: Sequence[Objective],
                     batches: torch.Tensor | Iterable[torch.Tensor]) -> np.ndarray:
    """(len(objectives),) float32: each objective's largest value over the images of ``batches`` (model inputs,
    already preprocessed: a (N, C, H, W) tensor or an iterable of them), the same function the dream's score is."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    layers = list(dict.fromkeys(layer for o in objectives for layer in o.layers if layer != OUTPUT))
    needs_output = any(OUTPUT in o.layers for o in objectives)
    best = torch.full((len(objectives),), -torch.inf, dtype=torch.float64)
    seen = 0
    device = model_device(model)
    with preserve_model_state(model), torch.no_grad():
        for x in batches:
            with Recorder(model, layers, stop=not needs_output) as rec:
                out = rec.run(x.to(device))
                acts = dict(rec.outputs)
            if needs_output and isinstance(out, torch.Tensor):
                acts[OUTPUT] = out
            values = torch.stack([o({k: acts[k] for k in o.layers}).double().cpu() for o in objectives])
            best = torch.maximum(best, values.max(dim=1).values)
            seen += x.shape[0]
    if seen == 0:
        raise UserInputError("reference needs at least one image: the data folder gave none")
    return best.numpy().astype(np.float32)


def reference(model: nn.Module, layer: str, units: Sequence[int],
              batches: torch.Tensor | Iterable[torch.Tensor]) -> np.ndarray:
    """Each unit's largest channel-mean activation at ``layer`` over the images (see :func:`reference_values`)."""
    return reference_values(model, [channel(layer, u) for u in units], batches)
