"""Receptive-field arithmetic per op: the (size, jump, start) triple of each spatial axis, and how windows,
merges, reshapes, reductions and padding change it. ``ops`` dispatches graph nodes to these."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils import _pytree as pytree

from vizkit.capture.probe import probe_input

# --------------------------------------------------------------------------------------------------------- state

@dataclass(frozen=True)
class Geo:
    """Geometry of a tensor whose dims ``axes`` carry the input's height (0) and width (1)."""

    axes: tuple[int | None, ...]
    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]
    local: bool
    uniform: bool = False  # same value at every position (a global reduction, possibly broadcast back)
    same_pad: bool = False  # some window on the way pads from its input size, as TF "same" does

    def extent(self, value: torch.Tensor, axis: int) -> int:
        return value.shape[self.axes.index(axis)]


class Const:
    """Values that do not depend on the input's pixels: parameters, buffers, numbers, shapes."""

    def __repr__(self) -> str:
        return "CONST"


CONST = Const()


def first_geo(state: Any) -> Geo | None:
    for s in pytree.tree_leaves(state, is_leaf=lambda v: isinstance(v, Geo)):
        if isinstance(s, Geo):
            return s
    return None


def zeros_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The probe input (``vizkit.capture.probe``): zeros on the model's device, in its dtype."""
    return probe_input(model, shape)


def input_geo(value: torch.Tensor) -> Geo | None:
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        return None
    return Geo(axes=(None, None, 0, 1), size=(1, 1), jump=(1, 1), start=(0.0, 0.0), local=True)


T = TypeVar("T")


def two(v: Sequence[T]) -> tuple[T, T]:
    """The (height, width) pair of a two-element list, typed as a pair."""
    return v[0], v[1]


def pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return int(v), int(v)


# ------------------------------------------------------------------------------------------------ geometry ops

def window(g: Any, value: torch.Tensor, kernel: Any, stride: Any, pad_left: Any, dilation: Any = 1,
            local: bool = True, same_pad: bool = False) -> Geo | None:
    """A sliding window over the last two dims (conv / pool)."""
    if not isinstance(g, Geo) or len(g.axes) < 2 or None in g.axes[-2:]:
        return None
    k, s, p, d = pair(kernel), pair(stride), pair(pad_left), pair(dilation)
    size, jump, start = list(g.size), list(g.jump), list(g.start)
    for i, a in enumerate([a for a in g.axes[-2:] if a is not None]):  # both are, checked above
        k_eff = d[i] * (k[i] - 1) + 1
        size[a] = g.size[a] + (k_eff - 1) * g.jump[a]
        start[a] = g.start[a] + ((k_eff - 1) / 2 - p[i]) * g.jump[a]
        jump[a] = g.jump[a] * s[i]
    return replace(g, size=two(size), jump=two(jump), start=two(start), local=g.local and local,
                   same_pad=g.same_pad or same_pad)


def inferred_pad(in_value: torch.Tensor, out_value: torch.Tensor, kernel: Any, stride: Any,
                  dilation: Any) -> tuple[int, int]:
    """Left padding of a window op known only from its shapes (the smaller half on the left, as torch and TF do)."""
    k, s, d = pair(kernel), pair(stride), pair(dilation)
    pads = []
    for i in range(2):
        i_n, o_n = in_value.shape[-2 + i], out_value.shape[-2 + i]
        pads.append(max((o_n - 1) * s[i] + d[i] * (k[i] - 1) + 1 - i_n, 0) // 2)
    return pads[0], pads[1]


def adaptive(g: Any, in_value: torch.Tensor, out_value: torch.Tensor) -> Geo | None:
    """Adaptive pooling: a regular pool when sizes divide; never local (the window follows the input size)."""
    if not isinstance(g, Geo) or None in g.axes[-2:]:
        return None
    ins, outs = in_value.shape[-2:], out_value.shape[-2:]
    if any(i % o for i, o in zip(ins, outs, strict=True)):
        return None
    k = tuple(i // o for i, o in zip(ins, outs, strict=True))
    out = window(g, out_value, k, k, 0, local=False)
    return replace(out, uniform=tuple(outs) == (1, 1)) if out is not None else None


def global_reduce(g: Geo, value: torch.Tensor, keep_axes: tuple[int | None, ...]) -> Geo:
    """A reduction over both spatial dims (kept as size-1 dims)."""
    size, jump, start = list(g.size), list(g.jump), list(g.start)
    for a in (0, 1):
        n = g.extent(value, a)
        size[a] = g.size[a] + (n - 1) * g.jump[a]
        start[a] = g.start[a] + (n - 1) / 2 * g.jump[a]
        jump[a] = g.jump[a] * n
    return replace(g, axes=keep_axes, size=two(size), jump=two(jump), start=two(start), local=False, uniform=True)


def merge(operands: list[tuple[Any, Any]], out_value: Any) -> Any:
    """Elementwise op over broadcast operands: union of the full-size operands' fields; gates clear ``local``."""
    if not isinstance(out_value, torch.Tensor):
        return CONST
    out_nd = out_value.dim()
    full: list[tuple[Geo, int]] = []
    bcast: list[Geo] = []
    local = True
    for state, value in operands:
        if state is CONST:
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and any(n > 1 for n in value.shape[-2:]) \
                    and value.shape[-2:] == out_value.shape[-2:]:
                local = False  # a position-dependent constant (positional embedding) is not translation-invariant
            continue
        if not isinstance(state, Geo) or not isinstance(value, torch.Tensor):
            return None
        offset = out_nd - value.dim()
        same = all(value.shape[d] == out_value.shape[d + offset] for d, a in enumerate(state.axes) if a is not None)
        if same and not state.uniform:
            full.append((state, offset))
        else:
            bcast.append(state)
    if not full and not bcast:
        return CONST
    if not full:  # only gates / global values: union them as they are
        full = [(g, out_nd - len(g.axes)) for g in bcast]
        bcast = []
    # a broadcast operand (a gate from global pooling, a 1x1 map) carries context from outside the box
    local = local and not bcast and all(g.local for g, _ in full)
    ref, off = full[0]
    axes: list[int | None] = [None] * out_nd
    for d, a in enumerate(ref.axes):
        if 0 <= d + off < out_nd:
            axes[d + off] = a
    lo = [ref.start[a] - (ref.size[a] - 1) / 2 for a in (0, 1)]
    hi = [ref.start[a] + (ref.size[a] - 1) / 2 for a in (0, 1)]
    for g, o in full[1:]:
        if g.jump != ref.jump or any(axes[d + o] != a for d, a in enumerate(g.axes) if a is not None):
            local = False
            continue
        for a in (0, 1):
            lo[a] = min(lo[a], g.start[a] - (g.size[a] - 1) / 2)
            hi[a] = max(hi[a], g.start[a] + (g.size[a] - 1) / 2)
    size = two([round(hi[a] - lo[a]) + 1 for a in (0, 1)])
    start = two([(lo[a] + hi[a]) / 2 for a in (0, 1)])
    uniform = all(g.uniform for g, _ in full)
    same_pad = any(g.same_pad for g, _ in full)
    return Geo(axes=tuple(axes), size=size, jump=ref.jump, start=start, local=local, uniform=uniform,
               same_pad=same_pad)


def reshape(g: Any, in_value: Any, out_value: Any) -> Geo | None:
    """view / reshape / flatten / (un)squeeze: follow H and W if both survive as whole dims."""
    if not isinstance(g, Geo) or not isinstance(out_value, torch.Tensor):
        return None
    ins, outs = list(in_value.shape), list(out_value.shape)
    axes: list[int | None] = [None] * len(outs)
    for d, a in enumerate(g.axes):
        if a is None:
            continue
        pre, n, post = math.prod(ins[:d]), ins[d], math.prod(ins[d + 1:])
        hit = next((j for j in range(len(outs)) if axes[j] is None and outs[j] == n
                    and math.prod(outs[:j]) == pre and math.prod(outs[j + 1:]) == post), None)
        if hit is None:
            return None
        axes[hit] = a
    return replace(g, axes=tuple(axes))


def permute(g: Any, dims: Any) -> Geo | None:
    if not isinstance(g, Geo):
        return None
    nd = len(g.axes)
    dims = [d % nd for d in (dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)]
    return replace(g, axes=tuple(g.axes[d] for d in dims))


def transpose(g: Any, d0: int, d1: int) -> Geo | None:
    if not isinstance(g, Geo):
        return None
    axes = list(g.axes)
    d0, d1 = d0 % len(axes), d1 % len(axes)
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return replace(g, axes=tuple(axes))


def index(g: Any, idx: Any) -> Geo | None:
    """Basic indexing: allowed when it leaves H and W whole."""
    if not isinstance(g, Geo):
        return None
    idx = idx if isinstance(idx, tuple) else (idx,)
    consumed = sum(1 for i in idx if i is not None and i is not Ellipsis)
    axes: list[int | None] = []
    d = 0
    for i in idx:
        if i is Ellipsis:
            axes.extend(g.axes[d:d + len(g.axes) - consumed])
            d += len(g.axes) - consumed
        elif i is None:
            axes.append(None)
        elif isinstance(i, slice):
            if d >= len(g.axes) or (g.axes[d] is not None and i != slice(None)):
                return None
            axes.append(g.axes[d])
            d += 1
        elif isinstance(i, int) and not isinstance(i, bool):
            if d >= len(g.axes) or g.axes[d] is not None:
                return None
            d += 1
        else:
            return None
    axes.extend(g.axes[d:])
    return replace(g, axes=tuple(axes))


def norm_dims(dim: Any, nd: int) -> list[int]:
    if dim is None:
        return list(range(nd))
    return [d % nd for d in (dim if isinstance(dim, (tuple, list)) else [dim])]


def reduce(g: Any, value: torch.Tensor, dim: Any, keepdim: bool) -> Geo | None:
    if not isinstance(g, Geo):
        return None
    dims = norm_dims(dim, len(g.axes))
    spatial = [d for d in dims if g.axes[d] is not None]
    if spatial:
        if keepdim and len(spatial) == 2:
            return global_reduce(g, value, g.axes)
        return None
    axes = g.axes if keepdim else tuple(a for d, a in enumerate(g.axes) if d not in dims)
    return replace(g, axes=axes)


def over_dims(g: Any, dims: list[int]) -> Geo | None:
    """An op that mixes values along ``dims`` (softmax, layer/group norm): not local if that includes space."""
    if not isinstance(g, Geo):
        return None
    if any(g.axes[d % len(g.axes)] is not None for d in dims):
        return replace(g, local=False)
    return g


def padded(g: Any, pad: Any, mode: str, dynamic: bool) -> Geo | None:
    """F.pad: (left, right) pairs starting at the last dim."""
    if not isinstance(g, Geo):
        return None
    start = list(g.start)
    for i in range(len(pad) // 2):
        a = g.axes[-1 - i]
        if a is not None:
            start[a] = g.start[a] - pad[2 * i] * g.jump[a]  # unit 0 now sits on the first padded pixel
    local = g.local and not dynamic and mode != "circular"
    return replace(g, start=two(start), local=local)
