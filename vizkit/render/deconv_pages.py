"""deconv.pdf pages of one layer (page 1 and the document: ``vizkit.render.deconv``): for each of the top-K
feature maps, projection | image patch | activation map.

A layer whose K units would make the panels smaller than ``MIN_PANEL`` (where the column headers stop fitting)
continues on further pages: every unit is shown, none is cut.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.project.results import LayerProjections, UnitProjection
from vizkit.render.kit.display import check_box, crop, display_image, is_zero_projection, normalise_projection
from vizkit.render.kit.page import FONT, MARGIN, Cursor, draw_picture, new_page, page_canvas, text_at

PANEL_GAP = 0.06  # between the three panels of one unit, inches
CELL_GAP = 0.25  # between units side by side
LABEL_H = 0.17  # the unit's label line above its panels
ROW_GAP = 0.08
HEADER_H = 0.16  # column headers above the first row
MAX_PANEL = 2.2
MIN_PANEL = 0.95  # inches: the widest column header ("projection (box)", 7 pt) fits above its panel
GRID_H = 10.0  # inches left for the unit grid below the page header (A4, worst-case header of three lines)
IMAGE_INDEPENDENT_NOTE = "reconstructions here do not depend on the image beyond which units fire; see guided backprop"


def grid_for(k: int, width: float, height: float) -> tuple[int, float]:
    """Unit columns and panel side (inches) that make the panels largest for k units in a width x height area."""
    best = (1, 0.0)
    for ncols in range(1, 5):
        rows = max(1, math.ceil(k / ncols))
        side_w = (width - (ncols - 1) * CELL_GAP) / ncols
        side_w = (side_w - 2 * PANEL_GAP) / 3
        side_h = (height - HEADER_H) / rows - LABEL_H - ROW_GAP
        side = min(side_w, side_h, MAX_PANEL)
        if side > best[1] + 1e-9:
            best = (ncols, side)
    return best


def units_per_page() -> int:
    """The most units one page holds with panels of at least ``MIN_PANEL`` inches."""
    width = new_page().get_size_inches()[0] - 2 * MARGIN
    k = 1
    while grid_for(k + 1, width, GRID_H)[1] >= MIN_PANEL:
        k += 1
    return k


def layer_page_count(lp: LayerProjections) -> int:
    return max(1, math.ceil(len(lp.units) / units_per_page()))


def layer_page_makers(lp: LayerProjections, image: np.ndarray) -> list[Callable[[], Figure]]:
    """One maker per page of this layer: units ``units_per_page()`` at a time, in rank order."""
    per = units_per_page()
    pages = layer_page_count(lp)
    return [partial(render_layer_page, lp, image, start=p * per, stop=(p + 1) * per, part=(p + 1, pages))
            for p in range(pages)]


def layer_title(lp: LayerProjections) -> str:
    grid = "x".join(map(str, np.shape(lp.activation_maps)[1:]))
    return f"{lp.layer}  \u00b7  mode {lp.mode}  \u00b7  output grid {grid}"


def render_layer_page(lp: LayerProjections, image: np.ndarray, *, start: int = 0, stop: int | None = None,
                      part: tuple[int, int] = (1, 1)) -> Figure:
    """The page of units ``start:stop`` (ranks) of one layer; ``part`` = (this page, the layer's pages)."""
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    head = Cursor(fig, MARGIN, MARGIN, width)
    more = f"  ·  page {part[0]} of {part[1]} (units {start + 1}-{min(len(lp.units), stop or len(lp.units))})"
    head.line(layer_title(lp) + (more if part[1] > 1 else ""), size=13 if part[1] == 1 else 11, weight="bold")
    head.y += 0.06
    head.paragraph(f"top {len(lp.units)} feature maps ranked by their strongest activation. Projection: each "
                   f"normalised on its own, grey = 0. "
                   + ("Projection and patch cropped to the unit's receptive field; + marks the unit."
                      if lp.mode == "max" else "Projection of the whole feature map at image size."), color="0.3")
    note = lp.note or ("" if lp.image_dependent else IMAGE_INDEPENDENT_NOTE)
    if note:
        head.paragraph(f"note: {note}", weight="bold", color="firebrick", max_lines=3)
    head.y += 0.12

    picture = display_image(image)
    grid_top, grid_h = head.y, page_h - MARGIN - 0.25 - head.y
    units = lp.units[start:stop]
    if not units:
        head.line("no units selected for this layer")
        return fig
    ncols, side = grid_for(len(units), width, grid_h)
    cell_w = 3 * side + 2 * PANEL_GAP
    gap = min(max(width - ncols * cell_w, 0.0) / max(ncols - 1, 1), 2 * CELL_GAP)
    pitch = cell_w + gap
    left = MARGIN + (width - ncols * cell_w - (ncols - 1) * gap) / 2  # centre the grid on the page
    row_h = LABEL_H + side + ROW_GAP
    headers = ["projection (box)", "image patch", "activation map"] if lp.mode == "max" else [
        "projection", "image", "activation map"]
    for col in range(min(ncols, len(units))):
        for j, label in enumerate(headers):
            x = left + col * pitch + j * (side + PANEL_GAP) + side / 2
            text_at(fig, x, grid_top, label, size=FONT - 0.5, ha="center", weight="bold", color="0.25")
    canvas = page_canvas(fig)
    maps = np.asarray(lp.activation_maps)[start:stop]
    for i, unit in enumerate(units):
        row, col = divmod(i, ncols)
        x0 = left + col * pitch
        y0 = grid_top + HEADER_H + row * row_h
        zero = is_zero_projection(unit.projection)
        text_at(fig, x0, y0, _unit_label(start + i, unit, lp.mode, zero), size=FONT - 0.5)
        panels = [(x0 + j * (side + PANEL_GAP), y0 + LABEL_H, side) for j in range(3)]
        _draw_unit(canvas, panels, unit, lp.mode, maps[i], picture, zero)
    return fig


def _unit_label(i: int, unit: UnitProjection, mode: str, zero: bool) -> str:
    y, x = unit.position
    where = f" at ({y}, {x})" if mode == "max" else ""
    return f"#{i + 1}  ch {unit.channel}   act {unit.activation:.4g}{where}" + ("   zero projection" if zero else "")


def _draw_unit(canvas: Axes, panels: list[tuple[float, float, float]], unit: UnitProjection, mode: str,
               amap: np.ndarray, picture: np.ndarray, zero: bool) -> None:
    h, w = picture.shape[:2]
    box = check_box(unit.box, h, w)
    proj = normalise_projection(unit.projection)
    p_proj, p_patch, p_act = panels
    draw_picture(canvas, crop(proj, box) if mode == "max" else proj, p_proj, vmin=0, vmax=1)
    if zero:
        x, y, side = p_proj
        canvas.text(x + side / 2, y + side / 2, "zero\nprojection", ha="center", va="center", fontsize=FONT - 1,
                    color="firebrick")
    draw_picture(canvas, crop(picture, box), p_patch)
    amap = np.atleast_2d(amap)
    draw_picture(canvas, amap, p_act, cmap="viridis")
    if mode == "max":
        x, y, side = p_act
        ah, aw = amap.shape
        scale = side / max(ah, aw)
        px = x + (side - aw * scale) / 2 + (unit.position[1] + 0.5) * scale
        py = y + (side - ah * scale) / 2 + (unit.position[0] + 0.5) * scale
        canvas.plot([px], [py], marker="+", color="white", ms=8, mew=2.6)  # white halo: visible on any colour
        canvas.plot([px], [py], marker="+", color="red", ms=7, mew=1.2)
