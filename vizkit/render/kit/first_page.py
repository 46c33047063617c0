"""``page_one``: the header every command's first page starts with, so that each says the same about how it was made.

The title, the image's path (per-image commands), then the provenance block (``vizkit.render.kit.provenance``):
beside the image when the page shows one (model and preprocessing on the right, settings and command below it),
otherwise under the title; ``compact``: the short block, all of it beside the image. Pages of a report's later
sections pass ``info=None``: the title and image only, since the report's first pages carry the block.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.render.kit.display import at_shown_size, display_image
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, new_page, text_at
from vizkit.render.kit.provenance import model_block, provenance_block, run_block

IMAGE_SIZE = 2.6  # inches: the image on page 1
TITLE_SIZE = 15


def page_title(command: str, info: ReportInfo | None, name: str | None = None) -> str:
    """'vizkit <command>: <image file name>' for per-image outputs, else 'vizkit <command>: <model>'."""
    if name is None and info is not None:
        name = Path(info.image_path).name if info.image_path else info.model
    return f"vizkit {command}: {name or 'image'}"


def page_one(command: str, info: ReportInfo | None, *, title: str | None = None, image: np.ndarray | None = None,
             caption: str = "", image_size: float = IMAGE_SIZE, compact: bool = False,
             beside: Callable[[Cursor], None] | None = None) -> tuple[Figure, Cursor]:
    """A new page with the header of ``command``'s page 1; returns it and a full-width cursor below the header.

    ``title`` replaces :func:`page_title`; ``image`` (display image) is drawn with ``caption`` under it and the
    provenance block beside it, then ``beside`` writes into the right column; ``compact``: the short provenance
    block (pictures below need the room)."""
    fig = new_page()
    width = fig.get_size_inches()[0] - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(title or page_title(command, info), size=TITLE_SIZE, weight="bold")
    c.y += 0.08
    if info is not None and info.image_path:
        c.paragraph(f"image: {info.image_path}", color="0.3")
        c.y += 0.1
    if image is None:
        if info is not None:
            provenance_block(c, info, compact=compact)
        return fig, c
    ax = axes_at(fig, MARGIN, c.y, image_size, image_size)
    ax.imshow(at_shown_size(display_image(image), image_size, image_size), interpolation="none")
    ax.set_axis_off()
    if caption:
        text_at(fig, MARGIN, c.y + image_size + 0.05, caption, size=FONT - 1, color="0.3")
    right = Cursor(fig, MARGIN + image_size + 0.3, c.y - (0.0 if compact else 0.1), width - image_size - 0.3)
    if info is not None and compact:
        provenance_block(right, info, compact=True)
    elif info is not None:
        model_block(right, info)
    if beside is not None:
        beside(right)
    below = Cursor(fig, MARGIN, max(c.y + image_size + 0.25, right.y), width)
    if info is not None and not compact:
        run_block(below, info)
    return fig, below


def input_caption(shape: tuple[int, ...], *, denormalised: bool = True) -> str:
    """'as fed to the model (de-normalised): C x H x W' for an input of shape (1, C, H, W)."""
    how = " (de-normalised)" if denormalised else ""
    return f"as fed to the model{how}: {' x '.join(map(str, shape[1:]))}"


__all__ = ["IMAGE_SIZE", "input_caption", "page_one", "page_title"]
