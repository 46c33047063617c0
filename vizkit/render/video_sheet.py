"""The contact sheet of a video run: the selected frames (as the output video shows them) in a grid, each labelled
with its frame number, time and a caption (e.g. the Grad-CAM class and peak), on A4 pages built one at a time.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.render.kit.page import A4_PORTRAIT, FONT, LINE, MARGIN, Cursor, axes_at, new_page, wrap
from vizkit.render.kit.pdf import PageMaker, write_pdf

__all__ = ["SheetFrame", "contact_sheet_pages", "write_contact_sheet"]

COLUMNS = 4  # for square frames; wide ones (a frame beside its grids) get fewer, larger columns
LABEL_H = 0.32  # inches under each frame: two lines


@dataclass(frozen=True)
class SheetFrame:
    """One frame of the sheet: its index in the video, its time in seconds, the picture and a one-line caption."""

    index: int
    time: float
    picture: np.ndarray
    caption: str = ""


def _columns(frames: Sequence[SheetFrame]) -> int:
    if not frames:
        return COLUMNS
    height, width = frames[0].picture.shape[:2]
    return max(1, round(COLUMNS * min(1.0, height / width)))


def _page(frames: Sequence[SheetFrame], header: Sequence[str]) -> Figure:
    fig = new_page()
    page_w = fig.get_size_inches()[0]
    c = Cursor(fig, MARGIN, MARGIN, page_w - 2 * MARGIN)
    for i, line in enumerate(header):
        if i == 0:
            c.line(line, FONT + 2, weight="bold")
        else:
            c.paragraph(line)
    top, columns = c.y + LINE, _columns(frames)
    cell_w = (page_w - 2 * MARGIN) / columns
    aspect = frames[0].picture.shape[0] / frames[0].picture.shape[1] if frames else 1.0
    pic_w = cell_w - 0.12
    pic_h = pic_w * aspect
    for i, frame in enumerate(frames):
        row, col = divmod(i, columns)
        x, y = MARGIN + col * cell_w, top + row * (pic_h + LABEL_H + 0.1)
        ax = axes_at(fig, x, y, pic_w, pic_h)
        ax.imshow(frame.picture, interpolation="none")
        ax.set_axis_off()
        label = Cursor(fig, x, y + pic_h + 0.04, pic_w)
        label.line(f"frame {frame.index}  \u00b7  {frame.time:.2f} s")
        if frame.caption:
            label.line(frame.caption, color="0.3")
    return fig


def contact_sheet_pages(frames: Sequence[SheetFrame], header: Sequence[str]) -> list[PageMaker]:
    """Page makers: as many frames per page as fit below ``header`` (its first line is the title)."""
    if not frames:
        return [lambda: _page([], header)]
    page_w, page_h = A4_PORTRAIT
    columns = _columns(frames)
    cell_w = (page_w - 2 * MARGIN) / columns
    shape = frames[0].picture.shape
    pic_h = (cell_w - 0.12) * shape[0] / shape[1]
    header_lines = 2 + sum(len(wrap(line, page_w - 2 * MARGIN)) for line in header[1:])
    usable = page_h - 2 * MARGIN - header_lines * LINE - 0.4
    rows = max(1, math.floor(usable / (pic_h + LABEL_H + 0.1)))
    per_page = rows * columns
    chunks = [frames[i:i + per_page] for i in range(0, len(frames), per_page)]
    return [functools.partial(_page, chunk, header) for chunk in chunks]


def write_contact_sheet(path: Path, frames: Sequence[SheetFrame], header: Sequence[str], *, keywords: str) -> int:
    """Write the sheet to ``path``; returns the page count."""
    return write_pdf(path, contact_sheet_pages(frames, header), title=header[0], subject="video contact sheet",
                     keywords=keywords, footer_left=Path(path).name)
