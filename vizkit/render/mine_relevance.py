"""DIR/mine/ of a relevance-ranked ``vizkit mine --rank relevance --class C``: the unit pages show each reference
image's conditional heatmap for the class (zennit-crp's ``vis_img_heatmap``: signed, ``bwr``, symmetric per map)
beside the image, instead of deconvnet projections. Page 1, the gallery's summary and the scan keys of mine.npz
are ``vizkit.render.mine``'s.

Heatmap keys of mine.npz, per layer L with U rendered units of top-K, images H x W:

- ``L/heat/channels`` (U,) int64: the rendered channels, in render order;
- ``L/heat/image_index`` (U, K) int64: the reference images (as ``L/image_index``), -1 where no entry;
- ``L/heat/data`` (U, K, H, W) int8 and ``L/heat/scale`` (U, K) float32: the heatmap is ``data * scale``
  (max |h| / 127 per map, as the projections are stored).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.mine_heatmaps import UnitHeatmaps
from vizkit.project.results import MineOutput
from vizkit.render.kit.page import FONT, MARGIN, draw_picture, new_page, page_canvas, text_at
from vizkit.render.kit.pdf import PageMaker, write_pdf
from vizkit.render.kit.provenance import page_notes
from vizkit.render.writer import Document
from vizkit.scan.topk import MineResult

__all__ = ["heatmap_arrays", "heatmap_rgb", "read_heatmaps", "relevance_document"]

GRID_GAP, CELL_GAP, LABEL_H, VALUE_H = 0.3, 0.05, 0.34, 0.11


def heatmap_arrays(units: Sequence[UnitHeatmaps], k: int) -> dict[str, np.ndarray]:
    """The heatmap keys (module docstring) of every layer with rendered units."""
    by_layer: dict[str, list[UnitHeatmaps]] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append(unit)
    arrays: dict[str, np.ndarray] = {}
    for layer, group in by_layer.items():
        shape = next((e.heatmap.shape for u in group for e in u.entries), (0, 0))
        data = np.zeros((len(group), k, *shape), np.int8)
        scale = np.zeros((len(group), k), np.float32)
        index = np.full((len(group), k), -1, np.int64)
        for u, unit in enumerate(group):
            for r, entry in enumerate(unit.entries[:k]):
                h = np.nan_to_num(np.asarray(entry.heatmap, np.float32))
                peak = float(np.abs(h).max()) if h.size else 0.0
                scale[u, r] = peak / 127 if peak > 0 else 0.0
                data[u, r] = np.round(h / scale[u, r]).astype(np.int8) if peak > 0 else 0
                index[u, r] = entry.image_index
        arrays[f"{layer}/heat/channels"] = np.array([unit.channel for unit in group], np.int64)
        arrays[f"{layer}/heat/image_index"] = index
        arrays[f"{layer}/heat/data"] = data
        arrays[f"{layer}/heat/scale"] = scale
    return arrays


def read_heatmaps(arrays: dict[str, np.ndarray], layer: str) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Decode ``layer``'s stored heatmaps: channel -> [(image index, (H, W) float32)] in rank order."""
    channels, index = arrays[f"{layer}/heat/channels"], arrays[f"{layer}/heat/image_index"]
    data, scale = arrays[f"{layer}/heat/data"], arrays[f"{layer}/heat/scale"]
    return {int(ch): [(int(index[u, r]), data[u, r].astype(np.float32) * scale[u, r])
                      for r in range(index.shape[1]) if index[u, r] >= 0] for u, ch in enumerate(channels)}


def heatmap_rgb(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) signed relevance -> (H, W, 3) uint8 on ``bwr`` centred at 0 (white), each map scaled on its own."""
    h = np.asarray(heatmap, np.float32)
    peak = float(np.abs(h).max()) if h.size else 0.0
    unit = 0.5 + 0.5 * (h / peak if peak > 0 else h)
    return (colormaps["bwr"](unit)[..., :3] * 255).round().astype(np.uint8)


def _draw_unit(fig: Figure, canvas: Axes, unit: UnitHeatmaps, result: MineResult, top: float, height: float) -> None:
    from vizkit.render.mine import grid_shape

    state = result.layers[unit.layer]
    ch, named = unit.channel, result.ranking.name or f"class {unit.target}"
    text_at(fig, MARGIN, top, f"{unit.layer}  channel {ch}    relevance for {named}: mean share "
            f"{float(state.mean[ch]):.3g}, > 0 on {100 * float(state.rate[ch]):.1f}% of images",
            size=FONT + 0.5, weight="bold")
    width = fig.get_size_inches()[0] - 2 * MARGIN
    rows, cols = grid_shape(max(result.k, 1))
    grid_w = (width - GRID_GAP) / 2
    side = min((grid_w - (cols - 1) * CELL_GAP) / cols, (height - LABEL_H) / rows - VALUE_H - CELL_GAP)
    y0, used = top + LABEL_H, cols * side + (cols - 1) * CELL_GAP
    left = MARGIN + (width - 2 * used - GRID_GAP) / 2
    for g, (title, x0) in enumerate((("conditional heatmaps", left), ("images", left + used + GRID_GAP))):
        text_at(fig, x0 + used / 2, y0 - 0.02, title, size=FONT - 1, ha="center", va="bottom", color="0.3")
        for r, entry in enumerate(unit.entries):
            row, col = divmod(r, cols)
            x, y = x0 + col * (side + CELL_GAP), y0 + row * (side + VALUE_H + CELL_GAP)
            draw_picture(canvas, heatmap_rgb(entry.heatmap) if g == 0 else entry.image, (x, y, side))
            canvas.text(x + side / 2, y + side + 0.01, f"#{r + 1}  {entry.value:.3g}", ha="center", va="top",
                        fontsize=FONT - 1.5)
    if not unit.entries:
        text_at(fig, MARGIN, y0 + 0.2, "no image scanned", va="baseline")


def _units_page(units: Sequence[UnitHeatmaps], result: MineResult) -> Figure:
    from vizkit.render.mine import UNITS_PER_PAGE

    fig = new_page()
    canvas = page_canvas(fig)
    slot = (fig.get_size_inches()[1] - 2 * MARGIN - 0.2) / UNITS_PER_PAGE
    for i, unit in enumerate(units):
        _draw_unit(fig, canvas, unit, result, MARGIN + i * slot, slot - 0.15)
    return fig


def relevance_document(output: MineOutput, info: ReportInfo, extra: dict[str, object]) -> Document:
    """``mine/`` of a relevance-ranked run with heatmaps: mine.npz (scan + heatmap keys), mine.pdf (page 1 of
    ``vizkit.render.mine``, then the heatmap unit pages), html/ (the index, every unit of each layer and a page per
    rendered unit with its heatmaps: ``vizkit.render.mine_relevance_html``), then the manifest."""
    from vizkit.render.mine import FOLDER, MANIFEST, UNITS_PER_PAGE, mine_page_makers
    from vizkit.render.mine_html import write_mine_html

    result, units = output.result, output.heatmaps
    extra["rendered_units"] = {layer: [u.channel for u in units if u.layer == layer] for layer in result.layers}
    named = result.ranking.name or f"class {result.ranking.target}"

    def pdf(path: Path) -> None:
        chunks = [units[i : i + UNITS_PER_PAGE] for i in range(0, len(units), UNITS_PER_PAGE)]
        pages: list[PageMaker] = mine_page_makers(result, [], info, output.notes)[:1]
        pages += [partial(_units_page, chunk, result) for chunk in chunks]
        extra["pdf_pages"] = write_pdf(path, pages, title=f"vizkit mine: {info.model}, relevance for {named}",
                                       subject="Top-K reference images per unit by relevance for a class (CRP)",
                                       keywords="CRP, RelMax, LRP, zennit, dataset, top-k",
                                       footer_left=f"mine \u00b7 {info.model}")

    def gallery(path: Path) -> None:
        write_mine_html(result, [], info, path, notes=page_notes(info, output.notes), heatmaps=units)

    return Document([("mine.npz", lambda p: write_npz(p, {**result.to_arrays(), **heatmap_arrays(units, result.k)})),
                     ("mine.pdf", pdf), ("html", gallery)],
                    manifest=MANIFEST, folder=FOLDER, manifest_extra=extra)
