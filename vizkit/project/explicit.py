"""The deconvnet written out layer by layer, as in Zeiler & Fergus (2014), for chain models: ``engine="explicit"``.

One forward pass records, with hooks, every leaf module's input and the switches of every max-pool
(``Recorder(..., switches=True)``); the signal then walks the modules in reverse with explicit operators:
scatter-add unpooling with those switches (a location chosen by several overlapping windows receives the sum),
transposed convolution with the same filters and no bias, ReLU on the signal, BN and LRN as fixed scales. It is the
second, independent formulation the default (autograd-with-rules) engine is tested against, and equals it.

Only pure chains qualify (VGG, AlexNet, ZFNet, LeNet-5: every leaf module consumes the previous one's output, a
flatten in ``forward`` allowed); anything else is refused with one line naming the module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError

_RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish)
_IDENTITIES = (nn.Dropout, nn.Identity)


def chain_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in definition order; for chain models this is also execution order."""
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def _unpool(signal: torch.Tensor, switches: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Place each pooled value at its switch (flat over the pooled dims, any of 1-3); a location chosen by several
    windows receives the sum."""
    n, c = signal.shape[:2]
    switches = switches.expand(n, *switches.shape[1:])
    out = torch.zeros((n, c, int(torch.tensor(size[2:]).prod())), dtype=signal.dtype, device=signal.device)
    out.scatter_add_(2, switches.reshape(n, c, -1), signal.reshape(n, c, -1))
    return out.view(n, c, *size[2:])


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
    if isinstance(m.padding, str):  # 'same' / 'valid' pad asymmetrically; conv_transpose2d cannot undo that
        raise UserInputError(f"engine 'explicit' cannot invert padding='{m.padding}'; use the default engine")
    stride, padding, dilation = m.stride, m.padding, m.dilation
    k = m.kernel_size
    out_pad = [in_shape[2 + i] - ((signal.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
               for i in range(2)]
    return F.conv_transpose2d(signal, m.weight, None, stride, padding, tuple(out_pad), m.groups, dilation)


def _record_chain(model: nn.Module, x: torch.Tensor, leaves: list[tuple[str, nn.Module]]) -> Recorder:
    """One forward up to the last of ``leaves``, keeping each leaf's input and every pool's switches; refuses a
    model whose leaves do not feed each other in definition order."""
    names = [n for n, _ in leaves]
    with preserve_model_state(model), torch.no_grad(), Recorder(model, names, stop=True, switches=True,
                                                                  inputs=True) as rec:
        rec.run(x)
    if rec.order != names:
        raise UserInputError(f"engine 'explicit' needs a chain model; {type(model).__name__} runs its modules in "
                             "another order than it defines them: use the default engine")
    feeds = [x, *(rec.outputs[n] for n in names[:-1])]
    for (name, _), before in zip(leaves, feeds, strict=True):
        got = rec.inputs.get(name)
        if got is None or got.numel() != before.numel() or not torch.equal(got.reshape(before.shape), before):
            raise UserInputError(f"engine 'explicit' needs a chain model; the input of '{name}' is not the previous "
                                 "module's output (a functional op or branch in forward()): use the default engine")
    return rec


def _step_back(m: nn.Module, name: str, signal: torch.Tensor, inp: torch.Tensor,
               switches: torch.Tensor | None) -> torch.Tensor:
    """The signal at ``m``'s output -> the signal at its input (K, *inp.shape[1:])."""
    if isinstance(m, nn.Conv2d):
        return _conv_transpose(signal, m, inp.shape)
    if isinstance(m, _RECTIFIERS):
        return signal.clamp(min=0)
    if switches is not None:
        return _unpool(signal, switches, inp.shape)
    if isinstance(m, nn.BatchNorm2d):
        if m.running_var is None or m.weight is None:
            raise UserInputError(f"engine 'explicit' needs BatchNorm with running statistics and affine weights "
                                 f"('{name}'); use the default engine")
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        return signal * scale[None, :, None, None]
    if isinstance(m, nn.LocalResponseNorm):
        return signal / _lrn_denominator(inp, m).expand_as(signal)
    if isinstance(m, nn.Linear):
        return signal @ m.weight
    if isinstance(m, (nn.Flatten, *_IDENTITIES)):
        return signal
    if isinstance(m, nn.AdaptiveAvgPool2d) and tuple(inp.shape[2:]) == tuple(signal.shape[2:]):
        return signal  # identity at this input size
    raise UserInputError(f"engine 'explicit' has no rule for {type(m).__name__} ('{name}'); use the default engine")


def _leaves_up_to(model: nn.Module, layer: str) -> list[tuple[str, nn.Module]]:
    leaves = chain_leaves(model)
    names = [n for n, _ in leaves]
    if layer not in names:
        raise UserInputError(f"engine 'explicit' projects from leaf modules of a chain model; '{layer}' is not one "
                             "(use the default engine, or a leaf layer: see 'vizkit layers')")
    return leaves[: names.index(layer) + 1]


def check_explicit(model: nn.Module, x: torch.Tensor, layers: list[str]) -> None:
    """Refuse, before any image, what the explicit engine cannot do: a layer that is not a leaf, a model that is
    not a chain up to the deepest layer (one forward on ``x``, e.g. a blank input), a module without a rule."""
    leaves = chain_leaves(model)
    names = [n for n, _ in leaves]
    for layer in layers:
        _leaves_up_to(model, layer)
    deepest = max(layers, key=names.index)
    upto = _leaves_up_to(model, deepest)
    rec = _record_chain(model, x.detach(), upto)
    probe = torch.zeros((1, *rec.outputs[deepest].shape[1:]), dtype=x.dtype, device=x.device)
    for name, m in reversed(upto):
        probe = probe.reshape(1, *rec.outputs[name].shape[1:])
        probe = _step_back(m, name, probe, rec.inputs[name], rec.switches.get(name)).reshape(
            1, *rec.inputs[name].shape[1:])


def explicit_deconv(model: nn.Module, x: torch.Tensor, layer: str, seeds: torch.Tensor, *,
                    switches: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Project ``seeds`` (K, *layer_output_shape[1:]) from ``layer`` down to pixels; returns (K, *x.shape[1:]).

    ``switches``, when given, receives the recorded switches of the pools below ``layer`` (name -> indices)."""
    leaves = _leaves_up_to(model, layer)
    rec = _record_chain(model, x.detach(), leaves)
    if switches is not None:
        switches.update(rec.switches)
    with torch.no_grad():
        signal = seeds.to(x.dtype)
        for name, m in reversed(leaves):
            inp = rec.inputs[name]
            out_shape = rec.outputs[name].shape
            signal = signal.reshape(signal.shape[0], *out_shape[1:])  # undo a flatten done in forward()
            signal = _step_back(m, name, signal, inp, rec.switches.get(name))
            signal = signal.reshape(signal.shape[0], *inp.shape[1:])
    return signal


__all__ = ["chain_leaves", "check_explicit", "explicit_deconv"]
