"""Build models on the meta device for tests: shapes without memory or init cost.

``build_on_meta`` may patch ``nn.Module.register_parameter``/``register_buffer`` process-wide for the duration of
one build (builders that compute with tensors while constructing). That is acceptable in a test process and
nowhere else: vizkit's runtime never imports this module.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["build_on_meta"]


def build_on_meta(builder: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``builder(*args, **kwargs)`` with every parameter and buffer on the meta device: no memory, no init cost.

    Tries ``with torch.device("meta")`` first; builders that compute with tensors while constructing (torchvision
    RegNet's ``BlockParams`` calls ``.tolist()``) get a second try in which only registered parameters and buffers
    are moved to meta (each is allocated uninitialised on the CPU for a moment).
    """
    try:
        with torch.device("meta"):
            return builder(*args, **kwargs)
    except NotImplementedError:
        with _register_on_meta():
            return builder(*args, **kwargs)


@contextlib.contextmanager
def _register_on_meta() -> Iterator[None]:
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def on_meta_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register_parameter(self, name, param)
        p = self._parameters[name]
        if p is not None:
            self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    def on_meta_buffer(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(self, name, tensor, persistent)
        b = self._buffers[name]
        if b is not None:
            self._buffers[name] = b.to("meta")

    nn.Module.register_parameter = on_meta_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = on_meta_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
