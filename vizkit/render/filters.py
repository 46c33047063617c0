"""filters.pdf / filters.npz: convolution filters as pictures and their per-filter RMS, dead and dominant flags.

Pages (A4 portrait, Figure objects only):

- Summary page(s): provenance (when a ``ReportInfo`` is given), the flag definitions, and one table row per conv
  layer (shape, groups, RMS median/min/max, dead and dominant counts, picture page). Long tables continue on
  further pages.
- One page per pictured layer: a header with counts and the flagged filter indices, the RMS of every output
  filter as a bar chart (dominant orange, dead red, the radius dashed), then
  - filters with 3 input channels (an RGB model's first conv): RGB tiles; with 1 input channel (LeNet's first
    conv, depthwise convs): grey tiles. Each tile is normalised **on its own**, ``0.5 + 0.5 * w / max|w|``
    (grey = 0, sign and colour opponency kept): a joint scale lets the few largest filters wash out the rest,
    which is exactly the dominance the paper describes, and the magnitudes are in the RMS chart above. Dominant
    tiles get an orange frame; dead tiles are drawn flat grey, crossed out in red (scaled up, their residue would
    look like a feature). At most ``MAX_TILES`` (first by index) are drawn; the page says so.
  - deeper layers: a heatmap of each output filter's per-input-channel kernel L2 norm (rows: output filters,
    at most ``MAX_ROWS``; columns: input channels of its group, at most ``MAX_COLS``); for 1x1 convolutions the
    signed weight itself (it is the whole kernel). For kernels larger than 1x1, below it the kernels of the
    ``KERNEL_ROWS`` highest-RMS filters, one row each over their first ``KERNEL_COLS`` input channels, each row
    scaled on its own with grey = 0.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vizkit.capture.filters import FilterStats
from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.results import FiltersResult
from vizkit.render.kit.first_page import page_one, page_title
from vizkit.render.kit.page import FONT, LINE, MARGIN, Cursor, axes_at, grid_layout, mosaic, new_page
from vizkit.render.kit.pdf import write_pdf
from vizkit.render.kit.provenance import page_notes
from vizkit.render.writer import Document

MAX_TILES = 256
MAX_ROWS = 256
MAX_COLS = 512
KERNEL_ROWS = 12
KERNEL_COLS = 32
FLAGGED_LISTED = 24  # flagged filter indices listed in a page header
DEAD_COLOUR, DOMINANT_COLOUR, NORMAL_COLOUR = "firebrick", "darkorange", "steelblue"
MANIFEST = "filters.manifest.json"


# ---------------------------------------------------------------- arrays

def filters_arrays(stats: Sequence[FilterStats]) -> dict[str, np.ndarray]:
    """The npz content, exactly: per layer L ``L/rms`` (out,) float32, ``L/dead`` and ``L/dominant`` (out,) bool,
    ``L/weights`` (out, in/groups, kh, kw) float32 (raw)."""
    arrays: dict[str, np.ndarray] = {}
    for s in stats:
        if f"{s.layer}/rms" in arrays:
            raise ValueError(f"layer {s.layer!r} appears twice")
        arrays[f"{s.layer}/rms"] = np.asarray(s.rms, dtype=np.float32)
        arrays[f"{s.layer}/dead"] = np.asarray(s.dead, dtype=bool)
        arrays[f"{s.layer}/dominant"] = np.asarray(s.dominant, dtype=bool)
        arrays[f"{s.layer}/weights"] = np.asarray(s.weight, dtype=np.float32)
    return arrays


# ---------------------------------------------------------------- pictures

def filter_tiles(weight: np.ndarray) -> np.ndarray:
    """(out, C, kh, kw) weights with C = 1 or 3 -> (out, kh, kw, 3) float32 tiles in [0, 1], each filter on its
    own scale: ``0.5 + 0.5 * w / max|w|`` (grey = 0; all-zero filters flat grey; non-finite weights grey)."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] not in (1, 3):
        raise ValueError(f"tiles need (out, 1 or 3, kh, kw) weights, got shape {w.shape}")
    w = np.where(np.isfinite(w), w, 0.0)
    peak = np.abs(w).reshape(len(w), -1).max(axis=1, initial=0.0).reshape(-1, 1, 1, 1)
    tiles = np.where(peak > 0, 0.5 + 0.5 * w / np.where(peak > 0, peak, 1.0), 0.5)
    tiles = np.clip(tiles, 0.0, 1.0).transpose(0, 2, 3, 1)
    if tiles.shape[3] == 1:
        tiles = np.repeat(tiles, 3, axis=3)
    return tiles.astype(np.float32)


def kernel_norms(weight: np.ndarray) -> np.ndarray:
    """(out, in/groups) L2 norm of each output filter's kernel over each input channel."""
    w = np.asarray(weight, dtype=np.float64)
    return np.sqrt((w.reshape(w.shape[0], w.shape[1], -1) ** 2).sum(axis=2)).astype(np.float32)


def picture_kind(s: FilterStats) -> str:
    """'rgb' (3 input channels), 'grey' (1 input channel: LeNet's conv1, depthwise), 'weights' (1x1 deeper
    layers: the signed weight matrix) or 'norms' (the per-input-channel kernel norm matrix)."""
    _, cin, kh, kw = s.shape
    if cin == 3 and s.groups == 1:
        return "rgb"
    if cin == 1:
        return "grey"
    return "weights" if kh * kw == 1 else "norms"


def rms_chart(ax: Axes, s: FilterStats) -> None:
    """Bar per output filter; dominant orange, dead red (with a marker below the axis), the radius dashed."""
    n = len(s.rms)
    colours = np.where(s.dead, DEAD_COLOUR, np.where(s.dominant, DOMINANT_COLOUR, NORMAL_COLOUR))
    half = 0.5 if n > 64 else 0.4
    x = np.arange(n, dtype=np.float64)
    heights = np.nan_to_num(s.rms.astype(np.float64))
    bars = np.stack([np.stack([x - half, np.zeros(n)], 1), np.stack([x - half, heights], 1),
                     np.stack([x + half, heights], 1), np.stack([x + half, np.zeros(n)], 1)], axis=1)
    # one artist: fast for 1000s. The stubs want a sequence of polygons; an (N, 4, 2) array is what it takes fastest.
    ax.add_collection(PolyCollection(cast("Sequence[np.ndarray]", bars), facecolors=colours, linewidths=0))
    finite = s.rms[np.isfinite(s.rms)]
    top = float(finite.max()) if finite.size else 1.0
    ymax = (top if top > 0 else 1.0) * 1.08
    if s.radius <= ymax * 1.5:
        ymax = max(ymax, s.radius * 1.08)
        ax.axhline(s.radius, color="0.2", lw=0.7, ls="--")
        ax.text(n - 0.5, s.radius, f" radius\n {s.radius:g}", fontsize=FONT - 1.5, va="center", ha="left",
                color="0.2", clip_on=False)
    else:
        ax.text(1.0, 1.02, f"radius {s.radius:g} is above every filter", transform=ax.transAxes,
                fontsize=FONT - 1.5, ha="right", va="bottom", color="0.2")
    ax.set_ylim(0, ymax)
    ax.set_xlim(-0.5, n - 0.5)
    dead = np.flatnonzero(s.dead)
    if dead.size:
        ax.plot(dead, np.full(dead.size, -0.04 * ymax), marker="^", ls="none", color=DEAD_COLOUR, ms=3,
                clip_on=False)
    ax.set_xlabel("output filter", fontsize=FONT - 1, labelpad=2)
    ax.set_ylabel("RMS", fontsize=FONT - 1, labelpad=2)
    ax.tick_params(labelsize=FONT - 1.5, length=2, pad=1)


def _tiles_panel(fig: Figure, s: FilterStats, x: float, y: float, width: float, height: float) -> str:
    n = min(len(s.rms), MAX_TILES)
    tiles = filter_tiles(s.weight[:n])
    tiles[s.dead[:n]] = 0.5  # scaled up, a dead filter's residue would look like a feature
    kh, kw = tiles.shape[1:3]
    scale = max(1, 48 // max(kh, kw))
    gap = max(1, scale // 4)
    th, tw = kh * scale, kw * scale
    label_h = 0.12 if n <= 100 else 0.0
    ncols, ipp = grid_layout(n, th, tw, gap, label_h, width, height)
    label_px = math.ceil(label_h / ipp) if label_h else 0
    picture = mosaic(tiles, ncols, scale, gap, gap + label_px)
    h_px, w_px = picture.shape[0] + label_px, picture.shape[1]
    ax = axes_at(fig, x + (width - w_px * ipp) / 2, y, w_px * ipp, h_px * ipp)
    ax.imshow(picture, interpolation="none", extent=(-0.5, w_px - 0.5, picture.shape[0] - 0.5, -0.5))
    ax.set_xlim(-0.5, w_px - 0.5)
    ax.set_ylim(h_px - 0.5, -0.5)
    ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, ncols)
        x0, y0 = c * (tw + gap), r * (th + gap + label_px)
        colour = DEAD_COLOUR if s.dead[i] else DOMINANT_COLOUR if s.dominant[i] else None
        if colour:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), tw, th, fill=False, ec=colour, lw=1.4 if n <= 100 else 0.8))
        if s.dead[i]:
            ax.plot([x0, x0 + tw - 1], [y0, y0 + th - 1], color=DEAD_COLOUR, lw=0.6)
            ax.plot([x0, x0 + tw - 1], [y0 + th - 1, y0], color=DEAD_COLOUR, lw=0.6)
        if label_px:
            ax.text(x0 + tw / 2 - 0.5, y0 + th + gap / 2, str(i), fontsize=FONT - 2, ha="center", va="top",
                    color="0.3")
    what = "RGB" if picture_kind(s) == "rgb" else "grey"
    drawn = f"all {n} filters" if n == len(s.rms) else f"filters 0-{n - 1} of {len(s.rms)} (at most {MAX_TILES})"
    if not label_px:
        drawn += f", {ncols} per row (row r starts at filter {ncols} x r)"
    return (f"{what} tiles: {drawn}. Each tile scaled on its own, grey = 0 (magnitudes: see the RMS chart). "
            "Frame: orange dominant, red dead (dead tiles crossed out and drawn flat grey).")


def _matrix_panel(fig: Figure, s: FilterStats, x: float, y: float, width: float, height: float) -> str:
    out, cin = s.shape[:2]
    rows, cols = min(out, MAX_ROWS), min(cin, MAX_COLS)
    signed = picture_kind(s) == "weights"
    matrix = (s.weight[:rows, :cols, 0, 0] if signed else kernel_norms(s.weight[:rows, :cols])).astype(np.float32)
    ax = axes_at(fig, x + 0.35, y, width - 1.0, height - 0.3)
    if signed:
        peak = float(np.abs(matrix).max()) or 1.0
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-peak, vmax=peak, interpolation="none", aspect="auto")
    else:
        image = ax.imshow(matrix, cmap="viridis", vmin=0, interpolation="none", aspect="auto")
    ax.set_xlabel("input channel" + (" (within the group)" if s.groups > 1 else ""), fontsize=FONT - 1,
                  labelpad=2)
    ax.set_ylabel("output filter", fontsize=FONT - 1, labelpad=2)
    ax.tick_params(labelsize=FONT - 1.5, length=2, pad=1)
    for i in np.flatnonzero(s.dead[:rows]):
        ax.plot([-0.5], [i], marker=">", color=DEAD_COLOUR, ms=3, clip_on=False)
    cax = axes_at(fig, x + width - 0.5, y, 0.12, height - 0.3)
    cbar = fig.colorbar(image, cax=cax)
    cbar.ax.tick_params(labelsize=FONT - 1.5, length=2, pad=1)
    cbar.set_label("weight" if signed else "kernel L2 norm", fontsize=FONT - 1)
    cut = []
    if rows < out:
        cut.append(f"output filters 0-{rows - 1} of {out}")
    if cols < cin:
        cut.append(f"input channels 0-{cols - 1} of {cin}")
    what = ("1x1 kernels: the signed weight of each output filter (row) for each input channel (column), one "
            "shared scale" if signed else
            f"{s.shape[2]}x{s.shape[3]} kernels: L2 norm of each output filter's (row) kernel over each input "
            "channel (column): which inputs a filter draws on")
    return what + (f"; drawn: {', '.join(cut)}" if cut else "") + ". Red marks at the left: dead filters."


def _kernel_rows_panel(fig: Figure, s: FilterStats, x: float, y: float, width: float, height: float) -> str:
    _, cin, kh, kw = s.shape
    chosen = np.argsort(-np.nan_to_num(s.rms.astype(np.float64), nan=-1.0), kind="stable")[:KERNEL_ROWS]
    cols = min(cin, KERNEL_COLS)
    w = np.nan_to_num(s.weight[chosen, :cols].astype(np.float64))
    peak = np.abs(w).reshape(len(chosen), -1).max(axis=1).reshape(-1, 1, 1, 1)
    scaled = np.where(peak > 0, 0.5 + 0.5 * w / np.where(peak > 0, peak, 1.0), 0.5)
    tiles = np.repeat(scaled.reshape(-1, kh, kw, 1), 3, axis=3)
    scale = max(1, 24 // max(kh, kw))
    gap = max(2, scale // 2)
    picture = mosaic(tiles.astype(np.float32), cols, scale, gap)
    label_w = 0.45
    side = min((width - label_w) / cols, height / len(chosen))
    ax = axes_at(fig, x + label_w, y, cols * side, len(chosen) * side * kh / kw)
    ax.imshow(picture, interpolation="none", aspect="auto")
    ax.set_axis_off()
    pitch = kh * scale + gap
    for r, o in enumerate(chosen):
        ax.text(-2, r * pitch + kh * scale / 2, f"{o}", fontsize=FONT - 1.5, ha="right", va="center",
                color=DEAD_COLOUR if s.dead[o] else DOMINANT_COLOUR if s.dominant[o] else "0.2")
    return (f"Kernels of the {len(chosen)} highest-RMS filters (one row each, filter index at the left), input "
            f"channels 0-{cols - 1}" + (f" of {cin}" if cols < cin else "") + "; each row scaled on its own, "
            "grey = 0, white = positive.")


# ---------------------------------------------------------------- pages

def _flag_text(indices: np.ndarray) -> str:
    listed = ", ".join(str(int(i)) for i in indices[:FLAGGED_LISTED])
    return listed + (f" and {len(indices) - FLAGGED_LISTED} more" if len(indices) > FLAGGED_LISTED else "")


def layer_page(s: FilterStats, title_prefix: str = "") -> Figure:
    """One filters page for one conv layer."""
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    head = Cursor(fig, MARGIN, MARGIN, width)
    out, cin, kh, kw = s.shape
    head.line(f"{title_prefix}{s.layer}", size=13, weight="bold")
    head.y += 0.06
    kind = "depthwise, " if s.groups > 1 and cin == 1 else f"groups {s.groups}, " if s.groups > 1 else ""
    head.paragraph(f"weight {out} x {cin} x {kh} x {kw} ({kind}output x input/groups x kh x kw)   \u00b7   RMS "
                   f"median {np.median(s.rms):.3g}, min {np.min(s.rms):.3g}, max {np.max(s.rms):.3g}")
    dead, dominant = np.flatnonzero(s.dead), np.flatnonzero(s.dominant)
    head.paragraph(f"dead: {len(dead)} of {out}" + (f" ({_flag_text(dead)})" if len(dead) else ""),
                   color=DEAD_COLOUR if len(dead) else "0.2", max_lines=2)
    head.paragraph(f"dominant: {len(dominant)} of {out}" + (f" ({_flag_text(dominant)})" if len(dominant) else ""),
                   color=DOMINANT_COLOUR if len(dominant) else "0.2", max_lines=2)
    head.paragraph(f"dead = RMS 0 or below {s.dead_ratio:g} x the layer median; dominant = RMS above the radius "
                   f"{s.radius:g} (Zeiler & Fergus renormalise such filters to it). RMS over each output filter's "
                   f"weights, bias excluded.", color="0.35", size=FONT - 1)
    head.y += 0.12
    chart_h = 1.45
    rms_chart(axes_at(fig, MARGIN + 0.45, head.y, width - 0.85, chart_h), s)
    y = head.y + chart_h + 0.45
    bottom = page_h - MARGIN - 0.3
    kind = picture_kind(s)
    caption_h = 0.45
    if kind in ("rgb", "grey"):
        caption = _tiles_panel(fig, s, MARGIN, y + caption_h, width, bottom - y - caption_h)
    elif kind == "weights":
        caption = _matrix_panel(fig, s, MARGIN, y + caption_h, width, bottom - y - caption_h)
    else:
        matrix_h = (bottom - y) * 0.55
        caption = _matrix_panel(fig, s, MARGIN, y + caption_h, width, matrix_h - caption_h)
        y2 = y + matrix_h + 0.15
        caption2 = _kernel_rows_panel(fig, s, MARGIN, y2 + caption_h, width, bottom - y2 - caption_h)
        Cursor(fig, MARGIN, y2, width).paragraph(caption2, color="0.3", max_lines=3)
    Cursor(fig, MARGIN, y, width).paragraph(caption, color="0.3", max_lines=3)
    return fig


def _table_rows(stats: Sequence[FilterStats], pages: dict[str, int]) -> list[list[object]]:
    rows = []
    for s in stats:
        out, cin, kh, kw = s.shape
        name = s.layer if len(s.layer) <= 38 else "\u2026" + s.layer[-37:]
        rows.append([name, f"{out}x{cin}x{kh}x{kw}", s.groups, f"{np.median(s.rms):.3g}",
                     f"{np.min(s.rms):.3g}", f"{np.max(s.rms):.3g}", int(s.dead.sum()), int(s.dominant.sum()),
                     pages.get(s.layer, "-")])
    return rows


TABLE_HEADER = ["layer", "weight shape", "groups", "RMS median", "min", "max", "dead", "dominant", "page"]
TABLE_ALIGN = ["left", "left", "right", "right", "right", "right", "right", "right", "right"]


def _summary_head(title: str, info: ReportInfo | None, stats: Sequence[FilterStats]) -> tuple[Figure, Cursor]:
    """The first summary page down to the table: provenance, definitions, totals."""
    fig, c = page_one("filters", info, title=title)
    for note in page_notes(info) if info is not None else []:
        c.paragraph(f"note: {note}", weight="bold", color=DEAD_COLOUR, max_lines=2)
    radius = stats[0].radius if stats else 0.1
    ratio = stats[0].dead_ratio if stats else 1e-3
    c.heading("Definitions")
    c.paragraph(f"RMS: root mean square of one output filter's weights (in/groups x kh x kw values; bias "
                f"excluded). Dominant: RMS above the radius {radius:g}. Zeiler & Fergus (2014) renormalise "
                "every filter whose RMS exceeds 0.1 to that radius, because a few filters otherwise dominate "
                "their layer; networks trained without that rule (and BatchNorm networks, whose weight scale "
                "is arbitrary) often exceed it, so compare counts within a layer. Dead: RMS exactly 0 or below "
                f"{ratio:g} x the layer's median RMS.")
    total = sum(len(s.rms) for s in stats)
    c.paragraph(f"{len(stats)} conv layers, {total} filters: {sum(int(s.dead.sum()) for s in stats)} dead, "
                f"{sum(int(s.dominant.sum()) for s in stats)} dominant.", weight="bold")
    c.heading("Layers")
    return fig, c


def _rows_that_fit(c: Cursor) -> int:
    """Table rows that fit below the cursor (header, two rules and the footer's space included)."""
    return max(1, int((c.page_h - MARGIN - 0.35 - c.y) / LINE) - 2)


def _table(c: Cursor, rows: list[list[object]]) -> None:
    c.table(TABLE_HEADER, rows, columns=[0.0, 2.45, 3.9, 4.75, 5.35, 5.85, 6.2, 6.9, c.width], align=TABLE_ALIGN)


def filters_page_makers(stats: Sequence[FilterStats], title_prefix: str = "", *,
                        pictured: Sequence[str] | None = None, info: ReportInfo | None = None,
                        first_page: int = 1) -> list[Callable[[], Figure]]:
    """Like :func:`filters_pages`, but each page as a function that builds it (a long report then never holds
    every figure at once)."""
    picture = [s for s in stats if pictured is None or s.layer in set(pictured)]
    title = title_prefix + (page_title("filters", info) if info is not None else "filters")
    _, probe = _summary_head(title, info, stats)  # measures how much of page 1 the provenance block takes
    fit_first = _rows_that_fit(probe)
    probe.y = MARGIN + 0.35  # where a continuation page's table starts
    fit_more = _rows_that_fit(probe)
    n_more = max(0, math.ceil((len(stats) - fit_first) / fit_more))
    pages = {s.layer: first_page + 1 + n_more + i for i, s in enumerate(picture)}
    rows = _table_rows(stats, pages)

    def first() -> Figure:
        fig, c = _summary_head(title, info, stats)
        _table(c, rows[:fit_first])
        return fig

    def more(start: int) -> Figure:
        fig = new_page()
        c = Cursor(fig, MARGIN, MARGIN, fig.get_size_inches()[0] - 2 * MARGIN)
        c.line(f"{title} (continued)", size=13, weight="bold")
        c.y = MARGIN + 0.35
        _table(c, rows[start: start + fit_more])
        return fig

    makers: list[Callable[[], Figure]] = [first]
    makers += [partial(more, start) for start in range(fit_first, len(rows), fit_more)]
    makers += [partial(layer_page, s, title_prefix) for s in picture]
    return makers


def filters_pages(stats: Sequence[FilterStats], title_prefix: str = "", *, pictured: Sequence[str] | None = None,
                  info: ReportInfo | None = None, first_page: int = 1) -> list[Figure]:
    """Summary page(s) with a table row for every layer in ``stats``, then one page per pictured layer (default:
    all), in ``stats`` order. ``first_page`` is the page number the first figure will have (for the table's page
    column); ``info`` adds the model, weights and settings to page 1. No footers: the caller numbers pages."""
    return [make() for make in filters_page_makers(stats, title_prefix, pictured=pictured, info=info,
                                                   first_page=first_page)]


def render_filters_pdf(result: FiltersResult, info: ReportInfo, path: Path) -> int:
    """Write filters.pdf and return its page count."""
    return write_pdf(path, filters_page_makers(result.stats, pictured=result.pictured, info=info),
                     title=f"vizkit filters: {info.model}",
                     subject=f"Convolution filters and their RMS of {info.model}",
                     keywords="filters, RMS, dead filters, Zeiler-Fergus", footer_left=f"filters \u00b7 {info.model}")


def filters_document(result: FiltersResult, info: ReportInfo) -> Document:
    """``filters/``: filters.npz, filters.pdf, then filters.manifest.json."""
    return Document([("filters.npz", lambda p: write_npz(p, filters_arrays(result.stats))),
                     ("filters.pdf", lambda p: render_filters_pdf(result, info, p))], manifest=MANIFEST,
                    folder="filters")


__all__ = ["filter_tiles", "filters_arrays", "filters_document", "filters_page_makers", "filters_pages",
           "kernel_norms", "layer_page", "picture_kind", "render_filters_pdf", "rms_chart"]
