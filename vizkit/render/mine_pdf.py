"""mine.pdf: a summary page, then Zeiler–Fergus Fig. 2 per unit: its top-K projections beside their image patches.

Figures are built as ``Figure`` objects (no pyplot state); every panel of a page is drawn into one page-sized Axes in
inches, which is much cheaper than one Axes per panel.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vizkit.project.mine_projection import UnitTopProjections
from vizkit.render.display import is_zero_projection, normalise_projection
from vizkit.render.info import ReportInfo
from vizkit.render.pages import FONT, LINE, MARGIN, Cursor, new_page, page_canvas
from vizkit.render.provenance import model_block, notes_block, page_notes, run_block
from vizkit.render.writer import PageMaker, write_pdf

if TYPE_CHECKING:
    from vizkit.scan.topk import MineResult

UNITS_PER_PAGE = 3
GRID_GAP = 0.3  # between the projection grid and the patch grid, inches
CELL_GAP = 0.05
LABEL_H = 0.34  # the unit's label line and the grid titles
VALUE_H = 0.11  # the value printed under each cell


def grid_shape(k: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for k entries: 9 -> 3x3, 4 -> 2x2, 5 -> 2x3, 1 -> 1x1."""
    cols = max(1, math.ceil(math.sqrt(k)))
    return max(1, math.ceil(k / cols)), cols


def summary_lines(result: MineResult, info: ReportInfo) -> list[tuple[str, str]]:
    listed = len(result.paths)
    data = info.settings.get("data", "?")
    return [("dataset", str(data)),
            ("images", f"{listed} listed, {result.images_scanned} scanned, {len(result.skipped)} skipped"),
            ("classes", str(len(result.classes)) if result.classes else "none (no class subfolders)"),
            ("model", f"{info.model}  (weights: {info.weights})"),
            ("top-K", str(result.k))]


def _summary_page(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo,
                  notes: Sequence[str] = ()) -> Figure:
    """Page 1: the dataset beside the model (the one provenance block), the layers with their dead and rendered
    units, the settings, the notes (run-level first) and as many skipped files as fit."""
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line("vizkit mine: what each unit responds to across a dataset", size=14, weight="bold")
    c.y += 0.05
    half = (width - 0.3) / 2
    left = Cursor(fig, MARGIN, c.y, half)
    left.heading("Dataset")
    for key, value in summary_lines(result, info):
        if key != "model":  # the model block beside it says more
            left.paragraph(f"{key}: {value}", max_lines=3)
    right = Cursor(fig, MARGIN + half + 0.3, c.y, half)
    model_block(right, info)
    c.y = max(left.y, right.y)
    c.heading("Layers")
    rendered: dict[str, int] = {}
    for u in units:
        rendered[u.layer] = rendered.get(u.layer, 0) + 1
    rows = []
    for name, state in result.layers.items():
        dead = int(np.count_nonzero(state.dead))
        rows.append([name, state.values.shape[0], dead, f"{100 * dead / max(state.values.shape[0], 1):.1f}%",
                     rendered.get(name, 0)])
    c.table(["layer", "channels", "dead units", "dead share", "rendered"], rows,
            columns=[0.0, 2.9, 3.9, 4.9, width], align=["left", "right", "right", "right", "right"], max_rows=20)
    c.paragraph("dead: no image of the dataset made the unit's maximum > 0. Each unit page shows its top-K "
                "activations: deconvnet projections (left, each normalised on its own, grey = 0) beside the image "
                "patches under the unit's receptive field (right), in rank order, each with its value.", color="0.3")
    run_block(c, info, max_lines=2)
    notes_block(c, page_notes(info, notes), max_lines=3)
    c.heading(f"Skipped files ({len(result.skipped)})")
    room = max(1, int((page_h - MARGIN - 0.35 - c.y) / LINE) - 1)  # the rest are in mine.manifest.json
    shown = result.skipped if len(result.skipped) <= room else result.skipped[: room - 1]
    for path, reason in shown:
        c.paragraph(f"{path}: {reason}", max_lines=1)
    if len(shown) < len(result.skipped):
        c.line(f"... and {len(result.skipped) - len(shown)} more (all are listed in mine.manifest.json)",
               style="italic")
    if not result.skipped:
        c.line("none")
    return fig


def draw_picture(canvas: Axes, image: np.ndarray, x: float, y: float, side: float, unit_range: bool = False) -> None:
    """Draw ``image`` into the square (x, y, side) of the page canvas, keeping its aspect ratio."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    dx, dy = (side - w * scale) / 2, (side - h * scale) / 2
    canvas.imshow(image, extent=(x + dx, x + dx + w * scale, y + dy + h * scale, y + dy), aspect="auto",
                  interpolation="none", vmin=0 if unit_range else None, vmax=1 if unit_range else None)
    canvas.add_patch(Rectangle((x + dx, y + dy), w * scale, h * scale, fill=False, lw=0.4, ec="0.6"))


def unit_label(unit: UnitTopProjections, result: MineResult) -> str:
    state = result.layers[unit.layer]
    ch = unit.channel
    return (f"{unit.layer}  channel {ch}    mean {float(state.mean[ch]):.4g}    firing rate "
            f"{100 * float(state.rate[ch]):.1f}%" + ("    dead" if bool(state.dead[ch]) else ""))


def _draw_unit(fig: Figure, canvas: Axes, unit: UnitTopProjections, result: MineResult, top: float,
               height: float) -> None:
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    fig.text(MARGIN / page_w, 1 - top / page_h, unit_label(unit, result), fontsize=FONT + 0.5, va="top",
             weight="bold")
    rows, cols = grid_shape(max(result.k, 1))
    grid_w = (width - GRID_GAP) / 2
    side = min((grid_w - (cols - 1) * CELL_GAP) / cols, (height - LABEL_H) / rows - VALUE_H - CELL_GAP)
    y0 = top + LABEL_H
    used = cols * side + (cols - 1) * CELL_GAP  # the two grids side by side, centred on the page
    left = MARGIN + (width - 2 * used - GRID_GAP) / 2
    for g, (title, x0) in enumerate((("projections", left), ("image patches", left + used + GRID_GAP))):
        fig.text((x0 + used / 2) / page_w, 1 - (y0 - 0.02) / page_h, title, fontsize=FONT - 1, ha="center",
                 va="bottom", color="0.3")
        for r, entry in enumerate(unit.entries):
            row, col = divmod(r, cols)
            x = x0 + col * (side + CELL_GAP)
            y = y0 + row * (side + VALUE_H + CELL_GAP)
            if g == 0:
                draw_picture(canvas, normalise_projection(entry.projection), x, y, side, unit_range=True)
                if is_zero_projection(entry.projection):
                    canvas.text(x + side / 2, y + side / 2, "zero", ha="center", va="center", fontsize=FONT - 1,
                                color="firebrick")
            else:
                draw_picture(canvas, entry.patch, x, y, side)
            canvas.text(x + side / 2, y + side + 0.01, f"#{r + 1}  {entry.value:.4g}", ha="center", va="top",
                        fontsize=FONT - 1.5)
    if not unit.entries:
        fig.text(MARGIN / page_w, 1 - (y0 + 0.2) / page_h, "no image activated this unit", fontsize=FONT)


def _units_page(units: Sequence[UnitTopProjections], result: MineResult) -> Figure:
    fig = new_page()
    _, page_h = fig.get_size_inches()
    canvas = page_canvas(fig)
    slot = (page_h - 2 * MARGIN - 0.2) / UNITS_PER_PAGE
    for i, unit in enumerate(units):
        _draw_unit(fig, canvas, unit, result, MARGIN + i * slot, slot - 0.15)
    return fig


def mine_page_makers(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo,
                     notes: Sequence[str] = ()) -> list[PageMaker]:
    """mine.pdf's pages, each built when called: the summary, then ``UNITS_PER_PAGE`` units per page."""
    chunks = [list(units[i : i + UNITS_PER_PAGE]) for i in range(0, len(units), UNITS_PER_PAGE)]
    pages: list[PageMaker] = [partial(_summary_page, result, units, info, notes)]
    return pages + [partial(_units_page, chunk, result) for chunk in chunks]


def render_mine_pdf(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo, path: Path, *,
                    notes: Sequence[str] = ()) -> int:
    """Write mine.pdf to ``path``; returns its page count (1 + ceil(units / UNITS_PER_PAGE)). ``notes``: the
    result's notes for page 1 (after the run's, from ``info``)."""
    return write_pdf(path, mine_page_makers(result, units, info, notes), title=f"vizkit mine: {info.model}",
                     subject="Top-K activations per unit over a dataset with deconvnet projections",
                     keywords="deconvnet, Zeiler-Fergus, dataset, top-k", footer_left=f"mine \u00b7 {info.model}")
