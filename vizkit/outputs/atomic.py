"""Atomic outputs: build in a hidden temporary sibling, then move into place.

Several commands write into the same per-image folder (deconv.pdf, gradcam.pdf, report.pdf, ...), so a run
replaces only the entries it wrote, each with an atomic ``os.replace``; files of other commands stay.
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

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


def output_folder(out_dir: str | os.PathLike, stem: str) -> Path:
    """``out_dir/stem``, refusing names that would escape ``out_dir`` or hide the folder."""
    if not stem or stem in (".", "..") or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ValueError(f"output folder name {stem!r} must be a plain, non-hidden file name")
    return Path(out_dir) / stem


def check_writable(out_dir: str | os.PathLike) -> None:
    """Refuse an output folder that cannot be created or written, before any slow work (loading a model,
    optimising images) is spent on results that could not be saved."""
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a folder; choose another output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = _make_temp_dir(out / "probe")
        probe.rmdir()
    except OSError as err:
        raise UserInputError(f"--out {out} is not writable ({err.strerror or err}); choose another output "
                             "folder") from None


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder ``final.parent/.<name>.tmp-<random>``; on success its entries land in ``final``.

    When ``final`` does not exist the whole folder is moved in with one ``os.replace``. When it exists, each entry
    replaces the same-named entry (a file with ``os.replace``; a folder is moved aside, replaced, then deleted) and
    everything else in ``final`` stays. On any exception (KeyboardInterrupt included) the temporary folder is
    removed, the exception propagates, and ``final`` is left exactly as it was.
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
    if not final.exists():
        os.replace(tmp, final)
        return
    for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "manifest.json" or p.name.endswith(".manifest.json")):
        target = final / entry.name  # manifests last: they describe the files already in place
        if entry.is_dir() and target.is_dir():
            old = _sibling(target, "old")
            os.replace(target, old)
            os.replace(entry, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)
    tmp.rmdir()


_W = TypeVar("_W", bound="CommitOnExit")


class CommitOnExit:
    """A file written in pieces (a streamed npz, a video): ``close()`` puts it in place when the ``with`` block ends
    normally, ``abort()`` drops the partial file after an exception, so no half-written output is ever left."""

    def close(self) -> object:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
