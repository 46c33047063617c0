"""The report's dream pages: for each projected layer its ranked units, the deconvnet projection beside the
dream (what the unit wants to see), and the top class's dream beside the image."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.project.dream import DreamResult
from vizkit.project.results import ReportResult, UnitProjection
from vizkit.render.kit.display import check_box, crop, display_image, normalise_projection
from vizkit.render.kit.page import FONT, MARGIN, Cursor, draw_picture, new_page, page_canvas, text_at

TILE = 0.8  # inches: one picture (four units, projection and dream, to a row)
PAIR_GAP = 0.18  # between one unit's pair and the next
LABEL_H = 0.3
INTRO = ("Left of each pair: the unit's deconvnet projection on this image (cropped to its receptive field); right: "
         "the image optimised to excite the unit (its mean activation over the map), with its score. Where a "
         "layer's projections do not depend on the image, the dream is the picture of what the unit detects.")


def dream_section_pages(result: ReportResult) -> list[Callable[[], Figure]]:
    """Page makers of the dream section (none when the report has no dream column)."""
    from vizkit.render.kit.pdf import built

    dream = getattr(result, "dream", None)
    return [] if dream is None else [built(fig) for fig in _pages(result, dream)]


def dream_summary(result: ReportResult) -> str:
    dream = getattr(result, "dream", None)
    if dream is None:
        return ""
    return (f"what the ranked units and the top class want to see: {dream.settings.get('method')}, "
            f"{dream.settings.get('steps')} steps, {dream.settings.get('size')} px")


def _blocks(result: ReportResult, dream: DreamResult) -> list[tuple[str, list[tuple[UnitProjection | None, int]]]]:
    """(heading, [(unit or None for the class, row in the dream result)]) per layer, then the top class."""
    rows = {name: i for i, name in enumerate(dream.objectives)}
    blocks: list[tuple[str, list[tuple[UnitProjection | None, int]]]] = []
    for lp in result.deconv.layers:
        pairs: list[tuple[UnitProjection | None, int]] = [
            (u, rows[f"{lp.layer}:{u.channel}"]) for u in lp.units if f"{lp.layer}:{u.channel}" in rows]
        if pairs:
            blocks.append((f"Layer {lp.layer}", pairs))
    classes: list[tuple[UnitProjection | None, int]] = [
        (None, i) for i, name in enumerate(dream.objectives) if name.startswith("class:")]
    if classes:
        blocks.append(("Top class", classes))
    return blocks


def _pages(result: ReportResult, dream: DreamResult) -> list[Figure]:
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    c = Cursor(fig, MARGIN, MARGIN, page_w - 2 * MARGIN)
    c.line("What the units want (dream)", size=FONT + 4, weight="bold")
    c.paragraph(INTRO, size=FONT - 0.5, color="0.3")
    per_row = max(1, int((c.width + PAIR_GAP) // (2 * TILE + 0.08 + PAIR_GAP)))
    canvas, figures = page_canvas(fig), [fig]
    for heading, pairs in _blocks(result, dream):
        rows = -(-len(pairs) // per_row)
        if c.y + 0.25 + min(rows, 1) * (TILE + LABEL_H) > page_h - MARGIN - 0.3:
            fig = new_page()
            figures.append(fig)
            canvas, c = page_canvas(fig), Cursor(fig, MARGIN, MARGIN, c.width)
        c.y += 0.08
        c.line(heading, weight="bold")
        for k, (unit, i) in enumerate(pairs):
            if k and k % per_row == 0:
                c.y += TILE + LABEL_H
            x = MARGIN + (k % per_row) * (2 * TILE + 0.08 + PAIR_GAP)
            _pair(fig, canvas, result, dream, unit, i, x, c.y)
        c.y += TILE + LABEL_H
    return figures


def _pair(fig: Figure, canvas: Axes, result: ReportResult, dream: DreamResult, unit: UnitProjection | None,
          i: int, x: float, y: float) -> None:
    if unit is None:  # the top class: the image itself on the left
        left, caption = display_image(result.deconv.image), "the image"
    else:
        picture = normalise_projection(unit.projection)
        left = crop(picture, check_box(unit.box, *picture.shape[:2]))
        caption = f"ch {unit.channel} \u00b7 act {unit.activation:.3g}"
    draw_picture(canvas, left, (x, y, TILE))
    draw_picture(canvas, np.clip(np.asarray(dream.images[i]).transpose(1, 2, 0), 0, 1), (x + TILE + 0.08, y, TILE))
    label = dream.label(i) if unit is None else "dream"
    text_at(fig, x, y + TILE + 0.03, caption, size=FONT - 1.5)
    text_at(fig, x + TILE + 0.08, y + TILE + 0.03, label[:18], size=FONT - 1.5)
    text_at(fig, x + TILE + 0.08, y + TILE + 0.15, f"score {float(dream.scores[i]):.3g}", size=FONT - 1.5,
            color="0.35")


__all__ = ["dream_section_pages", "dream_summary"]
