"""All-or-nothing output folders: build in a hidden temporary sibling, then swap it into place."""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vizkit.errors import UserInputError


def _sibling(final: Path, tag: str) -> Path:
    return final.parent / f".{final.name}.{tag}-{secrets.token_hex(4)}"


def _make_temp_dir(final: Path) -> Path:
    # os.mkdir (not tempfile.mkdtemp) so the folder gets the user's umask rather than 0700.
    for _ in range(100):
        tmp = _sibling(final, "tmp")
        try:
            os.mkdir(tmp)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary folder next to {final}")


def _check_target(final: Path) -> None:
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise UserInputError(f"{final} exists and is not a folder; remove it or choose another output folder.")


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder ``final.parent/.<name>.tmp-<random>``; on success it becomes ``final``.

    If ``final`` already exists it is moved aside, the new folder is moved in with ``os.replace`` and only then
    is the old one deleted. On any exception (KeyboardInterrupt included) the temporary folder is removed, the
    exception propagates, and a previous ``final`` is left exactly as it was. Not meant for two writers of the
    same ``final`` at once (the later swap wins; the loser's exception says so).
    """
    final = Path(final)
    _check_target(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(final)
    try:
        yield tmp
        _check_target(final)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, final: Path) -> None:
    old: Path | None = None
    if final.exists():
        old = _sibling(final, "old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None and not final.exists():
            os.replace(old, final)  # put the previous good result back
        elif old is not None:
            shutil.rmtree(old, ignore_errors=True)  # someone else's newer result is in place
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
