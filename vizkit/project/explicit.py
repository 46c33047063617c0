"""The deconvnet written out layer by layer, as in Zeiler & Fergus (2014), for chain models.

This is the second, independent formulation the autograd-with-rules deconvnet is tested against: it walks the
modules in reverse with explicit operators (scatter-add unpooling with the recorded switches, transposed
convolution with the same filters and no bias, ReLU on the signal, BN and LRN as fixed scales). It only handles
pure chains (VGG, AlexNet, ZFNet, LeNet-5: every leaf module consumes the previous one's output).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.state import preserve_model_state

_RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish)
_IDENTITIES = (nn.Dropout, nn.Identity)


def chain_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in definition order; for chain models this is also execution order."""
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def _unpool(signal: torch.Tensor, switches: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Place each pooled value at its switch; a location chosen by several windows receives the sum."""
    n, c = signal.shape[:2]
    out = torch.zeros((n, c, size[-2] * size[-1]), dtype=signal.dtype, device=signal.device)
    out.scatter_add_(2, switches.reshape(n, c, -1), signal.reshape(n, c, -1))
    return out.view(n, c, size[-2], size[-1])


def _lrn_denominator(x: torch.Tensor, m: nn.LocalResponseNorm) -> torch.Tensor:
    """(k + alpha/n * sum over the channel window of x^2)^beta, summed channel by channel."""
    sq = x * x
    channels = x.shape[1]
    total = torch.zeros_like(x)
    for c in range(channels):
        lo, hi = max(0, c - m.size // 2), min(channels, c + (m.size - 1) // 2 + 1)
        total[:, c] = sq[:, lo:hi].sum(dim=1)
    return (m.k + m.alpha / m.size * total) ** m.beta


def _conv_transpose(signal: torch.Tensor, m: nn.Conv2d, in_shape: torch.Size) -> torch.Tensor:
    stride, padding, dilation = m.stride, m.padding, m.dilation
    k = m.kernel_size
    out_pad = [in_shape[2 + i] - ((signal.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
               for i in range(2)]
    return F.conv_transpose2d(signal, m.weight, None, stride, padding, tuple(out_pad), m.groups, dilation)


def explicit_deconv(model: nn.Module, x: torch.Tensor, layer: str, seeds: torch.Tensor) -> torch.Tensor:
    """Project ``seeds`` (K, *layer_output_shape[1:]) from ``layer`` down to pixels; returns (K, *x.shape[1:])."""
    leaves = chain_leaves(model)
    names = [n for n, _ in leaves]
    if layer not in names:
        raise ValueError(f"'{layer}' is not a leaf of this chain model")
    stop = names.index(layer)
    inputs: list[torch.Tensor] = []
    switches: dict[int, torch.Tensor] = {}
    with preserve_model_state(model), torch.no_grad():
        h = x
        for i, (_, m) in enumerate(leaves[: stop + 1]):
            inputs.append(h.clone())  # a later in-place ReLU must not rewrite what we keep
            if isinstance(m, nn.MaxPool2d):
                h, switches[i] = F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation,
                                              ceil_mode=m.ceil_mode, return_indices=True)
            elif isinstance(m, nn.Linear) and h.dim() > 2:
                raise ValueError("insert nn.Flatten before Linear for the explicit deconvnet")
            else:
                h = m(h)
        signal = seeds.to(x.dtype)
        for i in range(stop, -1, -1):
            m, inp = leaves[i][1], inputs[i]
            if isinstance(m, nn.Conv2d):
                signal = _conv_transpose(signal, m, inp.shape)
            elif isinstance(m, _RECTIFIERS):
                signal = signal.clamp(min=0)
            elif isinstance(m, nn.MaxPool2d):
                signal = _unpool(signal, switches[i].expand(signal.shape[0], *switches[i].shape[1:]), inp.shape)
            elif isinstance(m, nn.BatchNorm2d):
                scale = m.weight / torch.sqrt(m.running_var + m.eps)
                signal = signal * scale[None, :, None, None]
            elif isinstance(m, nn.LocalResponseNorm):
                signal = signal / _lrn_denominator(inp, m).expand_as(signal)
            elif isinstance(m, nn.Linear):
                signal = signal @ m.weight
            elif isinstance(m, nn.Flatten):
                signal = signal.reshape(signal.shape[0], *inp.shape[1:])
            elif isinstance(m, nn.AdaptiveAvgPool2d) and tuple(inp.shape[2:]) == tuple(signal.shape[2:]):
                pass  # identity at this input size
            elif not isinstance(m, _IDENTITIES):
                raise ValueError(f"explicit deconvnet has no rule for {type(m).__name__} ({leaves[i][0]})")
    return signal


def explicit_seeds(output: torch.Tensor, units: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Seeds that keep one activation (c, y, x) each and zero everything else."""
    seeds = torch.zeros((len(units), *output.shape[1:]), dtype=output.dtype)
    for i, (c, y, x) in enumerate(units):
        seeds[i, c, y, x] = output[0, c, y, x]
    return seeds
