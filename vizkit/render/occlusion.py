"""The occlusion outputs of one image: occlusion.npz, occlusion.pdf, occlusion.sanity.json, occlusion.manifest.json.

occlusion.pdf page 1 is Zeiler & Fergus Fig. 7 for the image: the input with the occluder drawn, (a) the total
activity of the strongest feature map per occluder position, (b) that map's deconvnet projection, (c) the
probability of the correct class per position, (d) the most probable label per position with a legend; then the
sanity-check page when the checks were run. The maps are drawn in the image's pixel coordinates: each value sits
at the centre of its occluder position.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.occlusion import OcclusionMaps
from vizkit.project.results import OcclusionResult, Prediction
from vizkit.render.kit.display import display_image, normalise_projection
from vizkit.render.kit.first_page import page_one, page_title
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, wrap
from vizkit.render.kit.pdf import built, write_pdf
from vizkit.render.kit.provenance import page_notes
from vizkit.render.sanity import sanity_pages, write_sanity_json
from vizkit.render.writer import Document

NPZ_KEYS = ("input", "activity", "probability", "label", "projection", "channel", "target", "window", "stride")
MANIFEST = "occlusion.manifest.json"
PANEL = 3.0  # inches, largest map panel
TITLE_GAP = 0.5  # inches between panel rows (titles and tick labels)
CLIP_PERCENTILE = 99.5  # projection picture: |values| above this percentile are clipped (a few pixels dominate)
LEGEND_ROWS = 14
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d")
OTHER_COLOUR = "#d9d9d9"
TITLE_SIZE = FONT  # panel titles, wrapped to the panel's width (two lines at most)


def _name(index: int, class_names: Sequence[str] | None) -> str:
    names = class_names or []
    return names[index] if 0 <= index < len(names) else f"class {index}"


def _label(index: int, name: str) -> str:
    """'652 military uniform', or 'class 5' when the model has no class names."""
    return name if name == f"class {index}" else f"{index} {name}"


def occlusion_pages(maps: OcclusionMaps, image: np.ndarray, class_names: Sequence[str] | None, *,
                    info: ReportInfo | None = None, predictions: Sequence[Prediction] = (),
                    notes: Sequence[str] = (), name: str | None = None) -> list[Figure]:
    """Page 1 of occlusion.pdf: the image, settings and the four maps of Zeiler & Fergus Fig. 7 (a)-(d).

    ``name``: the image's file name for the title (default: from ``info``); without ``info`` (a report's section)
    no provenance block."""
    fig, c = page_one("occlusion", info, title=page_title("occlusion", info, name), compact=True)
    page_w, page_h = fig.get_size_inches()
    c.y += 0.06
    target = _name(maps.target, class_names)
    c.paragraph(
        f"Occluder: {maps.window[0]} x {maps.window[1]} px square filled with {maps.fill:g} in normalised input "
        f"space (the model's mean pixel: grey), moved with stride {maps.stride[0]} x {maps.stride[1]}: "
        f"{maps.probability.shape[0]} x {maps.probability.shape[1]} positions, one forward pass each (batched). "
        f"Layer {maps.layer}, strongest feature map: channel {maps.channel} (peak at {tuple(maps.position)}). "
        f"Correct class: {_label(maps.target, target)} (p = {maps.base_probability:.3f} unoccluded).", color="0.25")
    for note in page_notes(info, notes):
        c.paragraph(f"note: {note}", color="firebrick", max_lines=3)
    if predictions:
        c.paragraph("top-5 unoccluded: " + ";  ".join(f"{_label(p.index, p.name)} {100 * p.probability:.1f} %"
                                                      for p in predictions[:5]), max_lines=2)
    top = c.y + 0.3
    side = min(PANEL, (page_h - MARGIN - 0.35 - top - 2 * TITLE_GAP) / 3)
    left, right = MARGIN + 0.1, page_w - MARGIN - side - 0.45  # room for the colour bars on the right
    rows = [top, top + side + TITLE_GAP, top + 2 * (side + TITLE_GAP)]
    cells = [(left, rows[0]), (right, rows[0]), (left, rows[1]), (right, rows[1]), (left, rows[2])]
    axes = [axes_at(fig, x, y, side, side) for x, y in cells]
    picture = display_image(image)
    _draw_input(axes[0], picture, maps)
    _draw_heat(fig, axes[1], maps, maps.activity, "viridis",
               f"(a) total activity of channel {maps.channel} (unoccluded {maps.base_activity:.4g})")
    _draw_projection(axes[2], maps)
    _draw_heat(fig, axes[3], maps, maps.probability, "magma",
               f"(c) p({_label(maps.target, target)[:26]}) (unoccluded {maps.base_probability:.3f})")
    legend = Cursor(fig, right, rows[2] + 0.05, page_w - MARGIN - right)
    _draw_labels(axes[4], legend, maps, class_names)
    return [fig]


def _extent(maps: OcclusionMaps) -> tuple[float, float, float, float]:
    """imshow extent that puts each map value at the centre of its occluder position, in pixel coordinates."""
    ys, xs = maps.corners()
    (wh, ww), (sh, sw) = maps.window, maps.stride
    return (xs[0] + ww / 2 - sw / 2 - 0.5, xs[-1] + ww / 2 + sw / 2 - 0.5,
            ys[-1] + wh / 2 + sh / 2 - 0.5, ys[0] + wh / 2 - sh / 2 - 0.5)


def _frame(ax: Axes, maps: OcclusionMaps, title: str) -> None:
    _, _, h, w = maps.input.shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    fig = ax.figure
    assert isinstance(fig, Figure)  # our pages are whole figures, never subfigures
    side = ax.get_position().width * fig.get_size_inches()[0]
    ax.set_title("\n".join(wrap(title, side, TITLE_SIZE)[:2]), fontsize=TITLE_SIZE, loc="left")
    ax.tick_params(labelsize=FONT - 2, length=2)


def _draw_input(ax: Axes, picture: np.ndarray, maps: OcclusionMaps) -> None:
    ax.imshow(picture, interpolation="none")
    (wh, ww), sw = maps.window, maps.stride[1]
    ax.add_patch(Rectangle((-0.5, -0.5), ww, wh, facecolor="0.5", edgecolor="white", lw=0.8))
    ax.add_patch(Rectangle((sw - 0.5, -0.5), ww, wh, fill=False, edgecolor="white", lw=0.6, ls="--"))
    _frame(ax, maps, "input with the occluder (grey) and its next position")


def _draw_heat(fig: Figure, ax: Axes, maps: OcclusionMaps, values: np.ndarray, cmap: str, title: str) -> None:
    """A per-position map on its own colour scale (its min to max: small changes stay visible)."""
    im = ax.imshow(values, cmap=cmap, extent=_extent(maps), interpolation="nearest")
    _frame(ax, maps, title)
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.01, box.y0, 0.012, box.height))
    bar = fig.colorbar(im, cax=cax)
    # No offset text ("1e-5 + 0.93") above the bar, where it would run into the titles when a map is nearly flat:
    # full tick values instead, few enough to stay apart.
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_powerlimits((-3, 4))
    bar.ax.yaxis.set_major_formatter(formatter)
    bar.ax.yaxis.set_major_locator(MaxNLocator(5))
    bar.ax.tick_params(labelsize=FONT - 2)


def _draw_projection(ax: Axes, maps: OcclusionMaps) -> None:
    p = np.where(np.isfinite(maps.projection), maps.projection, 0.0)
    peak = float(np.percentile(np.abs(p), CLIP_PERCENTILE)) if p.size else 0.0
    ax.imshow(normalise_projection(np.clip(p, -peak, peak) if peak > 0 else p), vmin=0, vmax=1,
              interpolation="none")
    y, x = maps.position
    _frame(ax, maps, f"(b) deconvnet projection of channel {maps.channel} at ({y}, {x}), clipped at the "
                     f"{CLIP_PERCENTILE:g}th percentile")


def label_legend(maps: OcclusionMaps, class_names: Sequence[str] | None) -> list[tuple[int, str, int, str]]:
    """(label, name, positions, colour) for every label in the map, most frequent first (the target first)."""
    labels, counts = np.unique(maps.label, return_counts=True)
    pairs = zip(labels.tolist(), counts.tolist(), strict=True)
    order = sorted(pairs, key=lambda lc: (lc[0] != maps.target, -lc[1], lc[0]))
    return [(lab, _name(lab, class_names), n, PALETTE[i] if i < len(PALETTE) else OTHER_COLOUR)
            for i, (lab, n) in enumerate(order)]


def _draw_labels(ax: Axes, legend: Cursor, maps: OcclusionMaps, class_names: Sequence[str] | None) -> None:
    entries = label_legend(maps, class_names)
    index = {lab: i for i, (lab, _, _, _) in enumerate(entries)}
    coded = np.vectorize(index.__getitem__)(maps.label)
    cmap = ListedColormap([colour for _, _, _, colour in entries])
    ax.imshow(coded, cmap=cmap, vmin=-0.5, vmax=len(entries) - 0.5, extent=_extent(maps), interpolation="nearest")
    _frame(ax, maps, "(d) most probable label per occluder position")
    legend.line(f"(d) labels ({len(entries)} distinct)", weight="bold")
    shown = entries[:LEGEND_ROWS]
    for lab, name, n, colour in shown:
        y = legend.y
        legend.fig.add_artist(Rectangle(((legend.x) / legend.page_w, 1 - (y + 0.11) / legend.page_h),
                                        0.14 / legend.page_w, 0.1 / legend.page_h, color=colour,
                                        transform=legend.fig.transFigure))
        mark = "  (correct class)" if lab == maps.target else ""
        legend.text(legend.x + 0.22, f"{_label(lab, name)[:38]}: {n} position{'s' * (n != 1)}{mark}")
        legend.y += 0.16
    if len(entries) > len(shown):
        rest = sum(n for _, _, n, _ in entries[len(shown):])
        legend.line(f"... and {len(entries) - len(shown)} more labels ({rest} positions, light grey)",
                    style="italic")


def save_occlusion_npz(maps: OcclusionMaps, path: Path) -> None:
    """Exactly ``NPZ_KEYS``: input (1,C,H,W), activity/probability (h_o,w_o) float32, label (h_o,w_o) int64,
    projection (C,H,W) float32, channel, target (int64 scalars), window, stride ((h, w) int64)."""
    write_npz(path, maps.arrays())


def render_occlusion_pdf(result: OcclusionResult, info: ReportInfo, path: Path) -> int:
    """Write occlusion.pdf (Fig. 7 page, then the sanity-check pages when the checks ran); returns the page count."""
    name = Path(info.image_path or "image").name
    figures = occlusion_pages(result.maps, result.image, result.class_names, info=info,
                              predictions=result.predictions, notes=result.notes)
    figures += sanity_pages(result.sanity) if result.sanity else []
    return write_pdf(path, [built(fig) for fig in figures], title=f"vizkit occlusion: {name}",
                     subject=f"Occlusion sensitivity of {info.model} on {name}",
                     keywords="occlusion, Zeiler-Fergus, sanity checks", footer_left=f"{info.model} \u00b7 {name}")


def occlusion_document(result: OcclusionResult, info: ReportInfo) -> Document:
    """occlusion.npz, occlusion.sanity.json (when the checks ran), occlusion.pdf, then the manifest."""
    files: list = [("occlusion.npz", lambda p: save_occlusion_npz(result.maps, p))]
    if result.sanity:
        files.append(("occlusion.sanity.json", lambda p: write_sanity_json(result.sanity, p)))
    files.append(("occlusion.pdf", lambda p: render_occlusion_pdf(result, info, p)))
    return Document(files, manifest=MANIFEST)


__all__ = ["MANIFEST", "NPZ_KEYS", "label_legend", "occlusion_document", "occlusion_pages", "render_occlusion_pdf",
           "save_occlusion_npz"]
