"""The notebooks run top to bottom against the installed package (code cells executed in one namespace)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

# What each notebook must have computed at its end (its own point, not only "it ran").
CHECKS = {
    "quickstart.ipynb": lambda ns: bool(ns["out"].layers[0].units),
    "shortcut_lab.ipynb": lambda ns: ns["result"].classes[0].name == ns["lab"]["marked_class"] and ns["f1"] >= 0.9
    and ns["counts"].max() == 9,
}


SCANS = {"shortcut_lab.ipynb"}  # makes a lab and scans it: slow


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name in SCANS else p for p in NOTEBOOKS],
                         ids=[p.name for p in NOTEBOOKS])
def test_notebook_code_cells_run(path: Path) -> None:
    cells = json.loads(path.read_text())["cells"]
    namespace: dict[str, object] = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)  # the notebook is our own file
    assert CHECKS[path.name](namespace)
