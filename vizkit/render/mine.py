"""DIR/mine/ of ``vizkit mine``: mine.npz, mine.pdf, html/ (``vizkit.render.mine_html``) and mine.manifest.json
(``mine_document``), written by the one writer (``vizkit.render.writer.write_outputs``) atomically, manifest last.

mine.pdf: a summary page, then Zeiler–Fergus Fig. 2 per unit: its top-K projections beside their image patches; every
panel of a page is drawn into one page-sized Axes in inches, which is much cheaper than one Axes per panel.

Projection keys of mine.npz, per layer L with U rendered units of top-K (packed: boxes differ in size at borders):

- ``L/proj/channels`` (U,) int64: the rendered channels, in render order;
- ``L/proj/boxes`` (U, K, 4) int64: (y0, y1, x0, x1) receptive-field box in input pixels, -1 where no entry;
- ``L/proj/offsets`` (U, K) int64: where the entry's projection starts in ``L/proj/data``, -1 where no entry;
- ``L/proj/scale`` (U, K) float32 and ``L/proj/data`` int8: entry (u, r) is ``data[o : o + C*h*w]`` reshaped to
  (C, h, w) (h, w from its box) times ``scale[u, r]``.

Projections are stored as int8 with one scale per projection (max |p| / 127): the resolution of the pictures, and
what keeps 512 conv5_3 units x 9 of VGG16 under 300 MB (float16 would take about 420 MB compressed, float32 1 GB).
``read_projections`` decodes them; ``project_units`` returns them in float32.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.mine_projection import UnitTopProjections
from vizkit.project.results import MineOutput
from vizkit.render.kit.display import is_zero_projection, normalise_projection
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import FONT, LINE, MARGIN, draw_picture, new_page, page_canvas, text_at
from vizkit.render.kit.pdf import PageMaker, write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes
from vizkit.render.writer import Document, write_outputs

if TYPE_CHECKING:
    from vizkit.scan.topk import MineResult

MANIFEST = "mine.manifest.json"
FOLDER = "mine"
Box = tuple[int, int, int, int]
UNITS_PER_PAGE = 3
GRID_GAP = 0.3  # between the projection grid and the patch grid, inches
CELL_GAP = 0.05
LABEL_H = 0.34  # the unit's label line and the grid titles
VALUE_H = 0.11  # the value printed under each cell


def projection_arrays(units: Sequence[UnitTopProjections], k: int) -> dict[str, np.ndarray]:
    """The packed projection keys (see the module docstring) of every layer that has rendered units."""
    by_layer: dict[str, list[UnitTopProjections]] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append(unit)
    arrays: dict[str, np.ndarray] = {}
    for layer, group in by_layer.items():
        boxes = np.full((len(group), k, 4), -1, np.int64)
        offsets = np.full((len(group), k), -1, np.int64)
        scale = np.zeros((len(group), k), np.float32)
        data: list[np.ndarray] = []
        at = 0
        for u, unit in enumerate(group):
            for r, entry in enumerate(unit.entries[:k]):
                p = np.nan_to_num(np.asarray(entry.projection, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
                peak = float(np.abs(p).max()) if p.size else 0.0
                scale[u, r] = peak / 127 if peak > 0 else 0.0
                q = np.round(p / scale[u, r]).astype(np.int8) if peak > 0 else np.zeros(p.shape, np.int8)
                boxes[u, r], offsets[u, r] = entry.box, at
                data.append(q.ravel())
                at += q.size
        arrays[f"{layer}/proj/channels"] = np.array([unit.channel for unit in group], np.int64)
        arrays[f"{layer}/proj/boxes"] = boxes
        arrays[f"{layer}/proj/offsets"] = offsets
        arrays[f"{layer}/proj/scale"] = scale
        arrays[f"{layer}/proj/data"] = np.concatenate(data) if data else np.zeros(0, np.int8)
    return arrays


def read_projections(arrays: Mapping[str, np.ndarray], layer: str
                     ) -> dict[int, list[tuple[Box, np.ndarray]]]:
    """Decode ``layer``'s stored projections: channel -> [(box, (C, h, w) float32)] in rank order."""
    channels = np.asarray(arrays[f"{layer}/proj/channels"])
    boxes, offsets = np.asarray(arrays[f"{layer}/proj/boxes"]), np.asarray(arrays[f"{layer}/proj/offsets"])
    scale, data = np.asarray(arrays[f"{layer}/proj/scale"]), np.asarray(arrays[f"{layer}/proj/data"])
    ends = sorted({int(o) for o in offsets.ravel() if o >= 0} | {data.size})
    out: dict[int, list[tuple[Box, np.ndarray]]] = {}
    for u, ch in enumerate(channels):
        entries = []
        for r in range(offsets.shape[1]):
            o = int(offsets[u, r])
            if o < 0:
                continue
            y0, y1, x0, x1 = (int(v) for v in boxes[u, r])
            size = ends[ends.index(o) + 1] - o
            flat = data[o : o + size].astype(np.float32) * scale[u, r]
            entries.append(((y0, y1, x0, x1), flat.reshape(-1, y1 - y0, x1 - x0)))
        out[int(ch)] = entries
    return out


def save_mine_npz(result: MineResult, projections: Sequence[UnitTopProjections], path: Path) -> None:
    """mine.npz: the scan keys (``MineResult.to_arrays``) and the packed projection keys, nothing else."""
    write_npz(path, {**result.to_arrays(), **projection_arrays(projections, result.k)})


def manifest_keys(result: MineResult, projections: Sequence[UnitTopProjections], info: ReportInfo
                  ) -> dict[str, object]:
    """What mine.manifest.json adds to the common keys: the dataset (every skipped file with its reason), the
    PDF's page count (filled in when the PDF is written) and the rendered units per layer."""
    return {"dataset": {"source": info.settings.get("data"), "listed": len(result.paths),
                        "scanned": result.images_scanned,
                        "skipped": [{"path": p, "reason": r} for p, r in result.skipped]},
            "pdf_pages": None,
            "rendered_units": {layer: [u.channel for u in projections if u.layer == layer]
                               for layer in result.layers}}


def mine_document(output: MineOutput, info: ReportInfo) -> Document:
    """``mine/``: mine.npz, mine.pdf, html/, then mine.manifest.json. Only these entries are replaced in an
    existing folder: the scan's ``checkpoint*`` files there stay. With no projections (``--no-project``), mine.npz
    holds the scan keys only and the PDF and gallery show the summary."""
    result, units = output.result, output.projections
    extra = manifest_keys(result, units, info)

    def pdf(path: Path) -> None:
        extra["pdf_pages"] = render_mine_pdf(result, units, info, path, notes=output.notes)

    def gallery(path: Path) -> None:
        from vizkit.render.mine_html import write_mine_html

        write_mine_html(result, units, info, path, notes=page_notes(info, output.notes))

    return Document([("mine.npz", lambda p: save_mine_npz(result, units, p)), ("mine.pdf", pdf),
                     ("html", gallery)],
                    manifest=MANIFEST, folder=FOLDER, manifest_extra=extra)


def write_mine_outputs(result: MineResult, projections: Sequence[UnitTopProjections], info: ReportInfo,
                       out_dir: str | Path, timings: Mapping[str, float]) -> Path:
    """Write DIR/mine/ for a ``MineResult`` and its projections (``project_units``) and return it: the Python
    API's way to ``write_outputs(MineOutput(...), info, out_dir)``. ``info``: ``RunContext.info(None, settings)``."""
    return write_outputs(MineOutput(result, list(projections)), info, out_dir, timings=dict(timings))


# ---------------------------------------------------------------- mine.pdf

def grid_shape(k: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for k entries: 9 -> 3x3, 4 -> 2x2, 5 -> 2x3, 1 -> 1x1."""
    cols = max(1, math.ceil(math.sqrt(k)))
    return max(1, math.ceil(k / cols)), cols


def summary_lines(result: MineResult, info: ReportInfo) -> list[tuple[str, str]]:
    listed = len(result.paths)
    data = info.settings.get("data", "?")
    return [("dataset", str(data)),
            ("images", f"{listed} listed, {result.images_scanned} scanned, {len(result.skipped)} skipped"),
            ("classes", str(len(result.classes)) if result.classes else "none (no class subfolders)"),
            ("model", f"{info.model}  (weights: {info.weights})"),
            ("top-K", str(result.k))]


def _summary_page(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo,
                  notes: Sequence[str] = ()) -> Figure:
    """Page 1: the provenance block, the dataset, the layers with their dead and rendered units, the notes
    (run-level first) and as many skipped files as fit."""
    fig, c = page_one("mine", info, title="vizkit mine: what each unit responds to across a dataset")
    page_h, width = fig.get_size_inches()[1], c.width
    c.heading("Dataset")
    for key, value in summary_lines(result, info):
        if key != "model":  # the provenance block above says more
            c.paragraph(f"{key}: {value}", max_lines=3)
    c.heading("Layers")
    rendered: dict[str, int] = {}
    for u in units:
        rendered[u.layer] = rendered.get(u.layer, 0) + 1
    rows = []
    for name, state in result.layers.items():
        dead = int(np.count_nonzero(state.dead))
        rows.append([name, state.values.shape[0], dead, f"{100 * dead / max(state.values.shape[0], 1):.1f}%",
                     rendered.get(name, 0)])
    c.table(["layer", "channels", "dead units", "dead share", "rendered"], rows,
            columns=[0.0, 2.9, 3.9, 4.9, width], align=["left", "right", "right", "right", "right"], max_rows=20)
    c.paragraph("dead: no image of the dataset made the unit's maximum > 0. Each unit page shows its top-K "
                "activations: deconvnet projections (left, each normalised on its own, grey = 0) beside the image "
                "patches under the unit's receptive field (right), in rank order, each with its value.", color="0.3")
    notes_block(c, page_notes(info, notes), max_lines=3)
    c.heading(f"Skipped files ({len(result.skipped)})")
    room = max(1, int((page_h - MARGIN - 0.35 - c.y) / LINE) - 1)  # the rest are in mine.manifest.json
    shown = result.skipped if len(result.skipped) <= room else result.skipped[: room - 1]
    for path, reason in shown:
        c.paragraph(f"{path}: {reason}", max_lines=1)
    if len(shown) < len(result.skipped):
        c.line(f"... and {len(result.skipped) - len(shown)} more (all are listed in mine.manifest.json)",
               style="italic")
    if not result.skipped:
        c.line("none")
    return fig


def unit_label(unit: UnitTopProjections, result: MineResult) -> str:
    state = result.layers[unit.layer]
    ch = unit.channel
    return (f"{unit.layer}  channel {ch}    mean {float(state.mean[ch]):.4g}    firing rate "
            f"{100 * float(state.rate[ch]):.1f}%" + ("    dead" if bool(state.dead[ch]) else ""))


def _draw_unit(fig: Figure, canvas: Axes, unit: UnitTopProjections, result: MineResult, top: float,
               height: float) -> None:
    width = fig.get_size_inches()[0] - 2 * MARGIN
    text_at(fig, MARGIN, top, unit_label(unit, result), size=FONT + 0.5, weight="bold")
    rows, cols = grid_shape(max(result.k, 1))
    grid_w = (width - GRID_GAP) / 2
    side = min((grid_w - (cols - 1) * CELL_GAP) / cols, (height - LABEL_H) / rows - VALUE_H - CELL_GAP)
    y0 = top + LABEL_H
    used = cols * side + (cols - 1) * CELL_GAP  # the two grids side by side, centred on the page
    left = MARGIN + (width - 2 * used - GRID_GAP) / 2
    for g, (title, x0) in enumerate((("projections", left), ("image patches", left + used + GRID_GAP))):
        text_at(fig, x0 + used / 2, y0 - 0.02, title, size=FONT - 1, ha="center", va="bottom", color="0.3")
        for r, entry in enumerate(unit.entries):
            row, col = divmod(r, cols)
            x = x0 + col * (side + CELL_GAP)
            y = y0 + row * (side + VALUE_H + CELL_GAP)
            if g == 0:
                draw_picture(canvas, normalise_projection(entry.projection), (x, y, side), vmin=0, vmax=1)
                if is_zero_projection(entry.projection):
                    canvas.text(x + side / 2, y + side / 2, "zero", ha="center", va="center", fontsize=FONT - 1,
                                color="firebrick")
            else:
                draw_picture(canvas, entry.patch, (x, y, side))
            canvas.text(x + side / 2, y + side + 0.01, f"#{r + 1}  {entry.value:.4g}", ha="center", va="top",
                        fontsize=FONT - 1.5)
    if not unit.entries:
        text_at(fig, MARGIN, y0 + 0.2, "no image activated this unit", va="baseline")


def _units_page(units: Sequence[UnitTopProjections], result: MineResult) -> Figure:
    fig = new_page()
    _, page_h = fig.get_size_inches()
    canvas = page_canvas(fig)
    slot = (page_h - 2 * MARGIN - 0.2) / UNITS_PER_PAGE
    for i, unit in enumerate(units):
        _draw_unit(fig, canvas, unit, result, MARGIN + i * slot, slot - 0.15)
    return fig


def mine_page_makers(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo,
                     notes: Sequence[str] = ()) -> list[PageMaker]:
    """mine.pdf's pages, each built when called: the summary, then ``UNITS_PER_PAGE`` units per page."""
    chunks = [list(units[i : i + UNITS_PER_PAGE]) for i in range(0, len(units), UNITS_PER_PAGE)]
    pages: list[PageMaker] = [partial(_summary_page, result, units, info, notes)]
    return pages + [partial(_units_page, chunk, result) for chunk in chunks]


def render_mine_pdf(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo, path: Path, *,
                    notes: Sequence[str] = ()) -> int:
    """Write mine.pdf to ``path``; returns its page count (1 + ceil(units / UNITS_PER_PAGE)). ``notes``: the
    result's notes for page 1 (after the run's, from ``info``)."""
    return write_pdf(path, mine_page_makers(result, units, info, notes), title=f"vizkit mine: {info.model}",
                     subject="Top-K activations per unit over a dataset with deconvnet projections",
                     keywords="deconvnet, Zeiler-Fergus, dataset, top-k", footer_left=f"mine \u00b7 {info.model}")


__all__ = ["FOLDER", "MANIFEST", "UNITS_PER_PAGE", "grid_shape", "manifest_keys", "mine_document", "mine_page_makers",
           "projection_arrays", "read_projections", "render_mine_pdf", "save_mine_npz", "summary_lines",
           "write_mine_outputs"]
