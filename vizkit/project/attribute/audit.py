"""Find what makes a hook-based library silently wrong on a model, before it runs (docs/DESIGN.md, "Traps").

Captum's DeepLift attaches its rescale rule to activation *modules*; a functional ``F.relu`` gets the plain
gradient instead, and a module run twice per forward (torchvision ResNet's shared ReLU) keeps only one input.
zennit's composites attach rules to modules too: a functional smooth activation (``F.gelu``, ``F.silu``) is
back-propagated as a gradient instead of being passed, and a parameter-owning module run twice keeps one input for
two calls. A functional *ReLU* is harmless to LRP: every rule multiplies by the layer's input, which is zero
wherever the ReLU's mask would cut. In-place activations break both libraries' module hooks; ``guarded(...,
inplace_off=True)`` runs them out of place for the call (same values), so they are only reported.

Gradient, path and perturbation methods (saliency, IG, GradientSHAP, occlusion, the noise tunnel) and the CAMs
need no hooks on activations and are right on every model; guided backprop and the deconvnet run on vizkit's own
rules, which see every call.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vizkit.errors import ModelError
from vizkit.project.attribute.inputs import guarded
from vizkit.project.attribute.methods import METHODS

_RELU = {F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, getattr(F, "relu_", None)}
_SMOOTH = {F.gelu: "F.gelu", F.silu: "F.silu", F.elu: "F.elu", F.leaky_relu: "F.leaky_relu", F.hardtanh: "F.hardtanh",
           F.relu6: "F.relu6", F.hardswish: "F.hardswish", F.mish: "F.mish", torch.sigmoid: "torch.sigmoid",
           torch.Tensor.sigmoid: "Tensor.sigmoid", F.sigmoid: "F.sigmoid", torch.tanh: "torch.tanh",
           torch.Tensor.tanh: "Tensor.tanh"}
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardtanh, nn.Hardswish, nn.Mish,
                nn.Sigmoid, nn.Tanh, nn.Softplus, nn.PReLU, nn.CELU, nn.SELU)


@dataclass
class ModelAudit:
    """functional: (calling module, function) for activations called outside an activation module; reused:
    modules called more than once per forward, with their count; inplace: activation modules with inplace=True."""

    functional: list[tuple[str, str]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    parameterised: set[str] = field(default_factory=set)
    leaves: set[str] = field(default_factory=set)

    def problem(self, method: str) -> str | None:
        """One line naming the module and the fix, or None when ``method`` is right on this model."""
        info = METHODS.get(method)
        if info is None or not info.audited:
            return None
        if "functional" in info.audited and self.functional:
            where, fn = self.functional[0]
            return (f"{method}: module '{where or 'the model'}' calls {fn} directly, which Captum's {method} cannot "
                    "see (its rule attaches to activation modules), so the map would be silently wrong; use "
                    "nn.ReLU modules there, or integrated-gradients")
        if "functional-smooth" in info.audited:
            smooth = [(w, f) for w, f in self.functional if f != "F.relu"]
            if smooth:
                return (f"{method}: module '{smooth[0][0] or 'the model'}' calls {smooth[0][1]} directly, which "
                        "zennit's composites cannot see, so the relevance would be silently wrong; use an activation "
                        "module there, or guided-backprop / integrated-gradients")
        # DeepLift's rules sit on parameter-free leaves (activations, pools); zennit's on parameterised layers.
        reused = [(n, k) for n, k in self.reused if n in self.leaves
                  and (("reused" in info.audited and n not in self.parameterised)
                       or ("reused-parameters" in info.audited and n in self.parameterised))]
        if reused:
            name, count = reused[0]
            return (f"{method}: module '{name}' runs {count} times per forward, and the library's hooks keep one "
                    "input per module, so the map would be silently wrong; give each call its own module, or use "
                    "integrated-gradients")
        return None


class _Calls(TorchFunctionMode):
    def __init__(self, stack: list[tuple[str, nn.Module]], found: list[tuple[str, str]]) -> None:
        super().__init__()
        self.stack, self.found = stack, found

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        name = "F.relu" if func in _RELU else _SMOOTH.get(func)
        if name is not None and not (self.stack and isinstance(self.stack[-1][1], _ACTIVATIONS)):
            entry = (self.stack[-1][0] if self.stack else "", name)
            if entry not in self.found:
                self.found.append(entry)
        return func(*args, **(kwargs or {}))


def audit_model(model: nn.Module, x: torch.Tensor | None = None) -> ModelAudit:
    """What a hook-based method would get wrong on ``model``. With ``x`` (one image is enough) a forward pass also
    finds functional activations and reused modules; without it only in-place flags are read. The model is left
    exactly as it was."""
    audit = ModelAudit(inplace=[n for n, m in model.named_modules() if getattr(m, "inplace", False) is True],
                       parameterised={n for n, m in model.named_modules()
                                      if any(True for _ in m.parameters(recurse=False))},
                       leaves={n for n, m in model.named_modules() if not any(True for _ in m.children())})
    if x is None:
        return audit
    stack: list[tuple[str, nn.Module]] = []
    counts: Counter[str] = Counter()
    with guarded(model):
        for name, module in model.named_modules():
            def pre(m: nn.Module, inputs: Any, name: str = name) -> None:
                stack.append((name, m))
                counts[name] += 1

            def post(m: nn.Module, inputs: Any, output: Any) -> None:
                stack.pop()

            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
        with torch.no_grad(), _Calls(stack, audit.functional):
            model(x[:1])
    audit.reused = [(n, k) for n, k in counts.items() if k > 1 and n]
    return audit


def check_method(audit: ModelAudit, method: str) -> None:
    line = audit.problem(method)
    if line is not None:
        raise ModelError(line)


__all__ = ["ModelAudit", "audit_model", "check_method"]
