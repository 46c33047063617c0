"""deconv.npz: the raw numbers behind the PDF, for users who want to plot their own way."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from vizkit.project.results import DeconvResult


def deconv_arrays(result: DeconvResult) -> dict[str, np.ndarray]:
    """The npz content: ``input`` plus ``<layer>/channels|positions|activations|projections`` per layer.

    channels (K,) int64; positions (K, 2) int64 as (y, x) on the layer's output grid; activations (K,) float32;
    projections (K, C, H, W) float32, raw (unnormalised) in the same order. With recorded switches, also
    ``switches/<pool name>`` (1, C, h, w) int64: for each pooled unit the flat index (over the pool input's H x W,
    per channel) of the maximum it passed on, the location the deconvnet unpools to.
    """
    inp = np.asarray(result.input)
    if inp.ndim != 4 or inp.shape[0] != 1:
        raise ValueError(f"result.input must be (1, C, H, W), got shape {inp.shape}")
    arrays: dict[str, np.ndarray] = {"input": inp.astype(np.float32, copy=False)}
    seen: set[str] = set()
    for lp in result.layers:
        if lp.layer in seen:
            raise ValueError(f"layer {lp.layer!r} appears twice in the result")
        seen.add(lp.layer)
        k = len(lp.units)
        projections = np.empty((k, *inp.shape[1:]), dtype=np.float32)
        for i, unit in enumerate(lp.units):
            proj = np.asarray(unit.projection)
            if proj.shape != inp.shape[1:]:
                raise ValueError(
                    f"layer {lp.layer!r} channel {unit.channel}: projection shape {proj.shape} "
                    f"does not match the input {inp.shape[1:]}"
                )
            projections[i] = proj
        arrays[f"{lp.layer}/channels"] = np.array([u.channel for u in lp.units], dtype=np.int64).reshape(k)
        arrays[f"{lp.layer}/positions"] = np.array([u.position for u in lp.units], dtype=np.int64).reshape(k, 2)
        arrays[f"{lp.layer}/activations"] = np.array([u.activation for u in lp.units], dtype=np.float32).reshape(k)
        arrays[f"{lp.layer}/projections"] = projections
    for pool, idx in result.switches.items():
        arrays[f"switches/{pool}"] = np.asarray(idx).astype(np.int64, copy=False)
    return arrays


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` of exactly ``arrays`` at exactly ``path``, whatever its suffix."""
    # numpy's stub types **kwds against its own keyword `allow_pickle: bool`, so a str -> array mapping fails to check
    named = cast("dict[str, Any]", arrays)
    with open(path, "wb") as f:  # a file object: savez would otherwise append ".npz" to other suffixes
        np.savez_compressed(f, **named)


def save_deconv_npz(result: DeconvResult, path: Path) -> None:
    """Write :func:`deconv_arrays` to ``path`` with ``np.savez_compressed`` (exactly those keys)."""
    write_npz(path, deconv_arrays(result))
