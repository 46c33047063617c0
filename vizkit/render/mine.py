"""DIR/mine/ of ``vizkit mine``: mine.npz, mine.pdf (``vizkit.render.mine_pages``), html/
(``vizkit.render.mine_html``) and mine.manifest.json (``mine_document``), written by the one writer
(``vizkit.render.writer.write_outputs``) atomically, manifest last.

Projection keys of mine.npz, per layer L with U rendered units of top-K (packed: boxes differ in size at borders):

- ``L/proj/channels`` (U,) int64: the rendered channels, in render order;
- ``L/proj/boxes`` (U, K, 4) int64: (y0, y1, x0, x1) receptive-field box in input pixels, -1 where no entry;
- ``L/proj/offsets`` (U, K) int64: where the entry's projection starts in ``L/proj/data``, -1 where no entry;
- ``L/proj/scale`` (U, K) float32 and ``L/proj/data`` int8: entry (u, r) is ``data[o : o + C*h*w]`` reshaped to
  (C, h, w) (h, w from its box) times ``scale[u, r]``.

Projections are stored as int8 with one scale per projection (max |p| / 127): the resolution of the pictures, and
what keeps 512 conv5_3 units x 9 of VGG16 under 300 MB (float16 would take about 420 MB compressed, float32 1 GB).
``read_projections`` decodes them; ``project_units`` returns them in float32.

With ``--dream``, per layer L with U dreamed (rendered) units: ``L/dream/channels`` (U,) int64, ``L/dream/images``
(U, 3, S, S) float32 in [0, 1] and ``L/dream/scores`` (U,) float32 (``dream_arrays``; the arrays of ``dream.npz``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.mine_projection import UnitTopProjections
from vizkit.project.results import LayerDreams, MineOutput
from vizkit.render.kit.provenance import page_notes
from vizkit.render.mine_pages import UNITS_PER_PAGE, grid_shape, mine_page_makers, render_mine_pdf, summary_lines
from vizkit.render.writer import Document, write_outputs

if TYPE_CHECKING:
    from vizkit.scan.topk import MineResult

MANIFEST = "mine.manifest.json"
FOLDER = "mine"
Box = tuple[int, int, int, int]


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


def dream_arrays(dreams: Mapping[str, LayerDreams]) -> dict[str, np.ndarray]:
    """The ``--dream`` keys (see the module docstring) of every layer with dreams."""
    arrays: dict[str, np.ndarray] = {}
    for layer, d in dreams.items():
        arrays[f"{layer}/dream/channels"] = np.asarray(d.channels, np.int64)
        arrays[f"{layer}/dream/images"] = np.asarray(d.images, np.float32)
        arrays[f"{layer}/dream/scores"] = np.asarray(d.scores, np.float32)
    return arrays


def read_dreams(arrays: Mapping[str, np.ndarray]) -> dict[str, LayerDreams]:
    """The ``--dream`` keys of a mine.npz back as ``LayerDreams`` per layer."""
    layers = [key[: -len("/dream/channels")] for key in arrays if key.endswith("/dream/channels")]
    return {layer: LayerDreams(np.asarray(arrays[f"{layer}/dream/channels"]),
                               np.asarray(arrays[f"{layer}/dream/images"]),
                               np.asarray(arrays[f"{layer}/dream/scores"])) for layer in layers}


def save_mine_npz(result: MineResult, projections: Sequence[UnitTopProjections], path: Path,
                  dreams: Mapping[str, LayerDreams] | None = None) -> None:
    """mine.npz: the scan keys (``MineResult.to_arrays``), the packed projection keys and the dream keys."""
    write_npz(path, {**result.to_arrays(), **projection_arrays(projections, result.k), **dream_arrays(dreams or {})})


def manifest_keys(result: MineResult, projections: Sequence[UnitTopProjections], info: ReportInfo
                  ) -> dict[str, object]:
    """What mine.manifest.json adds to the common keys: the dataset (every skipped file with its reason), the
    PDF's page count (filled in when the PDF is written) and the rendered units per layer."""
    return {"dataset": {"source": info.settings.get("data"), "listed": len(result.paths),
                        "scanned": result.images_scanned,
                        "skipped": [{"path": p, "reason": r} for p, r in result.skipped]},
            "pdf_pages": None,
            "rendered_units": {layer: [u.channel for u in projections if u.layer == layer]
                               for layer in result.layers},
            "dream": None}


def dream_note(settings: Mapping[str, object]) -> str:
    """Page 1's line on ``--dream``: how the images were made and what their score is."""
    made = ", ".join(f"{k} {settings[k]}" for k in ("method", "steps", "size", "seed") if k in settings)
    reason = f" ({settings['reason']})" if settings.get("reason") else ""
    return ("--dream" + reason + ": 'what it wants' is an image optimised to maximise the unit's mean activation ("
            + made + "); its score is that mean on the image, not comparable with the top values (spatial maxima).")


def mine_document(output: MineOutput, info: ReportInfo) -> Document:
    """``mine/``: mine.npz, mine.pdf, html/, then mine.manifest.json. Only these entries are replaced in an
    existing folder: the scan's ``checkpoint*`` files there stay. With no projections (``--no-project``), mine.npz
    holds the scan keys only and the PDF and gallery show the summary."""
    result, units = output.result, output.projections
    extra = manifest_keys(result, units, info)
    if output.dreams:
        extra["dream"] = {"objective": "channel (mean activation)", **output.dream_settings}

    notes = [*output.notes, *([dream_note(output.dream_settings)] if output.dreams else [])]
    if output.heatmaps:  # --rank relevance: conditional heatmaps instead of projections
        from vizkit.render.mine_relevance import relevance_document

        return relevance_document(output, info, extra)

    def pdf(path: Path) -> None:
        extra["pdf_pages"] = render_mine_pdf(result, units, info, path, notes=notes, dreams=output.dreams)

    def gallery(path: Path) -> None:
        from vizkit.render.mine_html import write_mine_html

        write_mine_html(result, units, info, path, output.dreams, notes=page_notes(info, notes))

    return Document([("mine.npz", lambda p: save_mine_npz(result, units, p, output.dreams)), ("mine.pdf", pdf),
                     ("html", gallery)],
                    manifest=MANIFEST, folder=FOLDER, manifest_extra=extra)


def write_mine_outputs(result: MineResult, projections: Sequence[UnitTopProjections], info: ReportInfo,
                       out_dir: str | Path, timings: Mapping[str, float],
                       dreams: Mapping[str, LayerDreams] | None = None) -> Path:
    """Write DIR/mine/ for a ``MineResult`` and its projections (``project_units``) and return it: the Python
    API's way to ``write_outputs(MineOutput(...), info, out_dir)``. ``info``: ``RunContext.info(None, settings)``;
    ``dreams``: per layer, the rendered units' dreams (``vizkit.jobs.mine_dream.dream_units``)."""
    return write_outputs(MineOutput(result, list(projections), dreams=dict(dreams or {})), info, out_dir,
                         timings=dict(timings))


__all__ = ["FOLDER", "MANIFEST", "UNITS_PER_PAGE", "dream_arrays", "dream_note", "grid_shape", "manifest_keys",
           "mine_document", "mine_page_makers", "projection_arrays", "read_dreams", "read_projections",
           "render_mine_pdf", "save_mine_npz", "summary_lines", "write_mine_outputs"]
