"""Deconvnet projections of single units of a chain model, computed on the unit's cone only.

A unit's projection is nonzero only inside its receptive-field cone: one position at the layer, 3 x 3 one
convolution below, and so on. The autograd path (``ConeConv``) restricts the convolutions to that cone but still
runs every rectifier, unpooling and zero fill over whole feature maps, about 40 % of its time on VGG16 conv5_3.
Here the signal itself lives on the cone: it walks the chain's modules in reverse as a small tensor plus its box
in the module's grid, with the explicit engine's operators (``vizkit.project.explicit``): transposed convolution
with the layer's filters and no bias, ReLU on the signal, scatter-add unpooling with the recorded switches, BN as a
fixed scale. Every value it leaves out is an exact zero of the full computation, so the result equals the
full-map deconvnet up to float summation order.

The forward that records the switches runs without autograd, once per batch of distinct images, and keeps only
the layer's output and the switches. Only chains of modules with such an operator qualify (VGG, AlexNet-style
feature stacks); ``chain_shapes`` says None for anything else and pass 2 then uses the autograd path.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.project.explicit import _IDENTITIES, _RECTIFIERS, _leaves_up_to, _record_chain

Box = tuple[int, int, int, int]
Leaves = list[tuple[str, nn.Module]]
_BOXED = (nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, *_RECTIFIERS, *_IDENTITIES)


def chain_shapes(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[Leaves, dict[str, torch.Size]] | None:
    """The leaves up to ``layer`` and each one's input shape, from one forward of ``x`` (1, C, H, W); None when the
    model is not a chain up to ``layer`` of modules this walk has an operator for."""
    try:
        leaves = _leaves_up_to(model, layer)
    except UserInputError:
        return None
    for _, m in leaves:
        if not isinstance(m, _BOXED) or (isinstance(m, nn.Conv2d) and isinstance(m.padding, str)):
            return None
        if isinstance(m, nn.BatchNorm2d) and (m.running_var is None or m.weight is None):
            return None
    try:
        rec = _record_chain(model, x.detach(), leaves)
    except UserInputError:
        return None
    if rec.outputs[layer].dim() != 4:
        return None
    return leaves, {name: rec.inputs[name].shape for name, _ in leaves}


def record(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward of the batch ``x`` without autograd: the layer's output and every pool's switches."""
    with preserve_model_state(model), torch.no_grad(), Recorder(model, [layer], stop=True, switches=True) as rec:
        rec.run(x)
    return rec.outputs[layer], dict(rec.switches)


def project_boxed(leaves: Leaves, shapes: dict[str, torch.Size], switches: dict[str, torch.Tensor], row: int,
                  channel: int, position: tuple[int, int], output: torch.Tensor) -> tuple[torch.Tensor, Box]:
    """The projection of one unit (``channel`` at ``position`` of the last leaf, whose recorded batch output is
    ``output``) of batch element ``row``, seeded with its activation: (C, y1 - y0, x1 - x0) and its box
    (y0, y1, x0, x1) in the input."""
    y, x = position
    signal = output.new_zeros((1, output.shape[1], 1, 1))
    signal[0, channel, 0, 0] = output[row, channel, y, x]
    box = (y, y + 1, x, x + 1)
    with torch.no_grad():
        for name, m in reversed(leaves):
            signal, box = _step(m, signal, box, shapes[name], switches.get(name), row)
    return signal[0], box


def _clip(t: torch.Tensor, iy: int, ix: int, height: int, width: int) -> tuple[torch.Tensor, Box]:
    """``t`` (1, C, h, w) placed with its corner at (iy, ix) of a height x width grid, cut to the grid."""
    j0, j1 = max(0, -iy), min(t.shape[2], height - iy)
    k0, k1 = max(0, -ix), min(t.shape[3], width - ix)
    j1, k1 = max(j0, j1), max(k0, k1)
    return t[:, :, j0:j1, k0:k1], (iy + j0, iy + j1, ix + k0, ix + k1)


def _step(m: nn.Module, signal: torch.Tensor, box: Box, in_shape: torch.Size, switches: torch.Tensor | None,
          row: int) -> tuple[torch.Tensor, Box]:
    """The signal on ``box`` of ``m``'s output -> the signal on a box of its input."""
    height, width = int(in_shape[2]), int(in_shape[3])
    y0, _, x0, _ = box
    if isinstance(m, nn.Conv2d):
        (sy, sx), (py, px) = _pair(m.stride), _pair(m.padding)  # type: ignore[arg-type] # str: refused earlier
        t = F.conv_transpose2d(signal, m.weight, None, (sy, sx), 0, 0, m.groups, m.dilation)
        return _clip(t, y0 * sy - py, x0 * sx - px, height, width)
    if isinstance(m, _RECTIFIERS):
        return signal.clamp(min=0), box
    if isinstance(m, nn.BatchNorm2d):
        assert m.running_var is not None  # chain_shapes refused BN without running statistics
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        return signal * scale[None, :, None, None], box
    if isinstance(m, nn.MaxPool2d):
        assert switches is not None  # the Recorder records every max-pool that ran
        return _unpool(m, signal, box, switches[row : row + 1], height, width)
    return signal, box  # identities


def _unpool(m: nn.MaxPool2d, signal: torch.Tensor, box: Box, switches: torch.Tensor, height: int, width: int
            ) -> tuple[torch.Tensor, Box]:
    """Scatter-add each pooled value to its switch, on the input box that the box's windows cover."""
    y0, y1, x0, x1 = box
    k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
    ny0, nx0 = max(0, y0 * s[0] - p[0]), max(0, x0 * s[1] - p[1])
    ny1 = min(height, (y1 - 1) * s[0] - p[0] + (k[0] - 1) * d[0] + 1)
    nx1 = min(width, (x1 - 1) * s[1] - p[1] + (k[1] - 1) * d[1] + 1)
    idx = switches[:, :, y0:y1, x0:x1].reshape(1, switches.shape[1], -1)
    local = (idx // width - ny0) * (nx1 - nx0) + (idx % width - nx0)
    out = signal.new_zeros((1, signal.shape[1], (ny1 - ny0) * (nx1 - nx0)))
    out.scatter_add_(2, local, signal.reshape(1, signal.shape[1], -1))
    return out.view(1, signal.shape[1], ny1 - ny0, nx1 - nx0), (ny0, ny1, nx0, nx1)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


__all__ = ["chain_shapes", "project_boxed", "record"]
