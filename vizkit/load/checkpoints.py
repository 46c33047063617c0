"""Training checkpoints for ``vizkit evolve``: which files, in which order.

Order rule (said in every output): checkpoints are ordered by the training-progress number in their file names:
the number after ``epoch``, ``ep``, ``step``, ``iter``, ``it`` or ``e`` at the start of a word of the file name
(``epoch_3.pt``, ``model-step2000.pth``, ``ckpt_e07.pt``), else the last number in the file's stem
(``checkpoint-12.pt``). A file without a number is dropped when it holds the same weights as another checkpoint
(``vizkit lab train``'s ``labnet.pt`` is its last epoch again), else it goes after the numbered ones. Modification
time decides only among files with the same number or without one, and every time it does, ``notes`` says so
(``evolve`` prints them on stderr and page 1).
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vizkit.errors import UserInputError

CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar"})
BY_NAME = "epoch/step number in the file name"
BY_MTIME = "modification time"
BY_NAME_UNNUMBERED_LAST = "epoch/step number in the file name; files without one last, by modification time"
_KEYWORD = re.compile(r"(?<![a-z])(?:epoch|step|iter|ep|it|e)[_\-.=]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CheckpointList:
    """The checkpoints in the order used; ``numbers[i]`` the number read from the name (None without one);
    ``order``: ``BY_NAME``, ``BY_NAME_UNNUMBERED_LAST`` or ``BY_MTIME``; ``notes``: the files dropped as duplicates
    and every place where modification time decided the order (one line each)."""

    paths: list[Path]
    numbers: list[int | None]
    order: str
    notes: tuple[str, ...] = ()


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
    return order_checkpoints(found)


def _fingerprint(path: Path) -> str:
    """What a checkpoint holds: for a ``torch.save`` zip archive its members' (name, CRC-32, size) from the central
    directory, without the archive's folder name (torch names it after the file: ``labnet.pt`` saved from the same
    tensors as ``epoch_15.pt`` differs in bytes, not in content); for any other file a sha256 of its bytes."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = sorted((info.filename.partition("/")[2], info.CRC, info.file_size)
                             for info in archive.infolist())
        return "zip:" + repr([m for m in members if m[0] != ".data/serialization_id"])
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return "raw:" + sha.hexdigest()


def _duplicates(files: Sequence[Path], numbers: Sequence[int | None]) -> dict[Path, Path]:
    """Unnumbered file -> the checkpoint holding the same weights (a numbered one first). Zip archives are compared
    by their directories; other files are read only when another file has their size."""
    unnumbered = [p for p, n in zip(files, numbers, strict=True) if n is None]
    if not unnumbered:
        return {}
    sizes = {p: p.stat().st_size for p in files}

    def worth_reading(p: Path) -> bool:  # a zip's directory is cheap; other files only when a pair may match
        return zipfile.is_zipfile(p) or any(q != p and sizes[q] == sizes[p] and (p in unnumbered or q in unnumbered)
                                            for q in files)

    prints = {p: _fingerprint(p) for p in files if worth_reading(p)}
    ranked = [p for p, n in zip(files, numbers, strict=True) if n is not None] + unnumbered
    same: dict[Path, Path] = {}
    for u in unnumbered:
        twin = next((p for p in ranked if p != u and p not in same and u in prints and prints.get(p) == prints[u]),
                    None)
        if twin is not None:
            same[u] = twin
    return same


def _by_mtime(files: Sequence[Path]) -> list[Path]:
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def order_checkpoints(files: Sequence[Path]) -> CheckpointList:
    """Order ``files`` by the rule of the module docstring."""
    numbers = [progress_number(p) for p in files]
    same = _duplicates(files, numbers)
    notes = [f"skipped {p}: the same weights as {twin}" for p, twin in same.items()]
    kept = [(n, p) for n, p in zip(numbers, files, strict=True) if p not in same]
    numbered = sorted({n for n, _ in kept if n is not None})
    ordered: list[tuple[int | None, Path]] = []
    for number in numbered:
        group = [p for n, p in kept if n == number]
        if len(group) > 1:
            notes.append(f"modification time orders {', '.join(str(p) for p in _by_mtime(group))}: they share the "
                         f"number {number}")
        ordered += [(number, p) for p in _by_mtime(group)]
    bare = [p for n, p in kept if n is None]
    if len(bare) > 1 or (bare and not numbered):
        names = ", ".join(str(p) for p in _by_mtime(bare))
        notes.append(f"modification time orders {names}: no epoch/step number in "
                     f"{'their names' if len(bare) > 1 else 'the name'}")
    ordered += [(None, p) for p in _by_mtime(bare)]
    order = BY_MTIME if not numbered else BY_NAME_UNNUMBERED_LAST if bare else BY_NAME
    return CheckpointList([p for _, p in ordered], [n for n, _ in ordered], order, tuple(notes))


__all__ = ["BY_MTIME", "BY_NAME", "BY_NAME_UNNUMBERED_LAST", "CHECKPOINT_SUFFIXES", "CheckpointList",
           "list_checkpoints", "order_checkpoints", "progress_number"]
