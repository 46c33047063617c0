"""manifest.json: how a per-image folder was made. Written last, so its presence means the folder is complete."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from vizkit.files import sha256_file
from vizkit.outputs.info import ReportInfo, library_versions

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def _jsonable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"manifest: cannot write {type(value).__name__} value {value!r} as JSON")


def manifest_content(folder: Path, info: ReportInfo, timings: dict[str, float], name: str = MANIFEST_NAME, *,
                     extra: Mapping[str, object] | None = None) -> dict:
    """The manifest's keys; ``extra`` (a command's own keys, e.g. mine's dataset) come last."""
    folder = Path(folder)
    files = [
        {"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != name
    ]
    command = info.command if isinstance(info.command, str) else [str(a) for a in info.command]
    weights: dict[str, object] = {"source": info.weights, "sha256": info.weights_sha256, "pretrained": info.pretrained}
    if info.checksum_match is not None:  # recorded only when there was a published checksum to compare with
        weights["checksum_match"] = info.checksum_match
    content: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "image": info.image_path,
        "model": info.model,
        "weights": weights,
        "preprocessing": info.preprocessing,
        "versions": library_versions(),
        "command": command,
        "settings": info.settings,
        "timings": {k: float(v) for k, v in timings.items()},
        "files": files,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if info.seed is not None:  # random-init weights: the seed that reproduces them
        content["seed"] = info.seed
    if info.notes:
        content["notes"] = list(info.notes)
    content.update(extra or {})
    return content


def write_manifest(folder: Path, info: ReportInfo, timings: dict[str, float], name: str = MANIFEST_NAME, *,
                   extra: Mapping[str, object] | None = None) -> Path:
    """Hash every file already in ``folder`` (recursively) and write ``folder/<name>``; call it last.

    ``vizkit deconv`` writes ``manifest.json``; other commands sharing the per-image folder write
    ``<command>.manifest.json`` so that no run overwrites another command's record.
    """
    content = manifest_content(folder, info, timings, name, extra=extra)
    text = json.dumps(content, indent=2, default=_jsonable, allow_nan=False) + "\n"
    path = Path(folder) / name
    path.write_text(text, encoding="utf-8")
    return path
