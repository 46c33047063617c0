"""Page 1 of deconv.pdf: the image, how it was processed, what the model predicted, and what to keep in mind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.project.results import DeconvResult
from vizkit.render.display import display_image
from vizkit.render.info import ReportInfo
from vizkit.render.pages import FONT, MARGIN, Cursor, new_page
from vizkit.render.provenance import RANDOM_INIT_NOTE, model_block, notes_block, page_notes, run_block

IMAGE_SIZE = 3.0  # inches


def summary_notes(result: DeconvResult, info: ReportInfo) -> list[str]:
    """The notes page 1 shows: the run's (random init first), then the result's, each once."""
    return page_notes(info, result.notes)


def render_summary_page(result: DeconvResult, info: ReportInfo, first_layer_page: int | list[int]) -> Figure:
    """Page 1 of deconv.pdf. ``first_layer_page``: each layer's first page, or the first layer's (one page each)."""
    starts = (first_layer_page if isinstance(first_layer_page, list)
              else [first_layer_page + i for i in range(len(result.layers))])
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    top = Cursor(fig, MARGIN, MARGIN, width)
    top.line(f"vizkit deconv: {Path(info.image_path or 'image').name}", size=15, weight="bold")
    top.y += 0.08
    top.paragraph(f"image: {info.image_path}", color="0.3")
    top.y += 0.1

    image_top = top.y
    ax = fig.add_axes((MARGIN / page_w, 1 - (image_top + IMAGE_SIZE) / page_h,
                       IMAGE_SIZE / page_w, IMAGE_SIZE / page_h))
    ax.imshow(display_image(result.image), interpolation="none")
    ax.set_axis_off()
    _, c, h, w = np.asarray(result.input).shape
    fig.text(MARGIN / page_w, 1 - (image_top + IMAGE_SIZE + 0.05) / page_h,
             f"as fed to the model (de-normalised): {c} x {h} x {w}", fontsize=FONT - 1, va="top", color="0.3")

    right_x = MARGIN + IMAGE_SIZE + 0.3
    right = Cursor(fig, right_x, image_top - 0.1, page_w - MARGIN - right_x)
    model_block(right, info)
    _predictions_block(right, result)

    below = Cursor(fig, MARGIN, max(image_top + IMAGE_SIZE + 0.25, right.y), width)
    run_block(below, info)

    below.heading("Interception audit")
    if result.audit:
        below.table(["op", "rule", "calls"], [[a.op, a.rule, a.count] for a in result.audit],
                    columns=[0.0, 2.4, width], align=["left", "left", "right"], max_rows=14)
    else:
        below.line("no operations intercepted")

    notes_block(below, summary_notes(result, info))

    below.heading("Layers")
    rows = [[lp.layer, lp.mode, "x".join(map(str, np.shape(lp.activation_maps)[1:])), len(lp.units),
             "yes" if lp.image_dependent else "no", starts[i]] for i, lp in enumerate(result.layers)]
    below.table(["layer", "mode", "grid", "top-K", "depends on image", "page"], rows,
                columns=[0.0, 2.4, 3.2, 4.3, 5.7, width], align=["left", "left", "left", "right", "right", "right"],
                max_rows=max(3, int((page_h - MARGIN - 0.4 - below.y) / 0.155) - 3))
    return fig


def _predictions_block(c: Cursor, result: DeconvResult) -> None:
    c.heading("Top-5 predictions")
    if not result.predictions:
        c.line("none (no classifier output)")
        return
    rows = [[i + 1, p.index, p.name[:38], f"{100 * p.probability:.1f} %"] for i, p in enumerate(result.predictions[:5])]
    c.table(["#", "class", "name", "probability"], rows, columns=[0.0, 0.45, 0.6, c.width],
            align=["left", "right", "left", "right"])


__all__ = ["RANDOM_INIT_NOTE", "render_summary_page", "summary_notes"]
