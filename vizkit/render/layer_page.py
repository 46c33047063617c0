"""One deconv.pdf page per layer: for each of the top-K feature maps, projection | image patch | activation map."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.project.results import LayerProjections, UnitProjection
from vizkit.render.display import check_box, crop, display_image, is_zero_projection, normalise_projection
from vizkit.render.pages import FONT, MARGIN, Cursor, new_page

PANEL_GAP = 0.06  # between the three panels of one unit, inches
CELL_GAP = 0.25  # between units side by side
LABEL_H = 0.17  # the unit's label line above its panels
ROW_GAP = 0.08
HEADER_H = 0.16  # column headers above the first row
MAX_PANEL = 2.2
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


def layer_title(lp: LayerProjections) -> str:
    grid = "x".join(map(str, np.shape(lp.activation_maps)[1:]))
    return f"{lp.layer}  \u00b7  mode {lp.mode}  \u00b7  output grid {grid}"


def render_layer_page(lp: LayerProjections, image: np.ndarray) -> Figure:
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    head = Cursor(fig, MARGIN, MARGIN, width)
    head.line(layer_title(lp), size=13, weight="bold")
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
    if not lp.units:
        head.line("no units selected for this layer")
        return fig
    ncols, side = grid_for(len(lp.units), width, grid_h)
    cell_w = 3 * side + 2 * PANEL_GAP
    gap = min(max(width - ncols * cell_w, 0.0) / max(ncols - 1, 1), 2 * CELL_GAP)
    pitch = cell_w + gap
    left = MARGIN + (width - ncols * cell_w - (ncols - 1) * gap) / 2  # centre the grid on the page
    row_h = LABEL_H + side + ROW_GAP
    headers = ["projection (box)", "image patch", "activation map"] if lp.mode == "max" else [
        "projection", "image", "activation map"]
    for col in range(min(ncols, len(lp.units))):
        for j, label in enumerate(headers):
            x = left + col * pitch + j * (side + PANEL_GAP) + side / 2
            fig.text(x / page_w, 1 - grid_top / page_h, label, fontsize=FONT - 0.5, ha="center", va="top",
                     weight="bold", color="0.25")
    for i, unit in enumerate(lp.units):
        row, col = divmod(i, ncols)
        x0 = left + col * pitch
        y0 = grid_top + HEADER_H + row * row_h
        zero = is_zero_projection(unit.projection)
        fig.text(x0 / page_w, 1 - y0 / page_h, _unit_label(i, unit, lp.mode, zero), fontsize=FONT - 0.5, va="top")
        axes = [fig.add_axes([(x0 + j * (side + PANEL_GAP)) / page_w, 1 - (y0 + LABEL_H + side) / page_h,
                              side / page_w, side / page_h]) for j in range(3)]
        _draw_unit(axes, unit, lp.mode, np.asarray(lp.activation_maps)[i], picture, zero)
    return fig


def _unit_label(i: int, unit: UnitProjection, mode: str, zero: bool) -> str:
    y, x = unit.position
    where = f" at ({y}, {x})" if mode == "max" else ""
    return f"#{i + 1}  ch {unit.channel}   act {unit.activation:.4g}{where}" + ("   zero projection" if zero else "")


def _draw_unit(axes: list[Axes], unit: UnitProjection, mode: str, amap: np.ndarray, picture: np.ndarray,
               zero: bool) -> None:
    h, w = picture.shape[:2]
    box = check_box(unit.box, h, w)
    proj = normalise_projection(unit.projection)
    ax_proj, ax_patch, ax_act = axes
    ax_proj.imshow(crop(proj, box) if mode == "max" else proj, vmin=0, vmax=1, interpolation="none")
    if zero:
        ax_proj.text(0.5, 0.5, "zero\nprojection", transform=ax_proj.transAxes, ha="center", va="center",
                     fontsize=FONT - 1, color="firebrick")
    ax_patch.imshow(crop(picture, box), interpolation="none")
    ax_act.imshow(amap, cmap="viridis", interpolation="none")
    if mode == "max":
        xlim, ylim = ax_act.get_xlim(), ax_act.get_ylim()
        y, x = unit.position
        ax_act.plot([x], [y], marker="+", color="white", ms=8, mew=2.6)  # white halo: visible on any colour
        ax_act.plot([x], [y], marker="+", color="red", ms=7, mew=1.2)
        ax_act.set_xlim(xlim)
        ax_act.set_ylim(ylim)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.4)
            spine.set_color("0.6")
