"""The strongest feature maps of each layer for one image: one forward pass, stopped after the deepest layer.

Ranking: by each map's maximum activation, descending; equal maxima by the map's mean, descending; then by channel
index. The model is left exactly as it was (``preserve_model_state``; the recorder's hooks live only inside the
call).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vizkit.capture.probe import model_device
from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, UserInputError

DEFAULT_TOP = 64


@dataclass
class ActivationGrid:
    """One layer's top feature maps for one image, as plain numpy.

    channels (N,) int64, strongest first; maps (N, h, w) float32, raw; maxima (N,) float32 (each map's max);
    means (N,) float32; total_channels: how many maps the layer has; value_range: (min, max) over all of the
    layer's maps (not only the N shown).
    """

    layer: str
    channels: np.ndarray
    maps: np.ndarray
    maxima: np.ndarray
    means: np.ndarray
    total_channels: int
    value_range: tuple[float, float]


def rank_channels(maps: torch.Tensor) -> torch.Tensor:
    """Channel indices of a (C, h, w) tensor ordered by max (desc), then mean (desc), then index (asc)."""
    flat = maps.detach().reshape(maps.shape[0], -1).double()
    maxima = flat.amax(dim=1).cpu().numpy()
    means = flat.mean(dim=1).cpu().numpy()
    order = np.lexsort((np.arange(len(maxima)), -means, -maxima))  # last key is the primary one
    return torch.as_tensor(order, dtype=torch.long)


def grid_from_output(layer: str, output: torch.Tensor, top: int = DEFAULT_TOP) -> ActivationGrid:
    """The top ``top`` maps of one recorded (1, C, h, w) output."""
    if output.dim() != 4 or output.shape[0] != 1:
        raise ModelError(f"layer '{layer}' outputs shape {tuple(output.shape)}, not a (1, C, H, W) feature map; "
                         "pick a convolutional layer ('vizkit layers' lists output shapes)")
    maps = output.detach()[0].float()
    if not torch.isfinite(maps).all():
        raise ModelError(f"layer '{layer}' produced non-finite activations (NaN or inf); check the weights")
    order = rank_channels(maps)[:top]
    chosen = maps[order.to(maps.device)].cpu()
    return ActivationGrid(
        layer=layer,
        channels=order.numpy().astype(np.int64),
        maps=chosen.numpy().astype(np.float32),
        maxima=chosen.reshape(len(order), -1).amax(dim=1).numpy().astype(np.float32),
        means=chosen.reshape(len(order), -1).mean(dim=1).numpy().astype(np.float32),
        total_channels=int(maps.shape[0]),
        value_range=(float(maps.min()), float(maps.max())),
    )


def activation_grids(model: nn.Module, x: torch.Tensor, layers: Sequence[str],
                     top: int = DEFAULT_TOP) -> list[ActivationGrid]:
    """Top ``top`` feature maps of each layer for one input ``x`` (1, C, H, W), in the order the layers are given.

    One forward pass in eval mode without gradients, stopped once the deepest requested layer has run.
    """
    if top < 1:
        raise UserInputError(f"--top must be at least 1, got {top}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise UserInputError(f"input must be one image of shape (1, C, H, W), got {tuple(x.shape)}")
    names = list(dict.fromkeys(layers))
    if not names:
        raise UserInputError("no layers given; name at least one (see 'vizkit layers')")
    x = x.to(model_device(model))
    with preserve_model_state(model), torch.no_grad(), Recorder(model, names, stop=True) as rec:
        rec.run(x)
        return [grid_from_output(name, rec.outputs[name], top) for name in names]


__all__ = ["DEFAULT_TOP", "ActivationGrid", "activation_grids", "grid_from_output", "rank_channels"]
