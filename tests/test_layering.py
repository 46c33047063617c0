"""The layering never-rules of docs/DESIGN.md ("Layering"), read from the source with ``ast``: every ``import`` and
``from ... import`` counts, at module level, inside functions (lazy imports) and under ``TYPE_CHECKING``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> packages it never imports (docs/DESIGN.md, "Layering").
NEVER: dict[str, tuple[str, ...]] = {
    "vizkit.project": ("vizkit.jobs", "vizkit.render"),
    "vizkit.capture": ("vizkit.jobs", "vizkit.render"),
    "vizkit.load": ("vizkit.jobs", "vizkit.render", "vizkit.capture", "vizkit.lab"),
    "vizkit.render": ("vizkit.jobs",),
}

#: (importing module, imported module) pairs that break a rule today in code another change is moving; each line
#: says where it goes. Empty this set as those moves land; a pair that no longer occurs fails the test below.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports anywhere in its body, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            if base == "vizkit" or not node.module:  # `from vizkit import jobs`, `from .. import render`
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in sorted((ROOT / "vizkit").rglob("*.py")):
        name = module_name(path)
        for layer, banned in NEVER.items():
            if not _within(name, layer):
                continue
            for target in imported(path.read_text(), name, is_package=path.name == "__init__.py"):
                if any(_within(target, b) for b in banned):
                    found.add((name, target))
    return found


def test_the_checker_sees_lazy_type_checking_and_relative_imports() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vizkit.render.writer\n"
              "def f():\n    from vizkit.jobs.context import RunContext\n    from .. import render\n"
              "    from vizkit import jobs\n")
    found = imported(source, "vizkit.load.some_module")
    assert {"vizkit.render.writer", "vizkit.jobs.context", "vizkit.render", "vizkit.jobs"} <= found


def test_never_rules_hold() -> None:
    broken = sorted(violations() - ALLOWED)
    assert not broken, "layering never-rules broken (docs/DESIGN.md, Layering):\n" + "\n".join(
        f"  {importer} imports {target}" for importer, target in broken)


@pytest.mark.parametrize("pair", sorted(ALLOWED))
def test_allowed_exceptions_still_exist(pair: tuple[str, str]) -> None:
    assert pair in violations(), f"{pair} no longer occurs: remove it from ALLOWED"
