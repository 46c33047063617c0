"""Per-unit scores of one batch: forward hooks reduce each requested layer's output over space the moment it is
produced -- per (image, channel) the spatial max, its first row-major argmax and the spatial mean -- so a later
in-place op cannot change what was seen and no feature map is kept. The forward stops after the deepest
requested layer.

A layer may be ranked by the input of a module inside it instead (``Source``: the value before a saturating
activation, see ``vizkit.scan.saturation``): a forward pre-hook reduces that input before the module runs, so an
in-place activation cannot overwrite it first.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vizkit.capture.hooks import Hooks, ScopedHooks
from vizkit.capture.recorder import StopForward, resolve_layers
from vizkit.errors import ModelError

__all__ = ["Reduced", "Reducer", "Source", "ranked_label", "reduce_output"]


@dataclass(frozen=True)
class Source:
    """Rank a layer by the input of ``module`` (a ``named_modules()`` name) at its ``call``-th call in one forward
    (0: the first) instead of by the layer's output; ``output=True``: by that call's output (the module before a
    cap written inline, ``F.relu6(self.bn(x))``)."""

    module: str
    call: int = 0
    output: bool = False


def ranked_label(layer: str, sources: Mapping[str, Source]) -> str:
    """What is ranked in ``layer``: ``activation``, or the value before its cap: ``pre-activation of <module>``
    (the capping module's input) or ``pre-activation: output of <module>`` (the module before an inline cap)."""
    source = sources.get(layer)
    if source is None:
        return "activation"
    return f"pre-activation: output of {source.module}" if source.output else f"pre-activation of {source.module}"


@dataclass
class Reduced:
    """One layer's output for one batch, reduced over space: each (B, C)."""

    maximum: torch.Tensor   # float32
    argmax: torch.Tensor    # int64, flat index into the (H, W) grid, first maximum in row-major order
    mean: torch.Tensor      # float32 spatial mean
    grid: tuple[int, int]


def reduce_output(name: str, output: torch.Tensor) -> Reduced:
    """(B, C, H, W) feature maps (or (B, C) vectors, or (B, C, L) sequences) -> per-(image, channel) reductions."""
    a = output.detach()
    if a.dim() == 2:
        a = a[:, :, None, None]
    elif a.dim() == 3:
        a = a[:, :, None, :]
    if a.dim() != 4:
        raise ModelError(f"layer '{name}' outputs shape {tuple(output.shape)}; mine needs (B, C, H, W), (B, C) or "
                         "(B, C, L)")
    flat = a.flatten(2)
    maximum, argmax = flat.max(dim=2)  # documented: the index of the first maximal value
    return Reduced(maximum.float(), argmax, flat.float().mean(dim=2), (int(a.shape[2]), int(a.shape[3])))


class Reducer(ScopedHooks):
    """Forward hooks that reduce the requested layers' outputs; the forward is stopped after the last one.
    The hooks exist only inside ``with``."""

    def __init__(self, model: nn.Module, layers: Sequence[str], sources: Mapping[str, Source] | None = None
                 ) -> None:
        self.modules = resolve_layers(model, layers)
        self.sources = {layer: s for layer, s in (sources or {}).items() if layer in self.modules}
        self._source_modules = resolve_layers(model, [s.module for s in self.sources.values()])
        self.out: dict[str, Reduced] = {}
        self._calls: Counter[str] = Counter()

    def _register(self, hooks: Hooks) -> None:
        for name, module in self.modules.items():
            source = self.sources.get(name)
            if source is None:
                hooks.forward(module, self._hook(name))
            elif source.output:
                hooks.forward(self._source_modules[source.module], self._source_hook(name, source))
            else:
                hooks.forward_pre(self._source_modules[source.module], self._source_hook(name, source))

    def _store(self, name: str, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"layer '{name}' returns {type(value).__name__}, not a tensor; pick a submodule")
        self.out[name] = reduce_output(name, value)
        if len(self.out) == len(self.modules):
            raise StopForward

    def _source_hook(self, name: str, source: Source) -> Callable[..., None]:
        """A pre-hook reducing the input (or a forward hook reducing the output) of the source's call."""
        key = f"{name}\0{source.module}"

        def hook(module: nn.Module, inputs: tuple[Any, ...], *output: Any) -> None:
            call = self._calls[key]
            self._calls[key] += 1
            if call == source.call and name not in self.out:
                self._store(name, output[0] if output else inputs[0] if inputs else None)

        return hook

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if name not in self.out:  # a module called twice per forward counts at its first call
                self._store(name, output)

        return hook

    def run(self, model: nn.Module, x: torch.Tensor) -> dict[str, Reduced]:
        self.out = {}
        self._calls.clear()
        with contextlib.suppress(StopForward):  # raised by the hook after the deepest layer: the forward is done
            model(x)
        missing = [n for n in self.modules if n not in self.out]
        if missing:
            raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass; pick layers the "
                             "model calls (see 'vizkit layers')")
        return self.out
