"""What ``vizkit mine`` ranks in each layer, settled by one probe forward before the scan.

A layer whose output comes out of a saturating activation (ReLU6, hardtanh, hardsigmoid, or any module the probe
finds capping: its output stops at one value in several images while its input goes on above it) cannot rank its
strongest images: they all tie at the cap, and the tie rule hands the top K to the first files that reach it. Such
a layer is ranked by the activation's input, the value before the cap -- for timm's ``BatchNormAct2d`` the batch
norm's output, for a module ending in ``ReLU6`` the ReLU6's input. The probe finds the activation as the last
module called inside the layer whose output is the layer's output (pass-through modules such as ``Identity`` or an
eval ``Dropout`` after it are looked through); a cap written inline after the last module (``F.relu6(self.bn(x))``)
is found from the numbers, and that module's output is ranked.

The same probe finds default layers that duplicate each other for a scan: a max-pool that covers its whole input has
the same spatial maxima, hence the same top-K images, as the layer before it (VGG's last ReLU and pool).
"""
from __future__ import annotations

import contextlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vizkit.capture.hooks import Hooks
from vizkit.capture.probe import model_device, model_dtype
from vizkit.capture.recorder import StopForward, resolve_layers
from vizkit.capture.state import preserve_model_state
from vizkit.scan.scorer import Source, ranked_label, reduce_output

__all__ = ["PROBE_IMAGES", "SATURATING", "RankPlan", "plan_ranking", "probe_batch"]

#: Module types that cap their output from above whatever the probe sees (ReLU6 is a Hardtanh).
SATURATING = (nn.Hardtanh, nn.Hardsigmoid)
PROBE_IMAGES = 4   # seeded noise images: enough for a cap to be hit in several of them
_RECENT = 8        # leaf calls remembered per layer: the chain of pass-through modules after a cap is shorter


@dataclass
class RankPlan:
    """The layers to scan and what is ranked in each. ``sources``: layer -> the module call whose input is ranked
    (absent: the layer's own output); ``duplicates``: a dropped default layer -> the kept one it duplicates."""

    layers: list[str]
    sources: dict[str, Source] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)

    def ranked(self, layer: str) -> str:
        return ranked_label(layer, self.sources)


def probe_batch(model: nn.Module, input_shape: Sequence[int], n: int = PROBE_IMAGES) -> torch.Tensor:
    """``n`` seeded standard-normal images of ``input_shape`` (1, C, H, W), in the model's dtype and device: the
    same on every run and rank, so the plan (and a checkpoint's identity) is too."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n, *input_shape[1:]), generator=g)
    return x.to(device=model_device(model), dtype=model_dtype(model))


@dataclass
class _Call:
    name: str
    call: int
    inp: torch.Tensor | None         # kept alive during the probe, so its storage cannot be reused
    in_max: torch.Tensor | None      # (B, C) spatial maxima of the input, taken before the module ran
    out: torch.Tensor | None
    out_max: torch.Tensor | None


def _spatial_max(t: Any) -> torch.Tensor | None:
    if not isinstance(t, torch.Tensor) or t.dim() not in (2, 3, 4) or not t.is_floating_point():
        return None
    return reduce_output("probe", t).maximum


def _aliases(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and a.data_ptr() == b.data_ptr()


def _tied(maxima: torch.Tensor) -> torch.Tensor:
    """(C,) bool: the channel's largest value over the probe images is nonzero and reached by two or more images."""
    top = maxima.max(0).values
    return ((maxima == top).sum(0) >= 2) & (top != 0) & torch.isfinite(top)


def _caps(module: nn.Module, call: _Call) -> bool:
    """The call capped its input: a saturating type, or ``_capped`` says so from the numbers."""
    if call.in_max is None or call.out_max is None or call.in_max.shape != call.out_max.shape:
        return False
    return isinstance(module, SATURATING) or _capped(call.in_max, call.out_max)


def _capped(before: torch.Tensor, after: torch.Tensor) -> bool:
    """``after`` comes from ``before`` (both (B, C) spatial maxima) through an elementwise monotone map -- each
    maximum a non-decreasing function of the one before it, channel by channel, as max commutes with such maps --
    and ties at a top that ``before`` went beyond, in some channel: a cap. A mixing layer (a convolution after a
    ReLU6) fails the first test; a pool or an affine map creates no tie."""
    if before.shape != after.shape:
        return False
    order = torch.sort(before, dim=0, stable=True).indices
    x, y = before.gather(0, order), after.gather(0, order)
    same_x = x[1:] == x[:-1]
    monotone = bool(((y[1:] >= y[:-1]) & (~same_x | (y[1:] == y[:-1]))).all())
    above = before.max(0).values > after.max(0).values
    return monotone and bool((_tied(after) & ~_tied(before) & above).any())


class _Probe:
    """Hooks on the layers and every leaf module inside them; records each layer's first output and the last leaf
    calls before it. The forward stops once every layer has produced its output."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.layers = resolve_layers(model, layers)
        self.modules = dict(model.named_modules())
        self.inside: dict[str, list[str]] = {}  # leaf -> the layers containing it
        for layer, module in self.layers.items():
            for name, sub in module.named_modules(prefix=layer):
                if not any(True for _ in sub.children()):
                    self.inside.setdefault(name, []).append(layer)
        self.recent: dict[str, deque[_Call]] = {layer: deque(maxlen=_RECENT) for layer in self.layers}
        self.done: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._count: Counter[str] = Counter()
        self._open: dict[str, tuple[int, torch.Tensor | None, torch.Tensor | None]] = {}

    def run(self, model: nn.Module, x: torch.Tensor) -> None:
        with preserve_model_state(model), torch.no_grad(), Hooks() as hooks:
            for name in self.inside:
                hooks.forward_pre(self.modules[name], self._pre(name))
                hooks.forward(self.modules[name], self._post(name))
            for layer, module in self.layers.items():
                hooks.forward(module, self._done(layer))
            with contextlib.suppress(StopForward):
                model(x)

    def _pre(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            self._open[name] = (self._count[name], inp, _spatial_max(inp))
            self._count[name] += 1

        return hook

    def _post(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            call, inp, in_max = self._open.pop(name, (0, None, None))
            out = output if isinstance(output, torch.Tensor) else None
            record = _Call(name, call, inp, in_max, out, _spatial_max(out))
            for layer in self.inside[name]:
                if layer not in self.done:
                    self.recent[layer].append(record)

        return hook

    def _done(self, layer: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if layer in self.done or not isinstance(output, torch.Tensor):
                return
            self.done[layer] = (output, _spatial_max(output))
            if len(self.done) == len(self.layers):
                raise StopForward

        return hook

    def source(self, layer: str) -> Source | None:
        """The capping call whose output is ``layer``'s output, looking back through pass-through calls."""
        if layer not in self.done:
            return None
        out, out_max = self.done[layer]
        for call in reversed(self.recent[layer]):
            if not _aliases(call.out, out):
                break
            if _caps(self.modules[call.name], call):
                return Source(call.name, call.call)
            if not _aliases(call.inp, call.out):
                break
        last = self.recent[layer][-1] if self.recent[layer] else None
        if last is not None and last.out_max is not None and out_max is not None and _capped(last.out_max, out_max):
            return Source(last.name, last.call, output=True)  # a cap written inline after the last module
        return None

    def ranked_maxima(self, layer: str, source: Source | None) -> torch.Tensor | None:
        if source is None:
            return self.done[layer][1] if layer in self.done else None
        call = next((c for c in self.recent[layer] if (c.name, c.call) == (source.module, source.call)), None)
        return None if call is None else call.out_max if source.output else call.in_max


def plan_ranking(model: nn.Module, layers: Sequence[str], x: torch.Tensor, *, dedupe: bool = False) -> RankPlan:
    """One forward of the probe batch ``x`` (``probe_batch``) through ``model``: per layer what to rank, and with
    ``dedupe`` (default layers) the layers whose ranked spatial maxima equal an earlier layer's dropped. The
    model is left as it was."""
    probe = _Probe(model, layers)
    probe.run(model, x)
    sources = {layer: s for layer in probe.layers if (s := probe.source(layer)) is not None}
    kept: list[str] = []
    duplicates: dict[str, str] = {}
    for layer in probe.layers:
        maxima = probe.ranked_maxima(layer, sources.get(layer))
        twin = next((k for k in kept if dedupe and _same(maxima, probe.ranked_maxima(k, sources.get(k)))), None)
        if twin is None:
            kept.append(layer)
        else:
            duplicates[layer] = twin
            sources.pop(layer, None)
    return RankPlan(kept, sources, duplicates)


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool((a != 0).any()) and torch.equal(a, b)
