"""mine.pdf's ``--per-class`` pages: for each class, the rendered units' top-K images within that class.

The scan keeps, per class, each unit's top K images of that class (values and image indices, no projections), so a
class page shows for the rendered units that the class excites most their K images from that class, whole and
centre-cropped, each with its value. At most ``MAX_CLASSES`` class pages (in class order) keep the PDF a readable
size for ImageNet-sized label sets; the gallery filters every unit by every class.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from vizkit.project.mine_projection import UnitTopProjections
from vizkit.render.kit.display import PICTURE_DPI
from vizkit.render.kit.page import FONT, MARGIN, Cursor, draw_picture, new_page, page_canvas
from vizkit.render.kit.pdf import PageMaker
from vizkit.render.mine_browse import read_thumbnail

if TYPE_CHECKING:
    from vizkit.scan.topk import MineResult

MAX_CLASSES = 50
ROWS_PER_PAGE = 12
LABEL_W = 1.55  # the unit's label column, inches
GAP = 0.05
VALUE_H = 0.11


def class_rows(result: MineResult, units: Sequence[UnitTopProjections], k: int) -> list[tuple[str, int, float]]:
    """(layer, channel, top value in class k) of the rendered units that class k reaches, strongest first."""
    rows = []
    for unit in units:
        state = result.layers[unit.layer]
        if state.class_values is None or state.class_image_index is None:
            continue
        if state.class_image_index[k, unit.channel, 0] >= 0:
            rows.append((unit.layer, unit.channel, float(state.class_values[k, unit.channel, 0])))
    return sorted(rows, key=lambda r: -r[2])


def _class_page(result: MineResult, units: Sequence[UnitTopProjections], k: int, shown: int) -> Figure:
    assert result.classes is not None
    fig = new_page()
    width = fig.get_size_inches()[0] - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(f"Class {result.classes[k]!r}: the rendered units' top {result.k} images within the class",
           size=FONT + 3, weight="bold")
    rows = class_rows(result, units, k)
    note = (f"{len(rows)} of {len(units)} rendered units reached by the class; the {min(len(rows), ROWS_PER_PAGE)} "
            "strongest (by their top value in the class) are shown, each image whole and centre-cropped, with its "
            "value.")
    if shown < len(result.classes):
        note += (f" Class pages: the first {shown} of {len(result.classes)} classes; the gallery's layer pages "
                 "filter every unit by every class.")
    c.paragraph(note, color="0.3")
    canvas = page_canvas(fig)
    side = min((width - LABEL_W) / max(result.k, 1) - GAP, 0.75)
    px = max(8, round(side * PICTURE_DPI))
    y = c.y + 0.1
    for layer, ch, _ in rows[:ROWS_PER_PAGE]:
        state = result.layers[layer]
        assert state.class_values is not None and state.class_image_index is not None
        canvas.text(MARGIN, y + side / 2, f"{layer}\nchannel {ch}", va="center", fontsize=FONT)
        for r in range(result.k):
            index = int(state.class_image_index[k, ch, r])
            if index < 0:
                break
            x = MARGIN + LABEL_W + r * (side + GAP)
            picture = read_thumbnail(result.paths[index], px)
            if picture is not None:
                draw_picture(canvas, picture, (x, y, side))
            canvas.text(x + side / 2, y + side + 0.01, f"{float(state.class_values[k, ch, r]):.4g}", ha="center",
                        va="top", fontsize=FONT - 1.5)
        y += side + VALUE_H + 2 * GAP
    if not rows:
        canvas.text(MARGIN, y + 0.2, "no rendered unit has an image of this class in its top K", fontsize=FONT)
    return fig


def class_page_makers(result: MineResult, units: Sequence[UnitTopProjections]) -> list[PageMaker]:
    """One page per class (at most ``MAX_CLASSES``) when the scan kept per-class top K and units were rendered."""
    if not result.classes or not units or all(s.class_values is None for s in result.layers.values()):
        return []
    shown = min(len(result.classes), MAX_CLASSES)
    return [partial(_class_page, result, units, k, shown) for k in range(shown)]


__all__ = ["MAX_CLASSES", "ROWS_PER_PAGE", "class_page_makers", "class_rows"]
