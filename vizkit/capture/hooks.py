"""``Hooks``: a set of hooks that live for one block of code and are removed when it ends, also after an exception.

    with Hooks() as hooks:
        for name, module in model.named_modules():
            hooks.forward(module, record(name))
        model(x)
    # every hook is gone here

Registering happens inside the ``with`` so that a failure half-way through removes the hooks already added
(captum's ``_forward_layer_distributed_eval`` pattern; never ``__del__``). The model keeps no hook of vizkit's.
"""
from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Hooks", "ScopedHooks"]


class Hooks:
    """Register forward, forward-pre and full backward hooks (or add any removable handle); ``remove()`` and
    ``__exit__`` remove them all, newest first."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def forward(self, module: nn.Module, hook: Callable[..., Any], **kwargs: Any) -> RemovableHandle:
        return self.add(module.register_forward_hook(hook, **kwargs))

    def forward_pre(self, module: nn.Module, hook: Callable[..., Any], **kwargs: Any) -> RemovableHandle:
        return self.add(module.register_forward_pre_hook(hook, **kwargs))

    def backward(self, module: nn.Module, hook: Callable[..., Any], **kwargs: Any) -> RemovableHandle:
        return self.add(module.register_full_backward_hook(hook, **kwargs))

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        """Keep a handle registered elsewhere (a tensor hook, a global hook) so it is removed with the rest."""
        self._handles.append(handle)
        return handle

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
                 ) -> None:
        self.remove()


_S = TypeVar("_S", bound="ScopedHooks")


class ScopedHooks:
    """Base of the recorders whose hooks live for one ``with`` block: a subclass registers them in
    ``_register(hooks)``; a failure half-way removes those already added, and ``__exit__`` removes them all."""

    _hooks: Hooks

    def _register(self, hooks: Hooks) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self._hooks = Hooks()
        try:
            self._register(self._hooks)
        except BaseException:
            self._hooks.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.remove()
