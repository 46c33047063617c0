"""The gallery's unit pages of a relevance-ranked ``vizkit mine --rank relevance --class C``: each rendered unit's
top-K images with their conditional heatmaps for the class (``vizkit.render.mine_relevance.heatmap_rgb``, the
colours of the PDF), its relevance shares and the histogram of its top-K shares. The index and the layer pages are
``vizkit.render.mine_html``'s, which calls ``heatmap_unit_page`` for each rendered unit."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vizkit.render.kit.html import write_html_page
from vizkit.render.mine_relevance import heatmap_rgb

if TYPE_CHECKING:
    from vizkit.project.mine_heatmaps import UnitHeatmaps
    from vizkit.scan.topk import LayerTopK, MineResult

__all__ = ["heatmap_unit_page", "relevance_stats"]


def relevance_stats(state: LayerTopK, channel: int, class_name: str) -> str:
    """The unit's line: its mean relevance share for the class and how often the share is > 0."""
    dead = " <span class=\"dead\">never relevant for the class</span>" if bool(state.dead[channel]) else ""
    return (f"relevance for {html.escape(class_name)}: mean share {float(state.mean[channel]):.4g} &middot; "
            f"&gt; 0 on {100 * float(state.rate[channel]):.1f}% of images{dead}")


def _save_heatmaps(folder: Path, n: int, unit: UnitHeatmaps) -> list[tuple[str, str]]:
    """Each entry's heatmap and image as PNG; their (heatmap, image) paths relative to html/."""
    names = []
    for r, entry in enumerate(unit.entries):
        stem = f"img/l{n:02d}-c{unit.channel:05d}-{r:02d}"
        Image.fromarray(heatmap_rgb(entry.heatmap)).save(folder / f"{stem}-h.png")
        Image.fromarray(np.ascontiguousarray(entry.image)).save(folder / f"{stem}-i.png")
        names.append((f"{stem}-h.png", f"{stem}-i.png"))
    return names


def heatmap_unit_page(folder: Path, n: int, page: str, layer_link: str, unit: UnitHeatmaps,
                      result: MineResult) -> str:
    """Write ``folder/page`` for one relevance-ranked unit of the ``n``-th layer (its pictures are
    ``img/lNN-cCCCCC-RR-{h,i}.png``); returns its card's picture (the top heatmap, or "" when no image was
    scanned)."""
    from vizkit.render.mine_html import histogram_svg

    state = result.layers[unit.layer]
    named = result.ranking.name or f"class {unit.target}"
    pictures = _save_heatmaps(folder, n, unit)
    body = [f'<p><a href="index.html">index</a> &rsaquo; <a href="{layer_link}">{html.escape(unit.layer)}</a></p>',
            f"<p>{relevance_stats(state, unit.channel, named)}</p>",
            "<h2>Top relevance shares</h2>",
            histogram_svg(state.values[unit.channel], float(state.mean[unit.channel])),
            "<p>Histogram of the unit's top-K relevance shares over the dataset. Each image is shown with its "
            f"conditional heatmap: {html.escape(named)}'s relevance through this unit alone, carried to the input "
            "(red: for the class, blue: against; each map scaled on its own).</p>", '<div class="entries">']
    for r, (entry, (heat, image)) in enumerate(zip(unit.entries, pictures, strict=True)):
        body.append(f'<div class="entry"><img src="{heat}" alt="heatmap #{r + 1}"> '
                    f'<img src="{image}" alt="image #{r + 1}"><br>#{r + 1} share {entry.value:.5g}<br>'
                    f"image {entry.image_index}: {html.escape(entry.path)}</div>")
    body.append("</div>")
    if not unit.entries:
        body.append("<p>no image scanned</p>")
    write_html_page(folder / page, f"{unit.layer} channel {unit.channel}", body)
    return pictures[0][0] if pictures else ""
