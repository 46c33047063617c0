"""DIR/evolve/: evolve.npz, evolve.pdf, html/ and evolve.manifest.json (``evolve_document``: the one writer
``vizkit.render.writer.write_outputs`` writes them atomically, manifest last).

evolve.npz keys (T checkpoints in the order used, C channels, K top images, U rendered units of a layer):

- ``checkpoints`` (T,) str; ``order`` () str: how they were ordered; ``numbers`` (T,) int64: the epoch/step number
  read from each name (-1 when ordered by modification time); ``skipped_checkpoints`` str; ``paths`` (N,) str: the
  dataset in scan order (the index space of ``image_index``);
- per layer L, as in ``mine.npz`` with a leading checkpoint axis: ``L/values`` (T,C,K) float32, ``L/image_index``
  (T,C,K) int64, ``L/positions`` (T,C,K,2), ``L/mean`` and ``L/rate`` (T,C); the trends: ``L/dead`` (T,) int64,
  ``L/rms_median`` and ``L/rms_above`` (T,), ``L/stable`` (T-1,) share of units whose top-1 image is unchanged,
  ``L/topk_same`` (T-1,) share whose top-K set is unchanged, ``L/top1_changed`` (T-1,C) bool;
- the Fig. 4 cells: ``L/units`` (U,) int64; ``L/cell/values`` (T,U) float32 (NaN: no entry), ``L/cell/image_index``
  (T,U), ``L/cell/boxes`` (T,U,4) (y0, y1, x0, x1), ``L/cell/offsets`` (T,U), ``L/cell/scale`` (T,U) and
  ``L/cell/data`` int8: projection (t, u) is ``data[o : o + C*h*w]`` reshaped to (C, h, w) times ``scale[t, u]``
  (int8 with one scale per projection, as ``mine.npz`` stores them).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vizkit.project.results import Cell, EvolveResult
from vizkit.render.evolve_html import write_evolve_html
from vizkit.render.evolve_pdf import render_evolve_pdf
from vizkit.render.info import ReportInfo
from vizkit.render.writer import Document

MANIFEST = "evolve.manifest.json"


def evolve_arrays(result: EvolveResult) -> dict[str, np.ndarray]:
    """Every key of evolve.npz (see the module docstring)."""
    cp = result.checkpoints
    out: dict[str, np.ndarray] = {
        "checkpoints": np.array([str(p) for p in cp.paths], dtype=str), "order": np.array(cp.order),
        "numbers": np.array([-1 if n is None else n for n in cp.numbers], np.int64),
        "skipped_checkpoints": np.array(result.skipped_checkpoints, dtype=str),
        "paths": np.array(result.paths, dtype=str)}
    for evo in result.layers:
        out.update(evo.arrays())
        out.update(cell_arrays(evo.layer, result.units[evo.layer], result.cells[evo.layer]))
    return out


def cell_arrays(layer: str, units: list[int], cells: list[list[Cell | None]]) -> dict[str, np.ndarray]:
    """The ``L/units`` and ``L/cell/*`` keys (see the module docstring)."""
    t_count, u_count = len(cells), len(units)
    values = np.full((t_count, u_count), np.nan, np.float32)
    index = np.full((t_count, u_count), -1, np.int64)
    boxes = np.full((t_count, u_count, 4), -1, np.int64)
    offsets = np.full((t_count, u_count), -1, np.int64)
    scale = np.zeros((t_count, u_count), np.float32)
    data: list[np.ndarray] = []
    at = 0
    for t, row in enumerate(cells):
        for u, cell in enumerate(row):
            if cell is None:
                continue
            p = np.nan_to_num(np.asarray(cell.projection, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            peak = float(np.abs(p).max()) if p.size else 0.0
            scale[t, u] = peak / 127 if peak > 0 else 0.0
            q = np.round(p / scale[t, u]).astype(np.int8) if peak > 0 else np.zeros(p.shape, np.int8)
            values[t, u], index[t, u], boxes[t, u], offsets[t, u] = cell.value, cell.image_index, cell.box, at
            data.append(q.ravel())
            at += q.size
    return {f"{layer}/units": np.array(units, np.int64), f"{layer}/cell/values": values,
            f"{layer}/cell/image_index": index, f"{layer}/cell/boxes": boxes, f"{layer}/cell/offsets": offsets,
            f"{layer}/cell/scale": scale,
            f"{layer}/cell/data": np.concatenate(data) if data else np.zeros(0, np.int8)}


def read_cell(arrays: Mapping[str, np.ndarray], layer: str, t: int, u: int) -> np.ndarray | None:
    """Decode the stored projection of unit ``u`` (position in ``L/units``) at checkpoint ``t``: (C, h, w) float32."""
    offset = int(arrays[f"{layer}/cell/offsets"][t, u])
    if offset < 0:
        return None
    y0, y1, x0, x1 = (int(v) for v in arrays[f"{layer}/cell/boxes"][t, u])
    later = [int(o) for o in np.asarray(arrays[f"{layer}/cell/offsets"]).ravel() if o > offset]
    end = min(later) if later else int(arrays[f"{layer}/cell/data"].size)
    flat = np.asarray(arrays[f"{layer}/cell/data"][offset:end], np.float32) * float(arrays[f"{layer}/cell/scale"][t, u])
    return flat.reshape(-1, y1 - y0, x1 - x0)


def save_evolve_npz(result: EvolveResult, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: savez would otherwise append ".npz"
        np.savez_compressed(f, **evolve_arrays(result))  # type: ignore[arg-type]


def evolve_document(result: EvolveResult, info: ReportInfo) -> Document:
    """evolve.npz, evolve.pdf, html/, then the manifest with the checkpoints used, the dataset and the page count."""
    extra: dict[str, object] = {
        "checkpoints": {"order": result.checkpoints.order, "used": [str(p) for p in result.checkpoints.paths],
                        "skipped": result.skipped_checkpoints},
        "dataset": {"source": info.settings.get("data"), "listed": len(result.paths),
                    "scanned": result.images_scanned,
                    "skipped": [{"path": p, "reason": r} for p, r in result.skipped_images]}}

    def pdf(path: Path) -> None:
        extra["pdf_pages"] = render_evolve_pdf(result, info, path, patches=result.patches)

    return Document([("evolve.npz", lambda p: save_evolve_npz(result, p)), ("evolve.pdf", pdf),
                     ("html", lambda p: write_evolve_html(result, info, p, patches=result.patches))],
                    manifest=MANIFEST, folder="evolve", manifest_extra=extra)


__all__ = ["MANIFEST", "cell_arrays", "evolve_arrays", "evolve_document", "read_cell", "save_evolve_npz"]
