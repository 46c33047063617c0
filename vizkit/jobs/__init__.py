"""Whole commands as functions: a config dataclass in, per-image folders and a ``JobReport`` out.

The CLI only turns options into these configs; everything it does is reachable from Python. A command builds one
``RunContext`` per run and writes each result with ``vizkit.render.writer.write_outputs`` (docs/DESIGN.md,
"Writing a new command").

Names are imported lazily (PEP 562): ``import vizkit.jobs`` costs nothing until a name is used. Which names, from
which module: the command table in ``vizkit.commands`` (import from the job module itself for static types).
"""
from __future__ import annotations

import importlib
from typing import Any

from vizkit.commands import job_exports

_EXPORTS = job_exports()  # public name -> module, from the command table (vizkit.commands)
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use: a command loads only the modules it needs."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
