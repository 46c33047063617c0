"""A4 page scaffolding shared by every PDF vizkit writes: Figure objects only (no pyplot), inch-based layout.

Positions are inches from the page's top-left corner; ``axes_at`` is the one place that turns them into matplotlib's
figure fractions (origin bottom-left), and ``Cursor`` writes text top-down.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from vizkit.render.kit.display import at_shown_size

A4_PORTRAIT = (8.27, 11.69)  # inches
MARGIN = 0.45
FONT = 7.5  # body text, points
LINE = 0.155  # body line height, inches


def new_page() -> Figure:
    return Figure(figsize=A4_PORTRAIT)


def page_canvas(fig: Figure) -> Axes:
    """One invisible page-sized Axes in inches, y down, to draw every panel of a page on: creating ~30 Axes per
    page costs more than drawing them."""
    page_w, page_h = fig.get_size_inches()
    canvas = fig.add_axes((0, 0, 1, 1))
    canvas.set_xlim(0, page_w)
    canvas.set_ylim(page_h, 0)
    canvas.set_axis_off()
    return canvas


def wrap(text: str, width_in: float, size: float = FONT) -> list[str]:
    """Wrap to a width in inches (0.62 em per character: DejaVu Sans digits and capitals are 0.6-0.7 em wide)."""
    chars = max(10, int(width_in / (0.62 * size / 72)))
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, chars, break_long_words=True) or [""])
    return lines


class Cursor:
    """Writes text top-down on a Figure; x and y are inches from the top-left corner."""

    def __init__(self, fig: Figure, x: float, y: float, width: float) -> None:
        self.fig, self.x, self.y, self.width = fig, x, y, width
        self.page_w, self.page_h = fig.get_size_inches()

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return x / self.page_w, 1 - y / self.page_h

    def text(self, x: float, s: str, size: float = FONT, **kw) -> None:
        self.fig.text(*self._xy(x, self.y), s, fontsize=size, va="top", **kw)

    def line(self, s: str, size: float = FONT, **kw) -> None:
        self.text(self.x, s, size, **kw)
        self.y += LINE * size / FONT

    def paragraph(self, s: str, size: float = FONT, indent: float = 0.0, max_lines: int | None = None, **kw) -> None:
        lines = wrap(s, self.width - indent, size)
        if max_lines is not None and len(lines) > max_lines:
            lines = [*lines[: max_lines - 1], lines[max_lines - 1][:-3] + "..."]
        for ln in lines:
            self.text(self.x + indent, ln, size, **kw)
            self.y += LINE * size / FONT

    def heading(self, s: str) -> None:
        self.y += 0.08
        self.line(s, size=FONT + 2, weight="bold")
        self.y += 0.02

    def rule(self, x0: float | None = None, x1: float | None = None, lw: float = 0.5) -> None:
        x0 = self.x if x0 is None else x0
        x1 = self.x + self.width if x1 is None else x1
        y = self.y - 0.03
        self.fig.add_artist(Line2D([x0 / self.page_w, x1 / self.page_w], [1 - y / self.page_h] * 2,
                                   transform=self.fig.transFigure, color="0.4", lw=lw))
        self.y += 0.04

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]], columns: Sequence[float],
              align: Sequence[str], max_rows: int | None = None) -> None:
        """A ruled text table; ``columns`` are x offsets in inches from the cursor, ``align`` 'left' or 'right'."""
        shown = list(rows) if max_rows is None or len(rows) <= max_rows else list(rows)[: max_rows - 1]
        for r, cells in enumerate([header, *shown]):
            for cell, cx, ha in zip(cells, columns, align, strict=False):
                self.text(self.x + cx, str(cell), weight="bold" if r == 0 else "normal", ha=ha)
            self.y += LINE
            if r == 0:
                self.rule()
        if len(shown) < len(rows):
            self.line(f"... and {len(rows) - len(shown)} more rows", style="italic")
        self.rule()


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


# ---- layout of pictures on a page (filter and activation pages) ----

def mosaic(tiles: np.ndarray, ncols: int, scale: int, gap: int, row_gap: int | None = None) -> np.ndarray:
    """Tiles (n, h, w, 3) upscaled by ``scale`` (nearest), on white, ``gap`` pixels apart (``row_gap`` between
    rows, default ``gap``)."""
    n, h, w, _ = tiles.shape
    row_gap = gap if row_gap is None else row_gap
    rows = math.ceil(n / ncols)
    th, tw = h * scale, w * scale
    out = np.ones((rows * (th + row_gap) - row_gap, ncols * (tw + gap) - gap, 3), dtype=np.float32)
    big = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (th + row_gap): r * (th + row_gap) + th, c * (tw + gap): c * (tw + gap) + tw] = big[i]
    return out


def grid_layout(n: int, th: int, tw: int, gap: int, label_h: float, width: float,
                 height: float) -> tuple[int, float]:
    """(columns, inches per pixel) that make n tiles of th x tw pixels largest in a width x height (inches) area,
    with ``label_h`` inches under every row."""
    best = (1, 0.0)
    for ncols in range(1, n + 1):
        rows = math.ceil(n / ncols)
        ipp = min(width / (ncols * (tw + gap)), (height - rows * label_h) / (rows * (th + gap)))
        if ipp > best[1] + 1e-12:
            best = (ncols, ipp)
    return best


def axes_at(fig: Figure, x: float, y: float, w: float, h: float) -> Axes:
    """Axes at x, y (inches from the top-left corner), w x h inches."""
    pw, ph = fig.get_size_inches()
    return fig.add_axes((x / pw, 1 - (y + h) / ph, w / pw, h / ph))


def text_at(fig: Figure, x: float, y: float, s: str, size: float = FONT, **kw: Any) -> None:
    """Text whose anchor is at x, y (inches from the top-left corner); ``va`` defaults to "top"."""
    pw, ph = fig.get_size_inches()
    fig.text(x / pw, 1 - y / ph, s, fontsize=size, **{"va": "top", **kw})


def draw_picture(canvas: Axes, image: np.ndarray, panel: tuple[float, float, float], **kw: Any) -> None:
    """Draw ``image`` into the square panel (x, y, side) of a ``page_canvas``, keeping its aspect ratio, framed;
    embedded at the resolution it is shown at (``at_shown_size``)."""
    x, y, side = panel
    h, w = image.shape[:2]
    scale = side / max(h, w)
    dx, dy = (side - w * scale) / 2, (side - h * scale) / 2
    canvas.imshow(at_shown_size(image, w * scale, h * scale),
                  extent=(x + dx, x + dx + w * scale, y + dy + h * scale, y + dy), aspect="auto",
                  interpolation="none", **kw)
    canvas.add_patch(Rectangle((x + dx, y + dy), w * scale, h * scale, fill=False, lw=0.4, ec="0.6"))
