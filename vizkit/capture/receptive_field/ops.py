"""How each graph node changes the receptive field: leaf modules, functions and tensor methods mapped onto the
geometry of ``geometry``. An op this module does not know gives ``None`` (not derivable), never a guess."""
from __future__ import annotations

import operator
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.receptive_field.geometry import (
    CONST,
    Geo,
    adaptive,
    index,
    inferred_pad,
    merge,
    norm_dims,
    over_dims,
    padded,
    pair,
    permute,
    reduce,
    reshape,
    transpose,
    window,
)

__all__ = ["function_state", "method_state", "module_state"]


def _bind(names: tuple[str, ...], defaults: dict[str, Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    out = dict(defaults)
    out.update(zip(names, args, strict=False))
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
        k, d = pair(kernel), pair(dilation)
        return tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))  # type: ignore[return-value]
    return pair(padding)


_TF_SAME = ("Conv2dSame", "MaxPool2dSame", "AvgPool2dSame")


def _is_tf_same(m: nn.Module) -> bool:
    """timm's windows that pad like TensorFlow's "same": total ``max((ceil(i/s)-1)*s + k_eff - i, 0)``, the smaller
    half on the left."""
    cls = type(m)
    return cls.__module__.startswith("timm.") and cls.__name__ in _TF_SAME


def module_state(m: nn.Module, s: list[Any], v: list[Any], out: Any) -> Any:
    """State of a leaf module's output from its input states ``s`` and values ``v``."""
    g: Any = s[0] if s else None  # a Geo, CONST or None
    x: Any = v[0] if s else None  # the first tensor operand's value
    base: type[Any] | None = next((c for c in type(m).__mro__ if c.__module__.startswith("torch.nn")), None)
    if base is not None and type(m).forward is not base.forward:
        # A variant of a torch.nn class with its own forward: geometry from the shapes. timm's TF-"same" windows
        # (Conv2dSame, MaxPool2dSame, AvgPool2dSame) pad by a rule that depends only on the input size modulo the
        # stride, so they stay local with ``same_pad`` (crops of congruent size are exact); others are not local.
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and isinstance(out, torch.Tensor):
            k, st = m.kernel_size, m.stride or m.kernel_size
            d = getattr(m, "dilation", 1)
            same = _is_tf_same(m)
            return window(g, out, k, st, inferred_pad(x, out, k, st, d), d, local=same, same_pad=same)
        return None
    if isinstance(m, _POINTWISE_MODULES):
        return g
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return g if (not m.training and m.track_running_stats) or not isinstance(g, Geo) else replace(g, local=False)
    if isinstance(m, nn.Conv2d):
        return window(g, out, m.kernel_size, m.stride, _conv_pad(m.padding, m.kernel_size, m.dilation), m.dilation,
                       local=m.padding_mode != "circular")
    if isinstance(m, nn.MaxPool2d):
        return window(g, out, m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation)
    if isinstance(m, nn.AvgPool2d):
        return window(g, out, m.kernel_size, m.stride or m.kernel_size, m.padding)
    if isinstance(m, nn.LPPool2d):
        return window(g, out, m.kernel_size, m.stride or m.kernel_size, 0)
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        o = out[0] if isinstance(out, tuple) else out
        geo = adaptive(g, x, o)
        return (geo, None) if isinstance(out, tuple) else geo
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)):
        return padded(g, m.padding, "circular" if isinstance(m, nn.CircularPad2d) else "constant", False)
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return reshape(g, x, out)
    if isinstance(m, nn.Linear):
        return g if isinstance(g, Geo) and g.axes[-1] is None else None
    if isinstance(m, nn.LayerNorm):
        return over_dims(g, list(range(-len(m.normalized_shape), 0)))
    if isinstance(m, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        return over_dims(g, list(range(1, x.dim())) if isinstance(x, torch.Tensor) else [])
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return over_dims(g, norm_dims(m.dim, x.dim())) if m.dim is not None else None
    if isinstance(m, nn.Softmax2d):
        return over_dims(g, [-3])
    return None


def function_state(target: Any, s: list[Any], v: list[Any], args: tuple, kwargs: dict, out: Any,
                    dynamic_args: bool) -> Any:
    """State of a ``call_function`` node; ``s``/``v`` are the states/values of ``args`` (flattened for cat)."""
    g: Any = s[0] if s else None  # a Geo, CONST or None
    x: Any = v[0] if s else None  # the first tensor operand's value
    qualified = (getattr(target, "__module__", None), getattr(target, "__name__", None))
    if target in _POINTWISE_FUNCS or qualified in _POINTWISE_NAMES:
        return g
    if target is F.batch_norm:
        a = _bind(("input", "running_mean", "running_var", "weight", "bias", "training"), {"training": False},
                  args, kwargs)
        return g if not a["training"] else over_dims(g, [-2, -1])
    if target in _BINARY_FUNCS:
        return merge(list(zip(s, v, strict=True)), out)
    if target is operator.getitem:
        if isinstance(g, tuple):
            return g[args[1]] if isinstance(args[1], int) else None
        if not isinstance(x, torch.Tensor) and g is None:
            return None
        if isinstance(x, torch.Tensor):
            return index(g, args[1])
        return CONST
    if target in (torch.cat, torch.concat, torch.concatenate):
        a = _bind(("tensors", "dim"), {"dim": 0}, args, kwargs)
        tensors, states = list(a["tensors"]), s[: len(a["tensors"])]
        ref = next((st for st in states if isinstance(st, Geo)), None)
        if ref is not None and ref.axes[a["dim"] % len(ref.axes)] is not None:
            return None
        return merge(list(zip(states, tensors, strict=False)), out)
    if target is torch.conv2d:
        a = _bind(*_CONV_ARGS, args, kwargs)
        k = tuple(a["weight"].shape[-2:])
        pad = _conv_pad(a["padding"], k, a["dilation"])
        return window(g, out, k, a["stride"], pad, a["dilation"], not dynamic_args)
    if target in (F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices):
        a = _bind(*_MAXPOOL_ARGS, args, kwargs)
        o = out[0] if isinstance(out, tuple) else out
        geo = window(g, o, a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["dilation"],
                      not dynamic_args)
        return (geo, None) if isinstance(out, tuple) else geo
    if target in (F.avg_pool2d, F.lp_pool2d):
        a = _bind(*_AVGPOOL_ARGS, args, kwargs) if target is F.avg_pool2d else \
            _bind(("input", "norm_type", "kernel_size", "stride"), {"stride": None}, args, kwargs)
        return window(g, out, a["kernel_size"], a["stride"] or a["kernel_size"], a.get("padding", 0), 1,
                       not dynamic_args)
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices):
        o = out[0] if isinstance(out, tuple) else out
        geo = adaptive(g, x, o)
        return (geo, None) if isinstance(out, tuple) else geo
    if target in _PAD_FUNCS:
        a = _bind(("input", "pad", "mode", "value"), {"mode": "constant"}, args, kwargs)
        return padded(g, a["pad"], a["mode"], dynamic_args)
    if target in _RESHAPE_FUNCS:
        return reshape(g, x, out)
    if target is torch.permute:
        return permute(g, args[1:] if "dims" not in kwargs else (kwargs["dims"],))
    if target is torch.transpose:
        return transpose(g, args[1], args[2])
    if target is F.linear:
        return g if isinstance(g, Geo) and g.axes[-1] is None else None
    if target is F.layer_norm:
        a = _bind(("input", "normalized_shape"), {}, args, kwargs)
        return over_dims(g, list(range(-len(a["normalized_shape"]), 0)))
    if target in (F.group_norm, F.instance_norm):
        return over_dims(g, list(range(1, x.dim())))
    if target in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
        a = _bind(("input", "dim"), {"dim": None}, args, kwargs)
        return over_dims(g, norm_dims(a["dim"], x.dim())) if a["dim"] is not None else None
    if target in (torch.split, torch.chunk, torch.tensor_split, torch.unbind):
        return method_state(target.__name__, s, v, args, kwargs, out)  # same argument order as the methods
    if target in (torch.mean, torch.sum, torch.amax, torch.amin):
        a = _bind(("input", "dim", "keepdim"), {"dim": None, "keepdim": False}, args, kwargs)
        return reduce(g, x, a["dim"], a["keepdim"])
    return None


def method_state(name: str, s: list[Any], v: list[Any], args: tuple, kwargs: dict, out: Any) -> Any:
    g: Any = s[0] if s else None  # a Geo, CONST or None
    x: Any = v[0] if s else None  # the first tensor operand's value
    if name in _POINTWISE_METHODS:
        return g
    if name in _BINARY_METHODS:
        return merge(list(zip(s, v, strict=True)), out)
    if name in _RESHAPE_METHODS:
        return reshape(g, x, out)
    if name == "permute":
        return permute(g, args[1:] if "dims" not in kwargs else (kwargs["dims"],))
    if name == "transpose":
        return transpose(g, args[1], args[2])
    if name in _REDUCE:
        a = _bind(("self", "dim", "keepdim"), {"dim": None, "keepdim": False}, args, kwargs)
        return reduce(g, x, a["dim"], a["keepdim"])
    if name in ("chunk", "split", "tensor_split", "unbind") and isinstance(out, (tuple, list)):
        at = 1 if name == "unbind" else 2  # unbind(dim) / chunk(chunks, dim) / split(size, dim)
        dim = kwargs.get("dim", args[at] if len(args) > at else 0)
        if not isinstance(g, Geo) or g.axes[dim % len(g.axes)] is not None:
            return tuple(None for _ in out)
        kept = tuple(a for d, a in enumerate(g.axes) if d != dim % len(g.axes))
        one = g if name != "unbind" else replace(g, axes=kept)
        return tuple(one for _ in out)
    if name in ("softmax", "log_softmax"):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        return over_dims(g, norm_dims(dim, x.dim())) if dim is not None else None
    return None

