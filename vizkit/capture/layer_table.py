"""The layer table behind ``vizkit layers``: every module with its output shape, parameters, MACs, receptive field.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (the maintained counter: conv, linear, matmul and
attention ops; elementwise ops, normalisation and pooling count zero), halved. Per-module MACs are attributed by our
own pre/post hooks as the counter's running total across each call (outermost call only, summed over calls),
keyed by ``named_modules()`` paths. We do not read the counter's own per-module rows: its ``ModuleTracker`` names
the root by class name and a module registered under two paths by its last path, while ``named_modules()``
reports the first.

Conventions, checked against torchvision's published ``meta["num_params"]`` / ``meta["_ops"]``:

* the forward runs in eval mode, as torchvision counted ``_ops``: auxiliary classifiers (Inception-v3's
  ``AuxLogits``, GoogLeNet's ``aux1``/``aux2``) do not run and add no MACs, and their rows have no output shape;
* ``total_params`` counts every parameter of the model as given (shared ones once), used or not;
  ``unused_params`` is the part that took no part in the forward. torchvision's Inception-v3 weights keep the
  aux head (its ``num_params`` 27,161,264 includes it: ``total_params``), while ``googlenet(weights=...)`` drops
  aux1/aux2 unless asked (``num_params`` 6,624,904 = ``total_params - unused_params`` of a default-built
  GoogLeNet, or ``total_params`` of ``googlenet(aux_logits=False)``).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

from vizkit.capture.hooks import Hooks
from vizkit.capture.receptive_field import forward_failed, receptive_fields, zeros_input
from vizkit.capture.state import preserve_model_state

__all__ = ["SWITCH_TYPES", "LayerRow", "LayerTable", "layer_table"]

SWITCH_TYPES: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)
"""Modules whose forward records max-pool switches for the deconvnet."""


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    receptive_field: tuple[int, int] | None
    stride: tuple[int, int] | None
    switches: bool
    calls: int


@dataclass
class LayerTable:
    rows: list[LayerRow]
    total_params: int
    total_macs: int
    input_shape: tuple[int, ...]
    unused_params: int = 0  # parameters that took no part in the (eval-mode) forward, e.g. auxiliary heads

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def format(self) -> str:
        """Aligned text table, one row per module, with totals."""
        head = ("name", "type", "output", "params", "MACs", "RF", "stride", "sw", "calls")
        lines = [head]
        for r in self.rows:
            lines.append((
                r.name, r.type,
                "x".join(map(str, r.output_shape)) if r.output_shape is not None else "-",
                _human(r.params), _human(r.macs),
                _hw(r.receptive_field), _hw(r.stride),
                "yes" if r.switches else "", str(r.calls),
            ))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        right = {3, 4, 5, 6, 8}
        text = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                          for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip() for line in lines]
        text.insert(1, "-" * len(text[0]))
        text.append("-" * len(text[0]))
        text.append(f"input {'x'.join(map(str, self.input_shape))}   params {_human(self.total_params)} "
                    f"({self.total_params:,})   MACs {_human(self.total_macs)} ({self.total_macs:,})")
        if self.unused_params:
            text.append(f"{self.unused_params:,} parameters take no part in the eval-mode forward "
                        "(e.g. auxiliary heads)")
        return "\n".join(text)


def layer_table(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> LayerTable:
    """Describe every module of ``model`` for one eval-mode forward on zeros of ``input_shape``.

    Works on real models (the forward runs on the model's device) and, at no cost, on models built on the meta
    device (``vizkit.testing.meta.build_on_meta`` builds them in tests). The model is left as it was: hooks are
    removed and every module's own ``training`` flag is restored even if the forward raises. See the module
    docstring for the counting rules.
    """
    input_shape = tuple(int(n) for n in input_shape)
    named = [(name, m) for name, m in model.named_modules() if name]
    stats = {id(m): _Stats() for _, m in named}
    counter = FlopCounterMode(display=False)
    params = {id(p): p for p in model.parameters()}
    use = _ParamUse(params)

    def pre(m: nn.Module, inputs: Any) -> None:
        st = stats[id(m)]
        st.depth += 1
        if st.depth == 1:
            st.flops_at_entry = counter.get_total_flops()

    def post(m: nn.Module, inputs: Any, output: Any) -> None:
        st = stats[id(m)]
        st.depth -= 1
        if st.depth == 0:
            st.flops += counter.get_total_flops() - st.flops_at_entry
            st.calls += 1
            if st.output_shape is None:
                first = next((t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)), None)
                st.output_shape = tuple(first.shape) if first is not None else None

    with Hooks() as hooks:
        for _, m in named:
            hooks.forward_pre(m, pre)
            hooks.forward(m, post)
        x = zeros_input(model, input_shape)
        with preserve_model_state(model, freeze=False), torch.no_grad(), counter, use:
            try:
                model(x)
            except Exception as e:
                raise forward_failed(input_shape, e) from e

    fields = receptive_fields(model, input_shape)
    rows = []
    for name, m in named:
        st, rf = stats[id(m)], fields.get(name)
        rows.append(LayerRow(
            name=name, type=type(m).__name__, output_shape=st.output_shape,
            params=sum(p.numel() for p in m.parameters()), macs=st.flops // 2,
            receptive_field=rf.size if rf is not None else None, stride=rf.stride if rf is not None else None,
            switches=isinstance(m, SWITCH_TYPES), calls=st.calls,
        ))
    return LayerTable(
        rows=rows,
        total_params=sum(p.numel() for p in params.values()),
        total_macs=counter.get_total_flops() // 2,
        input_shape=input_shape,
        unused_params=sum(p.numel() for i, p in params.items() if i not in use.used),
    )


# ------------------------------------------------------------------------------------------------------ helpers

@dataclass
class _Stats:
    depth: int = 0
    calls: int = 0
    flops: int = 0
    flops_at_entry: int = 0
    output_shape: tuple[int, ...] | None = field(default=None)


class _ParamUse(TorchFunctionMode):
    """Records which of the given parameters any torch function received during the forward."""

    def __init__(self, params: dict[int, nn.Parameter]) -> None:
        super().__init__()
        self.params = params
        self.used: set[int] = set()

    def __torch_function__(self, func: Callable[..., Any], types: Collection[type], args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        for a in pytree.tree_leaves((args, kwargs)):
            if isinstance(a, torch.Tensor) and id(a) in self.params:
                self.used.add(id(a))
        return func(*args, **kwargs)


def _human(n: int) -> str:
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _hw(pair: tuple[int, int] | None) -> str:
    if pair is None:
        return "-"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"
