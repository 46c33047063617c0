"""Backward rules of the Zeiler–Fergus deconvnet, applied to every call of an activation, however it is written.

The deconvnet equals back-propagation with one changed rule (docs/DESIGN.md, "Backward rules"): max-pool backward
is unpooling with the recorded switches (autograd scatter-*adds*, so overlapping windows sum), conv backward is
the transposed convolution with the same filters and no bias, and the ReLU rule becomes ``relu(signal)``,
ignoring the forward mask. Module backward hooks miss functional (GoogLeNet, Inception), in-place and reused
(ResNet) activations, so the rules are attached at forward time by a ``TorchFunctionMode`` that sees every call.
The forward values are computed by the original functions and stay bit-identical.

Rules (the report lists how many calls each one hit):
- rectify: ReLU and its relatives (ReLU6/hardtanh, leaky ReLU, ELU, GELU, SiLU, Hardswish, Mish, threshold) pass
  ``relu(signal)`` down. The literature has no rule for the smooth ones; rectification is the defensible default.
- gate held constant: sigmoid / hardsigmoid (squeeze-excitation gates) let no signal into the gate branch; the
  gate value still scales the main branch through the product, as a fixed per-channel factor.
- linearised: LayerNorm and local response normalisation pass the signal through with the image's statistics
  held constant (divide by the forward pass's std / LRN denominator).
- counted only: max-pool (switches, exact adjoint), batch norm (eval: per-channel scale, exact adjoint).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vizkit.errors import ModelError
from vizkit.project.results import AuditEntry

RECTIFY = "rectify: relu(signal)"
GATE = "gate held constant"
LINEARISED = "linearised (statistics held constant)"
SWITCHES = "switches: exact adjoint, overlaps summed"
EXACT_BN = "exact adjoint (eval statistics)"

# Operations whose presence makes the backward path depend on the image (beyond which units fire).
IMAGE_DEPENDENT_OPS = frozenset({"max_pool", "sigmoid gate", "layer_norm", "local_response_norm"})


@dataclass(frozen=True)
class _Op:
    name: str
    rule: str


def _ops_table() -> dict[Callable[..., Any], _Op]:
    table: dict[Callable[..., Any], _Op] = {}

    def add(fns: list[Any], op: _Op) -> None:
        for fn in fns:
            if fn is not None:
                table[fn] = op

    g = lambda mod, name: getattr(mod, name, None)  # noqa: E731 - tolerate functions absent in older torch
    add([F.relu, torch.relu, torch.Tensor.relu], _Op("relu", RECTIFY))
    add([g(F, "relu_"), torch.relu_, torch.Tensor.relu_], _Op("relu", RECTIFY))
    add([F.hardtanh, F.relu6], _Op("relu6/hardtanh", RECTIFY))
    add([g(F, "hardtanh_")], _Op("relu6/hardtanh", RECTIFY))
    add([F.leaky_relu], _Op("leaky_relu", RECTIFY))
    add([F.elu, F.celu, F.selu], _Op("elu", RECTIFY))
    add([F.gelu], _Op("gelu", RECTIFY))
    add([F.silu], _Op("silu", RECTIFY))
    add([F.hardswish], _Op("hardswish", RECTIFY))
    add([F.mish], _Op("mish", RECTIFY))
    add([F.threshold, g(F, "_threshold")], _Op("threshold", RECTIFY))
    add([torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, F.hardsigmoid], _Op("sigmoid gate", GATE))
    add([F.layer_norm], _Op("layer_norm", LINEARISED))
    add([F.local_response_norm], _Op("local_response_norm", LINEARISED))
    add([F.max_pool1d, F.max_pool2d, F.max_pool3d, g(F, "_max_pool2d"), F.max_pool2d_with_indices,
         F.adaptive_max_pool2d, g(F, "adaptive_max_pool2d_with_indices")], _Op("max_pool", SWITCHES))
    add([F.batch_norm], _Op("batch_norm", EXACT_BN))
    return table


_OPS = _ops_table()


def check_interceptable(model: torch.nn.Module, method: str) -> None:
    """TorchScript modules run outside Python calls: no rule could be attached and the result would silently be
    the plain gradient. Refuse them instead."""
    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        raise ModelError(f"TorchScript modules run outside Python calls, so the {method} rules cannot be attached; "
                         "use the eager model")


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get("input")
    return value if isinstance(value, torch.Tensor) else None


class _Rectify(torch.autograd.Function):
    """Forward: the original activation. Backward: relu(signal), independent of the forward mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: Callable[[], torch.Tensor]) -> torch.Tensor:
        out = call()
        if out is x:  # in-place call (nn.ReLU(inplace=True), relu_): autograd must know x changed
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        return grad.clamp(min=0), None


class _HoldConstant(_Rectify):
    """Forward: the original gate. Backward: nothing flows into the gate's input."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        return None, None


class _GuidedRectify(torch.autograd.Function):
    """Forward: the original activation. Backward: relu(ordinary gradient) (Springenberg et al., guided backprop)
    while ``rules.guided`` is True at backward time, the ordinary gradient otherwise."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: Callable[[], torch.Tensor],
                pure: Callable[[torch.Tensor], torch.Tensor], rules: GuidedBackpropRules) -> torch.Tensor:
        ctx.pure, ctx.rules = pure, rules
        ctx.save_for_backward(x.clone())  # before the call: an in-place activation overwrites x
        out = call()
        if out is x:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            t = x.detach().requires_grad_(True)
            (local,) = torch.autograd.grad(ctx.pure(t), t, grad)
        return (local.clamp(min=0) if ctx.rules.guided else local), None, None, None


class _GuidedReLU(torch.autograd.Function):
    """ReLU only: the same rule from a 1-byte mask saved at forward time (no copy of x, no recomputation)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: Callable[[], torch.Tensor],
                rules: GuidedBackpropRules) -> torch.Tensor:
        out = call()
        if out is x:
            ctx.mark_dirty(x)
        ctx.rules = rules
        ctx.save_for_backward(out > 0)  # relu's gradient passes where x > 0, i.e. where the output is > 0
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (on,) = ctx.saved_tensors
        return (grad.clamp(min=0) if ctx.rules.guided else grad).masked_fill(~on, 0), None, None


class _ScaleBy(torch.autograd.Function):
    """Forward: the original normalisation. Backward: signal * scale, scale fixed from the forward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: Callable[[], torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return call()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None


def _layer_norm_scale(x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
    dims = tuple(range(-len(tuple(shape)), 0))
    scale = torch.rsqrt(x.detach().var(dim=dims, unbiased=False, keepdim=True) + eps)
    return scale * weight.detach() if weight is not None else scale


def _lrn_scale(x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    names = ("size", "alpha", "beta", "k")
    defaults = {"alpha": 1e-4, "beta": 0.75, "k": 1.0}
    p: dict[str, Any] = {n: (args[i + 1] if len(args) > i + 1 else kwargs.get(n, defaults.get(n)))
                         for i, n in enumerate(names)}
    # The denominator of F.local_response_norm, recomputed the same way: (k + alpha * mean_window(x^2))^beta.
    sq = x.detach().mul(x.detach()).unsqueeze(1)
    sq = F.pad(sq.flatten(3) if x.dim() == 4 else sq, (0, 0, p["size"] // 2, (p["size"] - 1) // 2))
    sq = F.avg_pool2d(sq, (p["size"], 1), stride=1).squeeze(1).view_as(x)
    return sq.mul(p["alpha"]).add(p["k"]).pow(p["beta"]).reciprocal()


class DeconvRules(TorchFunctionMode):
    """Attach deconvnet backward rules to every activation call made inside the ``with`` block.

    >>> with DeconvRules() as rules:
    ...     out = model(x)            # forward values unchanged
    >>> torch.autograd.grad(out[0, c].sum(), x)   # the deconvnet projection
    >>> rules.audit()               # which ops were intercepted, how often, by which rule

    ``checkpoints`` lets a recorder snapshot the counts when a layer fires (what ran before it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        op = _OPS.get(func)
        if op is None:
            return func(*args, **kwargs)
        self.counts[op.name] += 1
        x = _first_tensor(args, kwargs)
        if x is None or not (torch.is_grad_enabled() and x.requires_grad):
            return func(*args, **kwargs)
        return self.apply_rule(op, func, args, kwargs, x)

    def apply_rule(self, op: _Op, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], x: torch.Tensor) -> Any:
        """Run ``func`` with this rule set's backward attached (subclasses change only this)."""
        if op.rule in (SWITCHES, EXACT_BN):
            return func(*args, **kwargs)
        call = lambda: func(*args, **kwargs)  # noqa: E731 - runs inside Function.forward (grad disabled)
        if op.rule == RECTIFY:
            return _Rectify.apply(x, call)
        if op.rule == GATE:
            return _HoldConstant.apply(x, call)
        scale = _layer_norm_scale(x, args, kwargs) if op.name == "layer_norm" else _lrn_scale(x, args, kwargs)
        return _ScaleBy.apply(x, call, scale)

    def audit(self) -> list[AuditEntry]:
        return [AuditEntry(op=name, rule=self.rule_of(name), count=n) for name, n in sorted(self.counts.items())]

    def rule_of(self, name: str) -> str:
        return _rule_of(name)


GUIDED = "guided: relu(gradient)"


class GuidedBackpropRules(DeconvRules):
    """Guided backpropagation: every rectifier passes relu(its ordinary gradient) down, so the forward mask *and*
    the sign of the signal both gate it; everything else (gates, norms, pools) keeps its ordinary gradient.

    ``guided`` is read at backward time: set it False between backward passes of one forward to get ordinary
    gradients from the same graph (Grad-CAM needs both from one forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.guided = True

    def apply_rule(self, op: _Op, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], x: torch.Tensor) -> Any:
        if op.rule != RECTIFY:
            return func(*args, **kwargs)
        call = lambda: func(*args, **kwargs)  # noqa: E731
        if op.name == "relu":
            return _GuidedReLU.apply(x, call, self)
        rest = args[1:]
        pure = lambda t: func(t.clone(), *rest, **kwargs)  # noqa: E731 - clone: in-place variants stay legal
        return _GuidedRectify.apply(x, call, pure, self)

    def rule_of(self, name: str) -> str:
        rule = _rule_of(name)
        return GUIDED if rule == RECTIFY else ("ordinary gradient" if rule in (GATE, LINEARISED) else rule)


def _rule_of(name: str) -> str:
    return next(op.rule for op in _OPS.values() if op.name == name)
