"""Receptive fields of every module's output, derived from the traced graph.

``receptive_fields(model)`` traces the model with ``torch.fx`` and runs the graph once (on the model's own device:
a model built on the meta device costs nothing) while propagating, per spatial axis, the classic triple

* ``size``  -- extent of one unit's field in input pixels,
* ``jump``  -- cumulative stride: input pixels between neighbouring units,
* ``start`` -- input coordinate of the centre of unit (0, 0)'s field,

through every node: a window op with kernel k, stride s, left padding p and dilation d has k_eff = d*(k-1)+1 and
does ``size += (k_eff-1)*jump; start += ((k_eff-1)/2 - p)*jump; jump *= s``. Elementwise merges (add, mul, cat
along channels) take the union of their operands' fields (the jumps must agree). A ``local`` flag records whether
every op on the way is spatially local with static padding, i.e. whether a unit's value is unchanged when the input
is cropped to the unit's box (DESIGN section 3): global pooling, gates (squeeze-excitation), normalisation over
space, circular padding and padding computed from the input size (timm ``Conv2dSame``) clear it. Such units keep
the geometry of their spatially-local path (the box says where the unit looks), with ``local=False``.

Outputs without a spatial layout (after flatten / linear), or produced by an op this module does not know
(attention, interpolation, ...), get ``None``. Only 2-D layouts (N, C, H, W) are tracked; permutes / reshapes that
keep H and W as separate dimensions (ConvNeXt's channels-last LayerNorm) are followed.

Module names map onto graph nodes at the tracer's module-call boundary: the value a module's first call returns
(a ``call_module`` node for leaves, the returned node of the traced-through forward otherwise), so non-leaf modules
(``layer4``, ``features``) get the field of what they return. Modules whose forward cannot be traced symbolically
become opaque leaves (their children then get ``None``); if the root itself cannot be traced, a forward with hooks
handles pure chains of modules and gives ``None`` past the first op it cannot follow.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from vizkit.capture._rf_geometry import (
    CONST,
    _adaptive,
    _dims,
    _first_geo,
    _Geo,
    _index,
    _inferred_pad,
    _input_geo,
    _merge,
    _over_dims,
    _pad,
    _pair,
    _permute,
    _reduce,
    _reshape,
    _transpose,
    _window,
    _zeros,
)
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, close_matches

__all__ = ["ReceptiveField", "receptive_field", "receptive_fields"]


@dataclass(frozen=True)
class ReceptiveField:
    """Field of one unit of a layer's output, in input pixels. ``size``/``stride``/``start`` are (h, w) pairs."""

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[float, float]
    local: bool

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) half-open pixel box of unit (y, x)'s field clipped to an image of height x width."""
        lo = [round(self.start[a] + u * self.stride[a] - (self.size[a] - 1) / 2) for a, u in ((0, y), (1, x))]
        y0, x0 = max(lo[0], 0), max(lo[1], 0)
        y1, x1 = min(lo[0] + self.size[0], height), min(lo[1] + self.size[1], width)
        return y0, max(y1, y0), x0, max(x1, x0)


def receptive_fields(model: nn.Module,
                     input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> dict[str, ReceptiveField | None]:
    """Receptive field of the output of every named module (root excluded); ``None`` where not spatial/derivable.

    Runs one forward of the traced graph in eval mode with zeros on the model's device (build the model under
    ``torch.device("meta")`` to make it free); every module's ``training`` flag is restored afterwards. A module
    called several times (ResNet's shared ReLU) is described by its first call.
    """
    names = [name for name, _ in model.named_modules() if name]
    x = _zeros(model, input_shape)
    with preserve_model_state(model, freeze=False), torch.no_grad():
        try:
            geos = _traced(model, x)
        except Exception:  # untraceable root forward: follow module order where it is a pure chain
            try:
                geos = _chain_fallback(model, x)
            except Exception as e:
                raise forward_failed(input_shape, e) from e
    return {name: _public(geos.get(name)) for name in names}


def forward_failed(input_shape: tuple[int, ...], error: Exception) -> ModelError:
    """The one-line error for a model that cannot run on zeros of ``input_shape``."""
    return ModelError(f"The model's forward failed on zeros of shape {tuple(input_shape)}: {error}. "
                      "Pass the input_shape the model expects.")


def _traced(model: nn.Module, x: torch.Tensor) -> dict[str, _Geo | None]:
    tracer = _Tracer()
    graph = tracer.trace(model)
    prop = _Propagator(fx.GraphModule(tracer.root, graph))
    prop.run(x)
    return {name: _first_geo(prop.states.get(node)) for name, node in tracer.outputs.items()}


def receptive_field(model: nn.Module, layer: str,
                    input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> ReceptiveField | None:
    """Receptive field of the output of the module named ``layer`` (a ``named_modules()`` path)."""
    fields = receptive_fields(model, input_shape)
    if layer not in fields:
        hint = close_matches(layer, list(fields))
        raise ModelError(f"Unknown layer {layer!r}; use a name from model.named_modules().{hint}")
    return fields[layer]


def _public(g: _Geo | None) -> ReceptiveField | None:
    if g is None:
        return None
    return ReceptiveField(size=g.size, stride=g.jump, start=g.start, local=g.local)


# --------------------------------------------------------------------------------------------- op dispatching

def _bind(names: tuple[str, ...], defaults: dict[str, Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Threshold, nn.LogSigmoid,
    nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout, nn.FeatureAlphaDropout, nn.LocalResponseNorm, nn.CrossMapLRN2d, nn.ChannelShuffle,
)
_POINTWISE_FUNCS = {
    F.relu, F.relu_, F.relu6, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_, F.prelu, F.softplus, F.sigmoid, F.tanh, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    F.local_response_norm, F.channel_shuffle, torch.channel_shuffle, torch.native_channel_shuffle,
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.abs,
    torch.neg, torch.clamp, torch.clip, torch.square, torch.erf, torch.sign, torch.nan_to_num, torch.clone,
    operator.neg, operator.pos, operator.abs,
}
_POINTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_", "log", "sqrt", "rsqrt", "abs", "neg",
    "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "clip", "clip_", "square", "erf",
    "sign", "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type", "type_as", "cpu",
    "cuda", "requires_grad_", "hardtanh_", "nan_to_num",
}
# torchvision's fx-wrapped regularisers: identity in eval mode, per-sample/per-block noise in training
_POINTWISE_NAMES = {
    ("torchvision.ops.stochastic_depth", "stochastic_depth"), ("torchvision.ops.drop_block", "drop_block2d"),
}
_BINARY_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow, operator.iadd,
    operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.true_divide,
    torch.maximum, torch.minimum, torch.pow, torch.where, torch.addcmul,
}
_BINARY_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "pow_", "maximum", "minimum", "where",
    "addcmul", "addcmul_", "expand", "expand_as",
}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_REDUCE = {"mean", "sum", "amax", "amin"}
_PAD_FUNCS = {F.pad, torch._C._nn.pad, torch.constant_pad_nd}
_CONV_ARGS = (("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
              {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
_MAXPOOL_ARGS = (("input", "kernel_size", "stride", "padding", "dilation"),
                 {"stride": None, "padding": 0, "dilation": 1})
_AVGPOOL_ARGS = (("input", "kernel_size", "stride", "padding"), {"stride": None, "padding": 0})


def _conv_pad(padding: Any, kernel: Any, dilation: Any) -> tuple[int, int]:
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        k, d = _pair(kernel), _pair(dilation)
        return tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))  # type: ignore[return-value]
    return _pair(padding)


def _module_state(m: nn.Module, s: list[Any], v: list[Any], out: Any) -> Any:
    """State of a leaf module's output from its input states ``s`` and values ``v``."""
    g, x = (s[0], v[0]) if s else (None, None)
    base = next((c for c in type(m).__mro__ if c.__module__.startswith("torch.nn")), None)
    if base is not None and type(m).forward is not base.forward:
        # A variant of a torch.nn class with its own forward (timm Conv2dSame pads from the input size):
        # geometry from the shapes, never local.
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and isinstance(out, torch.Tensor):
            k, st = m.kernel_size, m.stride or m.kernel_size
            d = getattr(m, "dilation", 1)
            return _window(g, out, k, st, _inferred_pad(x, out, k, st, d), d, local=False)
        return None
    if isinstance(m, _POINTWISE_MODULES):
        return g
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return g if (not m.training and m.track_running_stats) or not isinstance(g, _Geo) else replace(g, local=False)
    if isinstance(m, nn.Conv2d):
        return _window(g, out, m.kernel_size, m.stride, _conv_pad(m.padding, m.kernel_size, m.dilation), m.dilation,
                       local=m.padding_mode != "circular")
    if isinstance(m, nn.MaxPool2d):
        return _window(g, out, m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation)
    if isinstance(m, nn.AvgPool2d):
        return _window(g, out, m.kernel_size, m.stride or m.kernel_size, m.padding)
    if isinstance(m, nn.LPPool2d):
        return _window(g, out, m.kernel_size, m.stride or m.kernel_size, 0)
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        o = out[0] if isinstance(out, tuple) else out
        geo = _adaptive(g, x, o)
        return (geo, None) if isinstance(out, tuple) else geo
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)):
        return _pad(g, m.padding, "circular" if isinstance(m, nn.CircularPad2d) else "constant", False)
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return _reshape(g, x, out)
    if isinstance(m, nn.Linear):
        return g if isinstance(g, _Geo) and g.axes[-1] is None else None
    if isinstance(m, nn.LayerNorm):
        return _over_dims(g, list(range(-len(m.normalized_shape), 0)))
    if isinstance(m, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        return _over_dims(g, list(range(1, x.dim())) if isinstance(x, torch.Tensor) else [])
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return _over_dims(g, _dims(m.dim, x.dim())) if m.dim is not None else None
    if isinstance(m, nn.Softmax2d):
        return _over_dims(g, [-3])
    return None


def _function_state(target: Any, s: list[Any], v: list[Any], args: tuple, kwargs: dict, out: Any,
                    dynamic_args: bool) -> Any:
    """State of a ``call_function`` node; ``s``/``v`` are the states/values of ``args`` (flattened for cat)."""
    g, x = (s[0], v[0]) if s else (None, None)
    qualified = (getattr(target, "__module__", None), getattr(target, "__name__", None))
    if target in _POINTWISE_FUNCS or qualified in _POINTWISE_NAMES:
        return g
    if target is F.batch_norm:
        a = _bind(("input", "running_mean", "running_var", "weight", "bias", "training"), {"training": False},
                  args, kwargs)
        return g if not a["training"] else _over_dims(g, [-2, -1])
    if target in _BINARY_FUNCS:
        return _merge(list(zip(s, v)), out)
    if target is operator.getitem:
        if isinstance(g, tuple):
            return g[args[1]] if isinstance(args[1], int) else None
        if not isinstance(x, torch.Tensor) and g is None:
            return None
        if isinstance(x, torch.Tensor):
            return _index(g, args[1])
        return CONST
    if target in (torch.cat, torch.concat, torch.concatenate):
        a = _bind(("tensors", "dim"), {"dim": 0}, args, kwargs)
        tensors, states = list(a["tensors"]), s[: len(a["tensors"])]
        ref = next((st for st in states if isinstance(st, _Geo)), None)
        if ref is not None and ref.axes[a["dim"] % len(ref.axes)] is not None:
            return None
        return _merge(list(zip(states, tensors)), out)
    if target is torch.conv2d:
        a = _bind(*_CONV_ARGS, args, kwargs)
        k = tuple(a["weight"].shape[-2:])
        pad = _conv_pad(a["padding"], k, a["dilation"])
        return _window(g, out, k, a["stride"], pad, a["dilation"], not dynamic_args)
    if target in (F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices):
        a = _bind(*_MAXPOOL_ARGS, args, kwargs)
        o = out[0] if isinstance(out, tuple) else out
        geo = _window(g, o, a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["dilation"],
                      not dynamic_args)
        return (geo, None) if isinstance(out, tuple) else geo
    if target in (F.avg_pool2d, F.lp_pool2d):
        a = _bind(*_AVGPOOL_ARGS, args, kwargs) if target is F.avg_pool2d else \
            _bind(("input", "norm_type", "kernel_size", "stride"), {"stride": None}, args, kwargs)
        return _window(g, out, a["kernel_size"], a["stride"] or a["kernel_size"], a.get("padding", 0), 1,
                       not dynamic_args)
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices):
        o = out[0] if isinstance(out, tuple) else out
        geo = _adaptive(g, x, o)
        return (geo, None) if isinstance(out, tuple) else geo
    if target in _PAD_FUNCS:
        a = _bind(("input", "pad", "mode", "value"), {"mode": "constant"}, args, kwargs)
        return _pad(g, a["pad"], a["mode"], dynamic_args)
    if target in _RESHAPE_FUNCS:
        return _reshape(g, x, out)
    if target is torch.permute:
        return _permute(g, args[1:] if "dims" not in kwargs else (kwargs["dims"],))
    if target is torch.transpose:
        return _transpose(g, args[1], args[2])
    if target is F.linear:
        return g if isinstance(g, _Geo) and g.axes[-1] is None else None
    if target is F.layer_norm:
        a = _bind(("input", "normalized_shape"), {}, args, kwargs)
        return _over_dims(g, list(range(-len(a["normalized_shape"]), 0)))
    if target in (F.group_norm, F.instance_norm):
        return _over_dims(g, list(range(1, x.dim())))
    if target in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
        a = _bind(("input", "dim"), {"dim": None}, args, kwargs)
        return _over_dims(g, _dims(a["dim"], x.dim())) if a["dim"] is not None else None
    if target in (torch.split, torch.chunk, torch.tensor_split, torch.unbind):
        return _method_state(target.__name__, s, v, args, kwargs, out)  # same argument order as the methods
    if target in (torch.mean, torch.sum, torch.amax, torch.amin):
        a = _bind(("input", "dim", "keepdim"), {"dim": None, "keepdim": False}, args, kwargs)
        return _reduce(g, x, a["dim"], a["keepdim"])
    return None


def _method_state(name: str, s: list[Any], v: list[Any], args: tuple, kwargs: dict, out: Any) -> Any:
    g, x = (s[0], v[0]) if s else (None, None)
    if name in _POINTWISE_METHODS:
        return g
    if name in _BINARY_METHODS:
        return _merge(list(zip(s, v)), out)
    if name in _RESHAPE_METHODS:
        return _reshape(g, x, out)
    if name == "permute":
        return _permute(g, args[1:] if "dims" not in kwargs else (kwargs["dims"],))
    if name == "transpose":
        return _transpose(g, args[1], args[2])
    if name in _REDUCE:
        a = _bind(("self", "dim", "keepdim"), {"dim": None, "keepdim": False}, args, kwargs)
        return _reduce(g, x, a["dim"], a["keepdim"])
    if name in ("chunk", "split", "tensor_split", "unbind") and isinstance(out, (tuple, list)):
        at = 1 if name == "unbind" else 2  # unbind(dim) / chunk(chunks, dim) / split(size, dim)
        dim = kwargs.get("dim", args[at] if len(args) > at else 0)
        if not isinstance(g, _Geo) or g.axes[dim % len(g.axes)] is not None:
            return tuple(None for _ in out)
        kept = tuple(a for d, a in enumerate(g.axes) if d != dim % len(g.axes))
        one = g if name != "unbind" else replace(g, axes=kept)
        return tuple(one for _ in out)
    if name in ("softmax", "log_softmax"):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        return _over_dims(g, _dims(dim, x.dim())) if dim is not None else None
    return None


def _has_tensor(value: Any) -> bool:
    return any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(value))


class _Propagator(fx.Interpreter):
    """Runs the graph and computes every node's state from its inputs' states and the concrete values."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.states: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        try:
            self.states[n] = self._state(n, out)
        except Exception:  # an op whose arguments this module misreads is "not derivable", never a crash
            self.states[n] = None
        return out

    def _state(self, n: fx.Node, out: Any) -> Any:
        if n.op == "placeholder":
            return _input_geo(out) if not self.states else CONST
        if n.op == "get_attr" or not _has_tensor(out):
            return CONST
        if n.op == "output":
            return None
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        nodes = [a for a in pytree.tree_leaves((n.args, n.kwargs), is_leaf=lambda a: isinstance(a, fx.Node))
                 if isinstance(a, fx.Node)]
        tensor_nodes = [a for a in nodes if _has_tensor(self.env[a])]
        s = [self.states.get(a) for a in tensor_nodes]
        v = [self.env[a] for a in tensor_nodes]
        if all(st is CONST for st in s):
            return CONST
        dynamic = any(not isinstance(self.env[a], torch.Tensor) and self.states.get(a) is CONST
                      and a.op != "get_attr" for a in nodes)
        if n.op == "call_module":
            return _module_state(self.fetch_attr(n.target), s, v, out)
        if n.op == "call_function":
            return _function_state(n.target, s, v, args, kwargs, out, dynamic)
        if n.op == "call_method":
            return _method_state(n.target, s, v, args, kwargs, out)
        return None


# ------------------------------------------------------------------------------------------------------ tracing

class _Tracer(fx.Tracer):
    """fx tracer that records each module's first output node and turns untraceable modules into opaque leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.opaque: set[str] = set()
        self.outputs: dict[str, fx.Node] = {}

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, fx.Proxy]) -> Any:
        self._proxy_cache = parameter_proxy_cache
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.opaque or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        name = self.path_of_module(m)
        if self.is_leaf_module(m, name):
            out = super().call_module(m, forward, args, kwargs)
        else:
            nodes_before = set(self.graph.nodes)
            stack_before, calls_before = list(self.module_stack.items()), dict(self.num_calls)
            try:
                out = super().call_module(m, forward, args, kwargs)
            except Exception:
                for node in reversed(list(self.graph.nodes)):
                    if node not in nodes_before:
                        self.graph.erase_node(node)
                cache = getattr(self, "_proxy_cache", {})
                for key in [k for k, p in cache.items() if p.node not in nodes_before]:
                    del cache[key]
                self.module_stack.clear()
                self.module_stack.update(stack_before)
                self.num_calls = calls_before
                self.opaque.add(name)
                out = super().call_module(m, forward, args, kwargs)
        if name not in self.outputs:
            first = next((p for p in pytree.tree_leaves(out, is_leaf=lambda p: isinstance(p, fx.Proxy))
                          if isinstance(p, fx.Proxy)), None)
            if first is not None:
                self.outputs[name] = first.node
        return out


def _chain_fallback(model: nn.Module, x: torch.Tensor) -> dict[str, _Geo | None]:
    """Module-order analysis for models fx cannot trace: follows leaf modules while each consumes the previous
    output and nothing but modules touches the tensors; every later output gets ``None``."""
    geo_of: dict[int, Any] = {id(x): _input_geo(x)}
    keep: list[torch.Tensor] = [x]  # keep tensors alive so ids stay unique
    result: dict[str, _Geo | None] = {}
    names = {m: n for n, m in model.named_modules() if n}
    depth = [0]
    broken = [False]

    class _Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if depth[0] == 0 and func not in (torch.Tensor.size, torch.Tensor.dim, torch.Tensor.shape.__get__):
                broken[0] = True
            return func(*args, **(kwargs or {}))

    def pre(m, inputs):
        depth[0] += not any(True for _ in m.children())

    def post(m, inputs, out):
        name = names.get(m)
        is_leaf = not any(True for _ in m.children())
        depth[0] -= is_leaf
        if is_leaf and not broken[0]:
            ins = [t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
            state = geo_of.get(id(ins[0])) if len(ins) == 1 else None
            o = out if isinstance(out, torch.Tensor) else None
            new = _module_state(m, [state], ins[:1], out) if state is not None and o is not None else None
            if o is not None:
                geo_of[id(o)] = new
                keep.append(o)
        if name and name not in result and isinstance(out, torch.Tensor):
            result[name] = geo_of.get(id(out)) if not broken[0] else None

    handles = []
    try:
        for m in names:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        with _Watch():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: (v if isinstance(v, _Geo) else None) for k, v in result.items()}
