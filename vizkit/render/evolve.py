"""DIR/evolve/ of ``vizkit evolve``: evolve.npz, evolve.pdf, html/ (``vizkit.render.evolve_html``) and
evolve.manifest.json (``evolve_document``: the one writer ``vizkit.render.writer.write_outputs`` writes them
atomically, manifest last).

evolve.pdf: page 1 how the run was made (checkpoints, model, settings, notes), page 2 the trend panels, then
Zeiler-Fergus Fig. 4 per layer: rows are units, columns are checkpoints in training order, each cell the deconvnet
projection of the unit's strongest activation over the dataset at that checkpoint, with its value (and, on request,
the image patch beside it). A red value marks a cell whose top-1 image differs from the previous checkpoint's: the
feature moved to another image. Every panel of a grid page is drawn into one page-sized Axes (cheap, as in mine.pdf).

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

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.load.checkpoints import BY_MTIME, BY_NAME
from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.evolution import LayerEvolution
from vizkit.project.results import Cell, EvolveResult
from vizkit.render.kit.display import is_zero_projection, normalise_projection
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, draw_picture, new_page, page_canvas
from vizkit.render.kit.pdf import PageMaker, write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes
from vizkit.render.writer import Document

MANIFEST = "evolve.manifest.json"
ROWS_PER_PAGE = 9
COLS_PER_PAGE = 10
LABEL_W = 0.75  # the unit label column, inches
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


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
    write_npz(path, evolve_arrays(result))


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

    def gallery(path: Path) -> None:
        from vizkit.render.evolve_html import write_evolve_html

        write_evolve_html(result, info, path, patches=result.patches)

    return Document([("evolve.npz", lambda p: save_evolve_npz(result, p)), ("evolve.pdf", pdf), ("html", gallery)],
                    manifest=MANIFEST, folder="evolve", manifest_extra=extra)


# ---------------------------------------------------------------- evolve.pdf

def order_sentence(result: EvolveResult) -> str:
    cp = result.checkpoints
    how = ("by the epoch/step number in their file names" if cp.order == BY_NAME else
           "by modification time (no file name carries an epoch/step number)" if cp.order == BY_MTIME else
           "by the epoch/step number in their file names, files without one last")
    return f"{len(cp.paths)} checkpoints, ordered {how}"


def _x(result: EvolveResult) -> tuple[np.ndarray, str]:
    cp = result.checkpoints
    if cp.order == BY_NAME:
        return np.array(cp.numbers, np.float64), "epoch / step (from the file names)"
    return np.arange(1, len(cp.paths) + 1, dtype=np.float64), ("checkpoint (by modification time)"
                                                               if cp.order == BY_MTIME else "checkpoint")


def _panel(ax: Axes, title: str, xlabel: str) -> None:
    ax.set_title(title, fontsize=FONT, loc="left")
    ax.set_xlabel(xlabel, fontsize=FONT - 1, labelpad=1)
    ax.tick_params(labelsize=FONT - 1.5, length=2)
    ax.grid(alpha=0.25, lw=0.5)


def _trends(fig: Figure, result: EvolveResult, top: float) -> None:
    """Five trend panels (one line per layer) in a 3 x 2 grid below ``top``."""
    page_w = fig.get_size_inches()[0]
    x, xlabel = _x(result)
    w, h, gap_x, gap_y = (page_w - 2 * MARGIN - 0.9) / 2, 1.75, 0.9, 0.62
    specs = [("filter RMS: median over the layer's filters", lambda e: e.rms_median, x),
             ("share of filters with RMS above 0.1", lambda e: e.rms_above, x),
             ("dead units over the dataset (share)", lambda e: e.dead.mean(axis=1), x),
             ("mean activation (mean over units)", lambda e: e.mean.mean(axis=1), x),
             ("top-1 image unchanged since the previous checkpoint (share of units)", lambda e: e.stable, x[1:]),
             ("top-K image set unchanged (share of units)", lambda e: e.topk_same, x[1:])]
    for i, (title, values, xs) in enumerate(specs):
        row, col = divmod(i, 2)
        left = MARGIN + 0.45 + col * (w + gap_x)
        y = top + row * (h + gap_y)
        ax = axes_at(fig, left, y, w, h)
        for j, evo in enumerate(result.layers):
            ys = np.asarray(values(evo), np.float64)
            if ys.size and np.isfinite(ys).any():
                ax.plot(xs, ys, "-o", ms=2.5, lw=1.2, color=COLOURS[j % len(COLOURS)], label=evo.layer)
        if i >= 4 or i in (1, 2):
            ax.set_ylim(-0.03, 1.03)
        _panel(ax, title, xlabel)
        if i == 0:
            ax.legend(fontsize=FONT - 2, frameon=False)


def _summary_page(result: EvolveResult, info: ReportInfo) -> Figure:
    fig, c = page_one("evolve", info, title="vizkit evolve: how the features formed during training")
    c.heading("Dataset and checkpoints")
    c.paragraph(f"model {info.model}  \u00b7  dataset {info.settings.get('data')}: {len(result.paths)} images, "
                f"{result.images_scanned} scanned, {len(result.skipped_images)} unreadable", max_lines=2)
    c.paragraph(order_sentence(result) + ": " + ",  ".join(
        f"{label} {p.name}" for label, p in zip(result.labels(), result.checkpoints.paths, strict=True)),
        max_lines=4)
    convs = ", ".join(f"{e.layer} -> {e.conv or 'none'}" for e in result.layers)
    c.paragraph("Per checkpoint: the exact dataset scan of vizkit mine (each unit's strongest activations), then the "
                "deconvnet projection of each rendered unit's strongest activation (Zeiler & Fergus Fig. 4, pages "
                f"3 on); the trends across checkpoints on page 2. Filter RMS is read from each layer's convolution "
                f"({convs}); Zeiler & Fergus renormalised filters above 0.1. Dead: the unit's maximum was never > 0 "
                "on any image.", color="0.3")
    notes_block(c, page_notes(info, result.notes))
    return fig


def _trends_page(result: EvolveResult) -> Figure:
    fig = new_page()
    c = Cursor(fig, MARGIN, MARGIN, fig.get_size_inches()[0] - 2 * MARGIN)
    c.line("Trends across checkpoints, one line per layer", size=FONT + 3, weight="bold")
    _trends(fig, result, c.y + 0.3)
    return fig


def _grid_page(result: EvolveResult, evo: LayerEvolution, rows: Sequence[int], cols: Sequence[int],
               patches: bool) -> Figure:
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    canvas = page_canvas(fig)
    units = result.units[evo.layer]
    labels = result.labels()
    c = Cursor(fig, MARGIN, MARGIN, page_w - 2 * MARGIN)
    c.line(f"{evo.layer}: strongest activation of each unit over the dataset, per checkpoint", size=FONT + 3,
           weight="bold")
    c.paragraph("Projection of each unit's top-1 activation (normalised on its own, grey = 0)"
                + (" beside the image patch under its receptive field" if patches else "")
                + "; the value below. Red: the top-1 image changed since the previous checkpoint.", color="0.3")
    top = c.y + 0.25
    per_cell = 2 if patches else 1
    col_w = (page_w - 2 * MARGIN - LABEL_W) / max(len(cols), 1)
    row_h = (page_h - top - MARGIN - 0.25) / ROWS_PER_PAGE
    side = min((col_w - 0.12) / per_cell, row_h - 0.22)  # each picture is a square of this side
    for j, t in enumerate(cols):
        canvas.text(MARGIN + LABEL_W + (j + 0.5) * col_w, top - 0.05, labels[t], ha="center", va="bottom",
                    fontsize=FONT - 0.5, weight="bold")
    for i, u in enumerate(rows):
        y = top + i * row_h
        ch = units[u]
        canvas.text(MARGIN, y + side / 2, f"ch {ch}", va="center", fontsize=FONT)
        for j, t in enumerate(cols):
            cell = result.cells[evo.layer][t][u]
            x = MARGIN + LABEL_W + j * col_w + (col_w - side * per_cell) / 2
            if cell is None:
                canvas.text(x + side / 2, y + side / 2, "no entry", ha="center", va="center", fontsize=FONT - 2)
                continue
            draw_picture(canvas, normalise_projection(cell.projection), (x, y, side), vmin=0, vmax=1)
            if is_zero_projection(cell.projection):
                canvas.text(x + side / 2, y + side / 2, "zero", ha="center", va="center", fontsize=FONT - 2,
                            color="firebrick")
            if patches:
                draw_picture(canvas, cell.patch, (x + side, y, side))
            changed = t > 0 and bool(evo.top1_changed[t - 1, ch])
            canvas.text(x + side * per_cell / 2, y + side + 0.02, f"{cell.value:.3g}", ha="center",
                        va="top", fontsize=FONT - 1.5, color="firebrick" if changed else "0.1")
    return fig


def evolve_page_makers(result: EvolveResult, info: ReportInfo, patches: bool = False) -> list[PageMaker]:
    """Page 1, the trends, then per layer the Fig. 4 grid, split over pages of ``ROWS_PER_PAGE`` units and
    ``COLS_PER_PAGE`` checkpoints; each page built when written."""
    makers: list[PageMaker] = [lambda: _summary_page(result, info), lambda: _trends_page(result)]
    t_count = len(result.checkpoints.paths)
    for evo in result.layers:
        n_units = len(result.units[evo.layer])
        for r0 in range(0, max(n_units, 1), ROWS_PER_PAGE):
            for c0 in range(0, t_count, COLS_PER_PAGE):
                rows, cols = range(r0, min(r0 + ROWS_PER_PAGE, n_units)), range(c0, min(c0 + COLS_PER_PAGE, t_count))
                makers.append(partial(_grid_page, result, evo, rows, cols, patches))
    return makers


def evolve_pages(result: EvolveResult, info: ReportInfo, patches: bool = False) -> list[Figure]:
    """The pages of evolve.pdf, built (no footers: ``write_pdf`` numbers them)."""
    return [make() for make in evolve_page_makers(result, info, patches)]


def render_evolve_pdf(result: EvolveResult, info: ReportInfo, path: Path, *, patches: bool = False) -> int:
    """Write evolve.pdf to ``path``; returns its page count."""
    return write_pdf(path, evolve_page_makers(result, info, patches), title=f"vizkit evolve: {info.model}",
                     subject="Feature evolution across training checkpoints (Zeiler-Fergus Fig. 4)",
                     keywords="deconvnet, Zeiler-Fergus, training, checkpoints",
                     footer_left=f"evolve \u00b7 {info.model}")


__all__ = ["MANIFEST", "cell_arrays", "evolve_arrays", "evolve_document", "evolve_page_makers", "evolve_pages",
           "order_sentence", "read_cell", "render_evolve_pdf", "save_evolve_npz"]
