"""mine.pdf: a summary page, then Zeiler–Fergus Fig. 2 per rendered unit: its top-K projections beside their image
patches and, with ``--dream``, what the unit wants (OpenAI Microscope's view); with ``--per-class``, a page per class
(``vizkit.render.mine_classes``). Every panel of a page is drawn into one page-sized Axes in inches, which is much
cheaper than one Axes per panel, and every picture is embedded at the resolution it is shown at
(``vizkit.render.kit.page.draw_picture``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.project.mine_projection import UnitTopProjections
from vizkit.render.kit.display import is_zero_projection, normalise_projection
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import FONT, LINE, MARGIN, draw_picture, new_page, page_canvas, text_at
from vizkit.render.kit.pdf import PageMaker, write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes

if TYPE_CHECKING:
    from vizkit.project.results import LayerDreams
    from vizkit.scan.topk import MineResult

UNITS_PER_PAGE = 3
GRID_GAP = 0.3  # between the dream, the projection grid and the patch grid, inches
CELL_GAP = 0.05
LABEL_H = 0.34  # the unit's label line and the grid titles
VALUE_H = 0.11  # the value printed under each cell
Dream = tuple[np.ndarray, float]  # (S, S, 3) uint8 picture, score


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
    """Page 1: the provenance block, the dataset, the layers with their dead and rendered units, the notes
    (run-level first) and as many skipped files as fit."""
    fig, c = page_one("mine", info, title="vizkit mine: what each unit responds to across a dataset")
    page_h, width = fig.get_size_inches()[1], c.width
    c.heading("Dataset")
    for key, value in summary_lines(result, info):
        if key != "model":  # the provenance block above says more
            c.paragraph(f"{key}: {value}", max_lines=3)
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


def unit_label(unit: UnitTopProjections, result: MineResult) -> str:
    state = result.layers[unit.layer]
    ch = unit.channel
    return (f"{unit.layer}  channel {ch}    mean {float(state.mean[ch]):.4g}    firing rate "
            f"{100 * float(state.rate[ch]):.1f}%" + ("    dead" if bool(state.dead[ch]) else ""))


def cell_side(k: int, width: float, height: float, dream: bool) -> float:
    """The side of one grid cell, inches: two near-square grids of k cells (and a dream as tall as a grid) side by
    side in ``width``, a grid with its value lines in ``height``."""
    rows, cols = grid_shape(max(k, 1))
    room = width - GRID_GAP - 2 * (cols - 1) * CELL_GAP
    across = 2 * cols
    if dream:  # the dream's side: the grid's rows of pictures and the gaps between them
        room -= GRID_GAP + (rows - 1) * (VALUE_H + CELL_GAP)
        across += rows
    return min(room / across, (height - LABEL_H) / rows - VALUE_H - CELL_GAP)


def _draw_entries(canvas: Axes, unit: UnitTopProjections, cols: int, side: float, x0: float, y0: float,
                  projections: bool) -> None:
    for r, entry in enumerate(unit.entries):
        row, col = divmod(r, cols)
        x = x0 + col * (side + CELL_GAP)
        y = y0 + row * (side + VALUE_H + CELL_GAP)
        if projections:
            draw_picture(canvas, normalise_projection(entry.projection), (x, y, side), vmin=0, vmax=1)
            if is_zero_projection(entry.projection):
                canvas.text(x + side / 2, y + side / 2, "zero", ha="center", va="center", fontsize=FONT - 1,
                            color="firebrick")
        else:
            draw_picture(canvas, entry.patch, (x, y, side))
        canvas.text(x + side / 2, y + side + 0.01, f"#{r + 1}  {entry.value:.4g}", ha="center", va="top",
                    fontsize=FONT - 1.5)


def _draw_unit(fig: Figure, canvas: Axes, unit: UnitTopProjections, result: MineResult, top: float,
               height: float, dream: Dream | None = None) -> None:
    """One unit's block: its label, then [what it wants] [projections grid] [image patches grid]."""
    width = fig.get_size_inches()[0] - 2 * MARGIN
    text_at(fig, MARGIN, top, unit_label(unit, result), size=FONT + 0.5, weight="bold")
    rows, cols = grid_shape(max(result.k, 1))
    side = cell_side(result.k, width, height, dream is not None)
    y0 = top + LABEL_H
    used = cols * side + (cols - 1) * CELL_GAP
    dream_side = rows * side + (rows - 1) * (VALUE_H + CELL_GAP) if dream is not None else 0.0
    left = MARGIN + (width - 2 * used - GRID_GAP - (dream_side + GRID_GAP if dream is not None else 0.0)) / 2
    if dream is not None:
        text_at(fig, left + dream_side / 2, y0 - 0.02, "what it wants", size=FONT - 1, ha="center", va="bottom",
                color="0.3")
        draw_picture(canvas, dream[0], (left, y0, dream_side))
        canvas.text(left + dream_side / 2, y0 + dream_side + 0.01, f"dream score {dream[1]:.4g}", ha="center",
                    va="top", fontsize=FONT - 1.5)
        left += dream_side + GRID_GAP
    for title, x0, projections in (("projections", left, True), ("image patches", left + used + GRID_GAP, False)):
        text_at(fig, x0 + used / 2, y0 - 0.02, title, size=FONT - 1, ha="center", va="bottom", color="0.3")
        _draw_entries(canvas, unit, cols, side, x0, y0, projections)
    if not unit.entries:
        text_at(fig, MARGIN, y0 + 0.2, "no image activated this unit", va="baseline")


def dream_picture(images: np.ndarray, u: int) -> np.ndarray:
    """Dream ``u`` of (U, 3, S, S) floats in [0, 1] as an (S, S, 3) uint8 picture."""
    return (np.clip(images[u].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def dream_lookup(dreams: Mapping[str, LayerDreams] | None) -> dict[tuple[str, int], Dream]:
    """(layer, channel) -> (picture, score) for every dreamed unit."""
    return {(layer, int(ch)): (dream_picture(d.images, u), float(d.scores[u]))
            for layer, d in (dreams or {}).items() for u, ch in enumerate(d.channels)}


def _units_page(units: Sequence[UnitTopProjections], result: MineResult,
                dreams: Mapping[tuple[str, int], Dream]) -> Figure:
    fig = new_page()
    _, page_h = fig.get_size_inches()
    canvas = page_canvas(fig)
    slot = (page_h - 2 * MARGIN - 0.2) / UNITS_PER_PAGE
    for i, unit in enumerate(units):
        _draw_unit(fig, canvas, unit, result, MARGIN + i * slot, slot - 0.15, dreams.get((unit.layer, unit.channel)))
    return fig


def mine_page_makers(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo,
                     notes: Sequence[str] = (), dreams: Mapping[str, LayerDreams] | None = None) -> list[PageMaker]:
    """mine.pdf's pages, each built when called: the summary, ``UNITS_PER_PAGE`` units per page, then with
    ``--per-class`` the class pages (``vizkit.render.mine_classes``)."""
    from vizkit.render.mine_classes import class_page_makers

    wanted = dream_lookup(dreams)
    chunks = [list(units[i : i + UNITS_PER_PAGE]) for i in range(0, len(units), UNITS_PER_PAGE)]
    pages: list[PageMaker] = [partial(_summary_page, result, units, info, notes)]
    return (pages + [partial(_units_page, chunk, result, wanted) for chunk in chunks]
            + class_page_makers(result, units))


def render_mine_pdf(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo, path: Path, *,
                    notes: Sequence[str] = (), dreams: Mapping[str, LayerDreams] | None = None) -> int:
    """Write mine.pdf to ``path``; returns its page count (1 + ceil(units / UNITS_PER_PAGE) + the class pages).
    ``notes``: the result's notes for page 1 (after the run's, from ``info``); ``dreams``: ``--dream``'s images."""
    return write_pdf(path, mine_page_makers(result, units, info, notes, dreams), title=f"vizkit mine: {info.model}",
                     subject="Top-K activations per unit over a dataset with deconvnet projections",
                     keywords="deconvnet, Zeiler-Fergus, dataset, top-k", footer_left=f"mine \u00b7 {info.model}")


__all__ = ["UNITS_PER_PAGE", "cell_side", "dream_lookup", "dream_picture", "grid_shape", "mine_page_makers",
           "render_mine_pdf", "summary_lines", "unit_label"]
