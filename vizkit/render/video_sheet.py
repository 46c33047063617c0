"""The contact sheet of a video run: page 1 is every command's ``page_one`` (title, the video's path, provenance),
then the run's summary and notes, then a grid of selected frames, each with its frame number, time and a caption
(e.g. the Grad-CAM class and peak). Later pages continue the grid; pages are built one at a time.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.render.kit.first_page import page_one, page_title
from vizkit.render.kit.page import A4_PORTRAIT, FONT, LINE, MARGIN, Cursor, axes_at, new_page
from vizkit.render.kit.pdf import PageMaker, built, write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes

__all__ = ["SheetFrame", "contact_sheet_pages", "write_contact_sheet"]

COLUMNS = 4  # for square frames; wide ones (a frame beside its grids) get fewer, larger columns
LABEL_H = 0.32  # inches under each frame: two lines
ROW_GAP = 0.1


@dataclass(frozen=True)
class SheetFrame:
    """One frame of the sheet: its index in the video, its time in seconds, the picture and a one-line caption."""

    index: int
    time: float
    picture: np.ndarray
    caption: str = ""


@dataclass(frozen=True)
class _Grid:
    columns: int
    pic_w: float
    pic_h: float

    @property
    def row_h(self) -> float:
        return self.pic_h + LABEL_H + ROW_GAP

    def rows_between(self, top: float, bottom: float) -> int:
        return max(0, math.floor((bottom - top) / self.row_h))


def _grid(frames: Sequence[SheetFrame]) -> _Grid:
    height, width = frames[0].picture.shape[:2] if frames else (1, 1)
    columns = max(1, round(COLUMNS * min(1.0, height / width)))
    pic_w = (A4_PORTRAIT[0] - 2 * MARGIN) / columns - 0.12
    return _Grid(columns, pic_w, pic_w * height / width)


def _draw(fig: Figure, frames: Sequence[SheetFrame], grid: _Grid, top: float) -> None:
    cell_w = grid.pic_w + 0.12
    for i, frame in enumerate(frames):
        row, col = divmod(i, grid.columns)
        x, y = MARGIN + col * cell_w, top + row * grid.row_h
        ax = axes_at(fig, x, y, grid.pic_w, grid.pic_h)
        ax.imshow(frame.picture, interpolation="none")
        ax.set_axis_off()
        label = Cursor(fig, x, y + grid.pic_h + 0.04, grid.pic_w)
        label.line(f"frame {frame.index}  \u00b7  {frame.time:.2f} s")
        if frame.caption:
            label.line(frame.caption, color="0.3")


def _later_page(frames: Sequence[SheetFrame], grid: _Grid, title: str) -> Figure:
    fig = new_page()
    c = Cursor(fig, MARGIN, MARGIN, A4_PORTRAIT[0] - 2 * MARGIN)
    c.line(f"{title} (continued)", FONT + 2, weight="bold")
    _draw(fig, frames, grid, c.y + LINE)
    return fig


def contact_sheet_pages(frames: Sequence[SheetFrame], command: str, info: ReportInfo, summary: Sequence[str],
                        notes: Sequence[str] = ()) -> list[PageMaker]:
    """Page 1 (built now: its header decides how many frames still fit on it) and makers for the later pages."""
    fig, c = page_one(command, info, compact=True)  # the frames need the room
    c.heading("Video")
    for line in summary:
        c.paragraph(line)
    notes_block(c, page_notes(info, notes))
    grid = _grid(frames)
    top, bottom = c.y + LINE, A4_PORTRAIT[1] - MARGIN - 0.3
    first = grid.rows_between(top, bottom) * grid.columns
    _draw(fig, frames[:first], grid, top)
    rest_rows = max(1, grid.rows_between(MARGIN + 2 * LINE, bottom))
    per_page = rest_rows * grid.columns
    title = page_title(command, info)
    later = [functools.partial(_later_page, frames[i:i + per_page], grid, title)
             for i in range(first, len(frames), per_page)]
    return [built(fig), *later]


def write_contact_sheet(path: Path, frames: Sequence[SheetFrame], command: str, info: ReportInfo,
                        summary: Sequence[str], notes: Sequence[str] = ()) -> int:
    """Write the sheet to ``path``; returns the page count."""
    pages = contact_sheet_pages(frames, command, info, summary, notes)
    return write_pdf(path, pages, title=page_title(command, info), subject=f"vizkit {command} video contact sheet",
                     keywords=f"vizkit {command} video", footer_left=Path(path).name)
