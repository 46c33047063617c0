"""The one npz writer: every command's raw arrays go through ``write_npz``."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` of exactly ``arrays`` at exactly ``path``, whatever its suffix."""
    # numpy's stub types **kwds against its own keyword `allow_pickle: bool`, so a str -> array mapping fails to check
    named = cast("dict[str, Any]", dict(arrays))
    with open(path, "wb") as f:  # a file object: savez would otherwise append ".npz" to other suffixes
        np.savez_compressed(f, **named)


__all__ = ["write_npz"]
