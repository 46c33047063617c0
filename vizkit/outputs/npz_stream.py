"""An npz built a row at a time in constant memory: ``NpzStream.append({key: array})`` adds one row (e.g. one
video frame) to each key; ``close()`` writes ``key.npy`` members of shape (rows, *row shape) into a zip that
``np.load`` reads like any npz.

Rows go to one raw temporary file per key in the destination folder; on close each is copied in chunks behind its
``.npy`` header into the (deflated) zip, written under a temporary name and renamed into place. On an exception
inside the ``with`` block every temporary file is removed and nothing appears under the final name.
"""
from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import numpy as np

from vizkit.outputs.atomic import CommitOnExit

__all__ = ["NpzStream"]

_CHUNK = 1 << 20


class NpzStream(CommitOnExit):
    """Append rows per key; every row of a key must have the first row's shape and dtype."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._token = secrets.token_hex(4)
        self._files: dict[str, tuple[Path, IO[bytes], np.dtype, tuple[int, ...]]] = {}
        self.rows: dict[str, int] = {}

    def append(self, row: Mapping[str, np.ndarray | float | int]) -> None:
        """Add one row to each key in ``row`` (keys may start later than others; each counts its own rows)."""
        for key, value in row.items():
            arr = np.asarray(value)
            if key not in self._files:
                raw = self.path.parent / f".{self.path.name}.{self._token}-{len(self._files)}.raw"
                self._files[key] = (raw, open(raw, "wb"), arr.dtype, arr.shape)  # noqa: SIM115
                self.rows[key] = 0
            _, handle, dtype, shape = self._files[key]
            if arr.shape != shape:
                raise ValueError(f"npz key {key!r}: row {self.rows[key]} has shape {arr.shape}, the first had {shape}")
            handle.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
            self.rows[key] += 1

    def close(self) -> Path:
        """Write the npz and remove the row files; returns its path."""
        tmp = self.path.parent / f".{self.path.name}.{self._token}.tmp"
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                for key, (raw, handle, dtype, shape) in self._files.items():
                    handle.close()
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": (self.rows[key], *shape)}
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as member, open(raw, "rb") as src:
                        np.lib.format.write_array_header_2_0(member, header)
                        shutil.copyfileobj(src, member, _CHUNK)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.abort()
            raise
        self.abort()  # the row files are no longer needed
        return self.path

    def abort(self) -> None:
        """Remove every temporary row file (safe to call twice)."""
        for raw, handle, _, _ in self._files.values():
            handle.close()
            raw.unlink(missing_ok=True)
        self._files.clear()
