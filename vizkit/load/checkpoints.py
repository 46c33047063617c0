"""Training checkpoints for ``vizkit evolve``: which files, in which order.

Order rule (said in every output): when every checkpoint's file name carries a training-progress number and the
numbers differ, they are ordered by it: the number after ``epoch``, ``ep``, ``step``, ``iter``, ``it`` or ``e`` at
the start of a word of the file name (``epoch_3.pt``, ``model-step2000.pth``, ``ckpt_e07.pt``), else the last
number in the file's stem (``checkpoint-12.pt``). Otherwise they are ordered by modification time (ties: by path).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vizkit.errors import UserInputError

CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar"})
BY_NAME = "epoch/step number in the file name"
BY_MTIME = "modification time"
_KEYWORD = re.compile(r"(?<![a-z])(?:epoch|step|iter|ep|it|e)[_\-.=]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CheckpointList:
    """The checkpoints in the order used; ``numbers[i]`` the number read from the name (None when ordered by time);
    ``order``: ``BY_NAME`` or ``BY_MTIME``."""

    paths: list[Path]
    numbers: list[int | None]
    order: str


def progress_number(path: str | os.PathLike) -> int | None:
    """The epoch/step number in a checkpoint's file name, or None (see the module docstring)."""
    stem = Path(path).name
    for suffix in sorted(CHECKPOINT_SUFFIXES, key=len, reverse=True):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    keyword = _KEYWORD.findall(stem)
    if keyword:
        return int(keyword[-1])
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


def list_checkpoints(sources: list[str | os.PathLike]) -> CheckpointList:
    """Files as given and, for a folder, its checkpoint files (suffixes ``CHECKPOINT_SUFFIXES``, not recursive),
    ordered by the rule above. A missing path or an empty folder is a one-line ``UserInputError``; a given file is
    kept whatever its suffix (loading it decides)."""
    if not sources:
        raise UserInputError("no checkpoint given: pass checkpoint files or a folder of them")
    found: list[Path] = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in CHECKPOINT_SUFFIXES)
            if not inside:
                raise UserInputError(f"{p}: no checkpoint files ({', '.join(sorted(CHECKPOINT_SUFFIXES))}) in the "
                                     "folder")
            found.extend(inside)
        elif p.exists():
            found.append(p)
        else:
            raise UserInputError(f"checkpoint not found: {p}")
    found = list(dict.fromkeys(found))
    numbers = [progress_number(p) for p in found]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        pairs = sorted(zip(numbers, found, strict=True), key=lambda pair: (pair[0], str(pair[1])))
        return CheckpointList([p for _, p in pairs], [n for n, _ in pairs], BY_NAME)
    ordered = sorted(found, key=lambda p: (p.stat().st_mtime_ns, str(p)))
    return CheckpointList(ordered, [None] * len(ordered), BY_MTIME)


__all__ = ["BY_MTIME", "BY_NAME", "CHECKPOINT_SUFFIXES", "CheckpointList", "list_checkpoints", "progress_number"]
