"""The wheel holds every package and data file: CI and users install with ``pip install .`` (not editable), so a
package or data file missing from setup.cfg works in a checkout and fails on a fresh machine."""
from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _config() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def test_every_package_is_listed() -> None:
    listed = set(_config()["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vizkit").rglob("__init__.py")}
    assert found - listed == set(), "add these to [options] packages in setup.cfg"
    assert listed - found == {"vizkit_cli"}


def test_every_data_file_is_package_data() -> None:
    patterns = {package: [g.strip() for g in globs.split(",")]
                for package, globs in _config()["options.package_data"].items()}
    missing = []
    for path in (ROOT / "vizkit").rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        # the data file belongs to its nearest package; its pattern is relative to that package's folder
        folder = path.parent
        while not (folder / "__init__.py").exists():
            folder = folder.parent
        package = ".".join(folder.relative_to(ROOT).parts)
        relative = path.relative_to(folder).as_posix()
        if not any(fnmatch.fnmatch(relative, glob) for glob in patterns.get(package, [])):
            missing.append(str(path.relative_to(ROOT)))
    assert missing == [], "add these to [options.package_data] in setup.cfg"
