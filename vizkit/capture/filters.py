"""Read convolution filters and their per-filter RMS, flagging dead and dominant filters.

Definitions (one value per output filter ``o`` of a ``Conv2d`` with weight ``(out, in/groups, kh, kw)``):

- ``rms[o] = sqrt(mean(weight[o] ** 2))`` over its ``in/groups * kh * kw`` weights; the bias is not included.
- **dominant**: ``rms[o] > radius`` (default 0.1). Zeiler & Fergus (2014, section 3) renormalise "each filter in
  the convolutional layers whose RMS value exceeds a fixed radius of 10^-1 ... to this fixed radius", because a few
  filters with large weights dominated their layer. Networks trained without that constraint (and every
  BatchNorm network, where the weight scale is arbitrary) often exceed it: compare counts within a layer.
- **dead**: ``rms[o] == 0`` or ``rms[o] < dead_ratio * median(rms of the layer)`` (default ratio 1e-3): a filter
  three orders of magnitude weaker than its layer's typical filter contributes nothing the next layer can see.

Only weights are read (no forward pass, no hooks), except by ``running_convs``, which runs one forward for shapes
with hooks inside a ``try``/``finally``: the model is left exactly as it was.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vizkit.capture.hooks import Hooks
from vizkit.capture.recorder import resolve_layers
from vizkit.capture.state import forward_for_shapes, preserve_model_state
from vizkit.errors import ModelError, UserInputError, close_matches

DEFAULT_RADIUS = 0.1
DEAD_RATIO = 1e-3


@dataclass
class FilterStats:
    """One conv layer's filters and statistics, as plain numpy.

    weight (out, in/groups, kh, kw) float32, raw; rms (out,) float32; dead, dominant (out,) bool;
    groups as in the layer (depthwise: groups == in_channels); radius and dead_ratio as used for the flags.
    """

    layer: str
    weight: np.ndarray
    rms: np.ndarray
    dead: np.ndarray
    dominant: np.ndarray
    groups: int = 1
    radius: float = DEFAULT_RADIUS
    dead_ratio: float = DEAD_RATIO

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.weight.shape)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of every ``nn.Conv2d`` (subclasses such as timm's ``Conv2dSame`` included), in definition order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, nn.Conv2d)]


def running_convs(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the ``Conv2d`` layers that run in an eval-mode forward, in definition order: GoogLeNet's and
    Inception's auxiliary heads do not, so pictures of them show weights no image ever meets. The forward runs on
    meta copies of the model's tensors when it can (shapes only), else on zeros; a forward that fails, or runs no
    conv, gives every conv."""
    ran: set[str] = set()
    try:
        with Hooks() as hooks:
            for name, m in model.named_modules():
                if name and isinstance(m, nn.Conv2d):
                    hooks.forward(m, lambda *_, name=name: ran.add(name))
            with preserve_model_state(model), torch.no_grad():
                forward_for_shapes(model, input_shape)
    except Exception:  # noqa: BLE001 - a forward that fails on zeros cannot tell: every conv then counts
        return conv_layers(model)
    return [name for name in conv_layers(model) if name in ran] or conv_layers(model)


def filter_rms(weight: np.ndarray) -> np.ndarray:
    """Per-output-filter RMS of a (out, ...) weight, computed in float64 and returned as float32."""
    w = np.asarray(weight, dtype=np.float64)
    return np.sqrt(np.mean(w.reshape(w.shape[0], -1) ** 2, axis=1)).astype(np.float32)


def flag_filters(rms: np.ndarray, radius: float = DEFAULT_RADIUS,
                 dead_ratio: float = DEAD_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(dead, dominant) boolean arrays for one layer's RMS values (definitions in the module docstring)."""
    rms = np.asarray(rms, dtype=np.float64)
    median = float(np.median(rms)) if rms.size else 0.0
    dead = (rms == 0) | (rms < dead_ratio * median)
    dominant = rms > radius
    return dead, dominant


def filter_stats(model: nn.Module, layers: Sequence[str] | None = None, radius: float = DEFAULT_RADIUS, *,
                 dead_ratio: float = DEAD_RATIO) -> list[FilterStats]:
    """Statistics of the named conv layers (default: every ``Conv2d``), in the order given."""
    if not radius > 0:
        raise UserInputError(f"--radius must be positive, got {radius}")
    if not dead_ratio >= 0:
        raise UserInputError(f"dead ratio must be non-negative, got {dead_ratio}")
    convs = conv_layers(model)
    names = list(dict.fromkeys(layers)) if layers else convs
    if not names:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer; filters needs convolution weights")
    modules = resolve_layers(model, names)
    stats = []
    for name, module in modules.items():
        if not isinstance(module, nn.Conv2d):
            raise ModelError(f"layer '{name}' is a {type(module).__name__}, not a Conv2d; filters needs conv "
                             f"layers.{close_matches(name, convs)} 'vizkit layers' lists them.")
        with torch.no_grad():
            weight = module.weight.detach().to("cpu", torch.float32).numpy().copy()
        rms = filter_rms(weight)
        dead, dominant = flag_filters(rms, radius, dead_ratio)
        stats.append(FilterStats(name, weight, rms, dead, dominant, int(module.groups), float(radius),
                                 float(dead_ratio)))
    return stats


__all__ = ["DEAD_RATIO", "DEFAULT_RADIUS", "FilterStats", "conv_layers", "filter_rms", "filter_stats",
           "flag_filters", "running_convs"]
