"""activations.pdf / activations.npz: each layer's strongest feature maps for one image.

Pages (A4 portrait, Figure objects only): a summary page (the image as fed to the model, model, weights, settings,
one table row per layer), then one page per layer: a grid of the top-N maps, strongest first (rank by max, ties by
mean), each labelled with its channel and maximum.

Colour scale (``scale``): ``"shared"`` (default) maps every map on a page through one scale, from
``min(0, lowest value shown)`` to the layer's strongest activation, with a colour bar: maps can be compared, and a
map that looks dark is weak. ``"map"`` stretches each map to its own min..max (weak maps' patterns become visible;
compare strengths by the labels).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vizkit.capture.activations import ActivationGrid
from vizkit.errors import UserInputError
from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.results import SCALES, ActivationsResult
from vizkit.render.kit.display import display_image
from vizkit.render.kit.first_page import input_caption, page_one
from vizkit.render.kit.page import FONT, LINE, MARGIN, Cursor, axes_at, grid_layout, new_page
from vizkit.render.kit.pdf import write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes
from vizkit.render.writer import Document

CMAP = "viridis"
THUMB = 1.15  # inches: the image thumbnail on each layer page
LABEL_H = 0.14  # inches under each map for its label
MIN_MAP_PX = 56  # small maps are upscaled (nearest) to at least this many pixels so viewers do not blur them
MANIFEST = "activations.manifest.json"


# ---------------------------------------------------------------- arrays

def activations_arrays(x: np.ndarray, grids: Sequence[ActivationGrid]) -> dict[str, np.ndarray]:
    """The npz content, exactly: ``input`` (1, C, H, W) float32 as fed to the model; per layer L ``L/channels``
    (N,) int64, ``L/maps`` (N, h, w) float32 (raw), ``L/max`` (N,) float32, strongest first."""
    inp = np.asarray(x, dtype=np.float32)
    if inp.ndim != 4 or inp.shape[0] != 1:
        raise ValueError(f"input must be (1, C, H, W), got shape {inp.shape}")
    arrays: dict[str, np.ndarray] = {"input": inp}
    for g in grids:
        if f"{g.layer}/maps" in arrays:
            raise ValueError(f"layer {g.layer!r} appears twice")
        arrays[f"{g.layer}/channels"] = np.asarray(g.channels, dtype=np.int64)
        arrays[f"{g.layer}/maps"] = np.asarray(g.maps, dtype=np.float32)
        arrays[f"{g.layer}/max"] = np.asarray(g.maxima, dtype=np.float32)
    return arrays


def save_activations_npz(x: np.ndarray, grids: Sequence[ActivationGrid], path: Path) -> None:
    write_npz(path, activations_arrays(x, grids))


# ---------------------------------------------------------------- pages

def colour_range(grid: ActivationGrid) -> tuple[float, float]:
    """The shared scale of one page: min(0, lowest shown value) .. highest shown value (never empty)."""
    lo = min(0.0, float(np.min(grid.maps))) if grid.maps.size else 0.0
    hi = float(np.max(grid.maps)) if grid.maps.size else 1.0
    return lo, hi if hi > lo else lo + 1.0


def coloured_maps(grid: ActivationGrid, scale: str = "shared") -> np.ndarray:
    """(N, h, w, 3) float32 RGB of the maps through the colour map, on the shared or per-map scale."""
    if scale not in SCALES:
        raise UserInputError(f"unknown colour scale '{scale}'; use one of {', '.join(SCALES)}")
    maps = np.asarray(grid.maps, dtype=np.float64)
    if scale == "shared":
        lo, hi = colour_range(grid)
        normed = (maps - lo) / (hi - lo)
    else:
        lo = maps.reshape(len(maps), -1).min(axis=1, initial=np.inf).reshape(-1, 1, 1)
        hi = maps.reshape(len(maps), -1).max(axis=1, initial=-np.inf).reshape(-1, 1, 1)
        span = np.where(hi > lo, hi - lo, 1.0)
        normed = np.where(hi > lo, (maps - lo) / span, 0.0)
    return colormaps[CMAP](np.clip(normed, 0.0, 1.0))[..., :3].astype(np.float32)


def layer_title(grid: ActivationGrid) -> str:
    h, w = np.shape(grid.maps)[1:] if np.ndim(grid.maps) == 3 else (0, 0)
    return f"{grid.layer}  \u00b7  {grid.total_channels} x {h} x {w}"


def activation_page(grid: ActivationGrid, image: np.ndarray, *, scale: str = "shared",
                    title_prefix: str = "") -> Figure:
    """One page: the layer's top maps as a grid, strongest first, each labelled with channel and max."""
    fig = new_page()
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    thumb_ax = axes_at(fig, page_w - MARGIN - THUMB, MARGIN, THUMB, THUMB)
    thumb_ax.imshow(display_image(image), interpolation="none")
    thumb_ax.set_axis_off()
    head = Cursor(fig, MARGIN, MARGIN, width - THUMB - 0.2)
    head.line(f"{title_prefix}{layer_title(grid)}", size=13, weight="bold")
    head.y += 0.06
    n = len(grid.channels)
    lo, hi = grid.value_range
    head.paragraph(f"top {n} of {grid.total_channels} feature maps, strongest first (ranked by each map's "
                   f"maximum, ties by its mean). Layer output range {lo:.4g} .. {hi:.4g}.")
    if scale == "shared":
        vlo, vhi = colour_range(grid)
        head.paragraph(f"Colour: one scale for the whole page, {vlo:.4g} (dark) .. {vhi:.4g} (bright); a dark map "
                       "is a weak map.", color="0.3")
    else:
        head.paragraph("Colour: each map stretched to its own min .. max (patterns of weak maps visible); compare "
                       "strengths by the labels.", color="0.3")
    head.paragraph("Label: channel and the map's maximum.", color="0.3")
    if scale == "shared":
        head.y += 0.08
        cax = axes_at(fig, MARGIN, head.y, min(3.0, head.width), 0.1)
        bar = fig.colorbar(ScalarMappable(Normalize(*colour_range(grid)), CMAP), cax=cax, orientation="horizontal")
        bar.ax.tick_params(labelsize=FONT - 1.5, length=2, pad=1)
        head.y += 0.3
    top = max(head.y, MARGIN + THUMB) + 0.15
    if n == 0:
        Cursor(fig, MARGIN, top, width).line("no feature maps")
        return fig
    _grid(fig, grid, coloured_maps(grid, scale), MARGIN, top, width, page_h - MARGIN - 0.3 - top)
    return fig


def _grid(fig: Figure, grid: ActivationGrid, rgb: np.ndarray, x: float, y: float, width: float,
          height: float) -> None:
    n, h, w = rgb.shape[:3]
    up = max(1, math.ceil(MIN_MAP_PX / max(h, w)))
    gap = max(2, (h * up) // 16)
    th, tw = h * up, w * up
    ncols, ipp = grid_layout(n, th, tw, gap, LABEL_H, width, height)
    ipp = min(ipp, 2.2 / max(th, tw))  # a few maps: at most 2.2 inches each
    rows = math.ceil(n / ncols)
    label_px = math.ceil(LABEL_H / ipp)
    pitch_y, pitch_x = th + gap + label_px, tw + gap
    canvas = np.ones((rows * pitch_y, ncols * pitch_x - gap, 3), dtype=np.float32)
    big = rgb.repeat(up, axis=1).repeat(up, axis=2)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[r * pitch_y + label_px: r * pitch_y + label_px + th, c * pitch_x: c * pitch_x + tw] = big[i]
    h_in, w_in = canvas.shape[0] * ipp, canvas.shape[1] * ipp
    ax = axes_at(fig, x + (width - w_in) / 2, y, w_in, h_in)
    ax.imshow(canvas, interpolation="none", extent=(-0.5, canvas.shape[1] - 0.5, canvas.shape[0] - 0.5, -0.5))
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    size = FONT - 1.5 if tw * ipp > 0.8 else FONT - 2.5
    for i in range(n):
        r, c = divmod(i, ncols)
        ax.text(c * pitch_x, r * pitch_y + label_px - 1, f"ch {int(grid.channels[i])}  max {grid.maxima[i]:.3g}",
                fontsize=size, ha="left", va="bottom", color="0.15", clip_on=False)


def _summary_page(grids: Sequence[ActivationGrid], image: np.ndarray, x_shape: tuple[int, ...], info: ReportInfo,
                  scale: str, first_layer_page: int, notes: Sequence[str] = ()) -> Figure:
    fig, below = page_one("activations", info, image=image, caption=input_caption(x_shape))
    page_h, width = fig.get_size_inches()[1], below.width
    below.heading("How to read the pages")
    below.paragraph("One page per layer: its feature maps for this image, strongest first (ranked by each map's "
                    "maximum activation, ties by mean), labelled with channel and maximum. "
                    + ("Colour: one scale per page (colour bar at the top), so dark maps are weak maps."
                       if scale == "shared" else "Colour: each map stretched to its own range."))
    notes_block(below, page_notes(info, notes))
    below.heading("Layers")
    rows = [[g.layer, f"{g.total_channels} x {' x '.join(map(str, np.shape(g.maps)[1:]))}", len(g.channels),
             int(g.channels[0]) if len(g.channels) else "-", f"{g.maxima[0]:.4g}" if len(g.maxima) else "-",
             first_layer_page + i] for i, g in enumerate(grids)]
    below.table(["layer", "output (C x h x w)", "maps shown", "strongest channel", "its max", "page"], rows,
                columns=[0.0, 2.6, 4.4, 5.6, 6.5, width], align=["left", "left", "right", "right", "right", "right"],
                max_rows=max(3, int((page_h - MARGIN - 0.4 - below.y) / LINE) - 3))
    return fig


def activation_page_makers(grids: Sequence[ActivationGrid], image: np.ndarray, *, scale: str = "shared",
                           title_prefix: str = "", info: ReportInfo | None = None,
                           x_shape: tuple[int, ...] | None = None, notes: Sequence[str] = ()
                           ) -> list[Callable[[], Figure]]:
    """Like :func:`activation_pages`, but each page as a function that builds it."""
    if scale not in SCALES:
        raise UserInputError(f"unknown colour scale '{scale}'; use one of {', '.join(SCALES)}")
    makers: list[Callable[[], Figure]] = []
    if info is not None:
        shape = x_shape or (1, 3, *np.shape(image)[:2])
        makers.append(lambda: _summary_page(grids, image, shape, info, scale, first_layer_page=2, notes=notes))
    makers += [partial(activation_page, g, image, scale=scale, title_prefix=title_prefix) for g in grids]
    return makers


def activation_pages(grids: Sequence[ActivationGrid], image: np.ndarray, *, scale: str = "shared",
                     title_prefix: str = "", info: ReportInfo | None = None,
                     x_shape: tuple[int, ...] | None = None) -> list[Figure]:
    """One page per layer (in ``grids`` order); with ``info``, a summary page first (image, model, settings,
    layer table; ``x_shape`` is the model input's shape for its caption). ``image``: the display image (H, W, 3)
    uint8. No footers: the caller numbers pages."""
    return [make() for make in activation_page_makers(grids, image, scale=scale, title_prefix=title_prefix,
                                                      info=info, x_shape=x_shape)]


def render_activations_pdf(result: ActivationsResult, info: ReportInfo, path: Path) -> int:
    """Write activations.pdf (summary page + one page per layer) and return its page count."""
    name = Path(info.image_path or "image").name
    makers = activation_page_makers(result.grids, result.image, scale=result.scale, info=info,
                                    x_shape=tuple(np.shape(result.input)), notes=result.notes)
    return write_pdf(path, makers, title=f"vizkit activations: {name}",
                     subject=f"Feature maps of {info.model} on {name}", keywords="feature maps, activations",
                     footer_left=f"{info.model} \u00b7 {name}")


def activations_document(result: ActivationsResult, info: ReportInfo) -> Document:
    """activations.npz, activations.pdf, then activations.manifest.json."""
    return Document([("activations.npz", lambda p: save_activations_npz(result.input, result.grids, p)),
                     ("activations.pdf", lambda p: render_activations_pdf(result, info, p))], manifest=MANIFEST)


__all__ = [
    "SCALES",
    "activation_page",
    "activation_page_makers",
    "activation_pages",
    "activations_arrays",
    "activations_document",
    "colour_range",
    "coloured_maps",
    "render_activations_pdf",
    "save_activations_npz",
]
