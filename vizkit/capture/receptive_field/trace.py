"""Running the analysis: an fx tracer that records each module's first output node and makes untraceable
modules opaque, an interpreter that propagates geometry node by node, and a hook-based fallback for pure chains
that fx cannot trace."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from vizkit.capture.hooks import Hooks
from vizkit.capture.receptive_field.geometry import CONST, Geo, first_geo, input_geo
from vizkit.capture.receptive_field.ops import function_state, method_state, module_state

__all__ = ["Propagator", "Tracer", "chain_fallback", "traced"]


def traced(model: nn.Module, x: torch.Tensor) -> dict[str, Geo | None]:
    """Geometry of every module's first output, by tracing ``model`` and running the graph on zeros like ``x``:
    on meta tensors (shapes only, no arithmetic) and, if some op of the model cannot run there, on ``x``."""
    tracer = Tracer()
    graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph)
    try:
        states = _run_on_meta(gm, x)
    except Exception:  # noqa: BLE001 - an op without a meta kernel, data-dependent code, an unregistered tensor
        prop = Propagator(gm)
        prop.run(x)
        states = prop.states
    return {name: first_geo(states.get(node)) for name, node in tracer.outputs.items()}


class _Run(nn.Module):
    """Runs the propagator as a module's forward, so that ``functional_call`` can hand it meta parameters."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm
        self.states: dict[fx.Node, Any] = {}

    def forward(self, x: torch.Tensor) -> None:
        prop = Propagator(self.gm)
        prop.run(x)
        self.states = prop.states


def _run_on_meta(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, Any]:
    """The graph on meta copies of every parameter and buffer, swapped in by ``torch.func.functional_call`` for
    this call only (the modules get their own tensors back on return, also after an exception)."""
    runner = _Run(gm)
    tensors = {f"gm.{k}": v.detach().to("meta")
               for k, v in [*gm.named_parameters(remove_duplicate=False), *gm.named_buffers(remove_duplicate=False)]}
    torch.func.functional_call(runner, tensors, (torch.zeros(x.shape, dtype=x.dtype, device="meta"),),
                               tie_weights=False, strict=False)
    return runner.states


def _has_tensor(value: Any) -> bool:
    return any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(value))


class Propagator(fx.Interpreter):
    """Runs the graph and computes every node's state from its inputs' states and the concrete values."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.states: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        try:
            self.states[n] = self._state(n, out)
        except Exception:  # noqa: BLE001 - an op whose arguments this module misreads is "not derivable", not a crash
            self.states[n] = None
        return out

    def _state(self, n: fx.Node, out: Any) -> Any:
        if n.op == "placeholder":
            return input_geo(out) if not self.states else CONST
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
        if n.op == "call_module":  # fx: the target of call_module and call_method is a name
            return module_state(self.fetch_attr(cast(str, n.target)), s, v, out)
        if n.op == "call_function":
            return function_state(n.target, s, v, args, kwargs, out, dynamic)
        if n.op == "call_method":
            return method_state(cast(str, n.target), s, v, args, kwargs, out)
        return None


# ------------------------------------------------------------------------------------------------------ tracing

class Tracer(fx.Tracer):
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
            except Exception:  # noqa: BLE001 - untraceable submodule: undo its partial trace, keep it opaque
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


def chain_fallback(model: nn.Module, x: torch.Tensor) -> dict[str, Geo | None]:
    """Module-order analysis for models fx cannot trace: follows leaf modules while each consumes the previous
    output and nothing but modules touches the tensors; every later output gets ``None``."""
    geo_of: dict[int, Any] = {id(x): input_geo(x)}
    keep: list[torch.Tensor] = [x]  # keep tensors alive so ids stay unique
    result: dict[str, Geo | None] = {}
    names = {m: n for n, m in model.named_modules() if n}
    depth = [0]
    broken = [False]

    class _Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            # Tensor.shape is typed as a Size; on the class it is the getset descriptor whose __get__ a read calls
            shape_get = torch.Tensor.shape.__get__  # type: ignore[attr-defined]
            if depth[0] == 0 and func not in (torch.Tensor.size, torch.Tensor.dim, shape_get):
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
            new = module_state(m, [state], ins[:1], out) if state is not None and o is not None else None
            if o is not None:
                geo_of[id(o)] = new
                keep.append(o)
        if name and name not in result and isinstance(out, torch.Tensor):
            result[name] = geo_of.get(id(out)) if not broken[0] else None

    with Hooks() as hooks:
        for m in names:
            hooks.forward_pre(m, pre)
            hooks.forward(m, post)
        with _Watch():
            model(x)
    return {k: (v if isinstance(v, Geo) else None) for k, v in result.items()}
