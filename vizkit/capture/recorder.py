"""Forward hooks that record activations (and, when asked, inputs and max-pool switches) of named layers, only
inside a ``with`` block.

Layers are named by ``model.named_modules()`` paths. A module that runs several times in one forward (torchvision
ResNet reuses one ReLU per block) is recorded at its first call. Recorded outputs are handed downstream as a copy,
so a later in-place op (``nn.ReLU(inplace=True)`` after a conv) cannot overwrite them and each recorded tensor
keeps its own place in the autograd graph: projections start from it.

Switches (the argmax of every max-pool window, Zeiler & Fergus's "switches") cost an extra pooling pass each, so
they are recorded only for the commands that use them (``switches=True``: the explicit deconvnet engine and
``--save-switches``), for every switch-bearing pool (``SWITCH_TYPES``) that runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.hooks import Hooks, ScopedHooks
from vizkit.capture.layer_table import SWITCH_TYPES
from vizkit.errors import ModelError, close_matches


class StopForward(Exception):
    """Raised by a hook once every requested layer has fired, to skip the rest of the network."""


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to modules, or fail with one line naming close matches."""
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for name in layers:
        if name not in modules or name == "":
            raise ModelError(
                f"unknown layer '{name}' in {type(model).__name__}.{close_matches(name, list(modules))} "
                "Run 'vizkit layers --model M' to list every layer name.")
        found[name] = modules[name]
    return found


def max_pool_switches(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """Indices of the maxima each pooling window selected (the paper's switches), flat over H*W per channel."""
    with torch.no_grad():
        if isinstance(module, nn.MaxPool2d):
            _, idx = F.max_pool2d(inp, module.kernel_size, module.stride, module.padding, module.dilation,
                                  ceil_mode=module.ceil_mode, return_indices=True)
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            _, idx = F.adaptive_max_pool2d(inp, module.output_size, return_indices=True)  # type: ignore[call-overload]
        elif isinstance(module, nn.MaxPool1d):
            _, idx = F.max_pool1d(inp, module.kernel_size, module.stride, module.padding, module.dilation,
                                  ceil_mode=module.ceil_mode, return_indices=True)
        elif isinstance(module, nn.MaxPool3d):
            _, idx = F.max_pool3d(inp, module.kernel_size, module.stride, module.padding, module.dilation,
                                  ceil_mode=module.ceil_mode, return_indices=True)
        else:
            raise ModelError(f"switches of {type(module).__name__} are not supported; "
                             f"use one of {', '.join(t.__name__ for t in SWITCH_TYPES)}")
    return idx


class Recorder(ScopedHooks):
    """Record the outputs of the named layers during forward passes.

    >>> with Recorder(model, ["features.4", "features.29"], switches=True) as rec:
    ...     model(x)
    >>> rec.outputs["features.29"].shape, rec.switches["features.2"].shape

    ``stop=True`` aborts the forward once every layer has fired (the caller catches nothing: ``run()`` does it).
    ``switches=True`` also records the switches of every max-pool of the model that runs (keyed by its name);
    ``inputs=True`` keeps a copy of each named layer's first input, taken before the layer runs (an in-place
    layer would otherwise overwrite it). Hooks are removed in ``__exit__``, also when the forward raises.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, stop: bool = False, switches: bool = False,
                 inputs: bool = False) -> None:
        self.model = model
        self.modules = resolve_layers(model, layers)
        self.stop = stop
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.switches: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        self.on_record: list[Any] = []  # callbacks(name) fired when a layer is first recorded
        self._pools = ({n: m for n, m in model.named_modules() if isinstance(m, SWITCH_TYPES)} if switches else {})
        self._keep_inputs = inputs

    def _register(self, hooks: Hooks) -> None:
        for name, module in self._pools.items():  # first: a pool that is also the last layer records both
            hooks.forward(module, self._switch_hook(name))
        for name, module in self.modules.items():
            if self._keep_inputs:
                hooks.forward_pre(module, self._input_hook(name))
            hooks.forward(module, self._hook(name))

    def _switch_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if name not in self.switches and inputs and isinstance(inputs[0], torch.Tensor):
                self.switches[name] = max_pool_switches(module, inputs[0])

        return hook

    def _input_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if name not in self.inputs and inputs and isinstance(inputs[0], torch.Tensor):
                self.inputs[name] = inputs[0].detach().clone()

        return hook

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            if name in self.outputs:
                return None
            if not isinstance(output, torch.Tensor):
                raise ModelError(f"layer '{name}' returns {type(output).__name__}, not a tensor; pick a submodule")
            self.outputs[name] = output
            self.order.append(name)
            for callback in self.on_record:
                callback(name)
            if self.stop and len(self.outputs) == len(self.modules):
                raise StopForward
            return output.clone()  # downstream in-place ops must not touch the recorded tensor

        return hook

    def run(self, x: torch.Tensor) -> torch.Tensor | None:
        """Run the model on x; returns its output, or None when stopped early after the last layer."""
        try:
            out = self.model(x)
        except StopForward:
            out = None
        missing = [n for n in self.modules if n not in self.outputs]
        if missing:
            raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass; pick layers the "
                             "model calls (see 'vizkit layers')")
        return out
