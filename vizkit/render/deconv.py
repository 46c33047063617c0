"""The per-image folder of ``vizkit deconv``: deconv.npz, deconv.pdf (a summary page, then one or more pages per
layer: ``vizkit.render.deconv_pages``), manifest.json last; written by ``vizkit.render.writer``."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.results import DeconvResult
from vizkit.render.writer import Document, write_outputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vizkit.render.kit.page import Cursor
    from vizkit.render.kit.pdf import PageMaker


def deconv_arrays(result: DeconvResult) -> dict[str, np.ndarray]:
    """The npz content: ``input`` plus ``<layer>/channels|positions|activations|projections`` per layer.

    channels (K,) int64; positions (K, 2) int64 as (y, x) on the layer's output grid; activations (K,) float32;
    projections (K, C, H, W) float32, raw (unnormalised) in the same order. With recorded switches, also
    ``switches/<pool name>`` (1, C, h, w) int64: for each pooled unit the flat index (over the pool input's H x W,
    per channel) of the maximum it passed on, the location the deconvnet unpools to.
    """
    inp = np.asarray(result.input)
    if inp.ndim != 4 or inp.shape[0] != 1:
        raise ValueError(f"result.input must be (1, C, H, W), got shape {inp.shape}")
    arrays: dict[str, np.ndarray] = {"input": inp.astype(np.float32, copy=False)}
    seen: set[str] = set()
    for lp in result.layers:
        if lp.layer in seen:
            raise ValueError(f"layer {lp.layer!r} appears twice in the result")
        seen.add(lp.layer)
        k = len(lp.units)
        projections = np.empty((k, *inp.shape[1:]), dtype=np.float32)
        for i, unit in enumerate(lp.units):
            proj = np.asarray(unit.projection)
            if proj.shape != inp.shape[1:]:
                raise ValueError(
                    f"layer {lp.layer!r} channel {unit.channel}: projection shape {proj.shape} "
                    f"does not match the input {inp.shape[1:]}"
                )
            projections[i] = proj
        arrays[f"{lp.layer}/channels"] = np.array([u.channel for u in lp.units], dtype=np.int64).reshape(k)
        arrays[f"{lp.layer}/positions"] = np.array([u.position for u in lp.units], dtype=np.int64).reshape(k, 2)
        arrays[f"{lp.layer}/activations"] = np.array([u.activation for u in lp.units], dtype=np.float32).reshape(k)
        arrays[f"{lp.layer}/projections"] = projections
    for pool, idx in result.switches.items():
        arrays[f"switches/{pool}"] = np.asarray(idx).astype(np.int64, copy=False)
    return arrays


def save_deconv_npz(result: DeconvResult, path: Path) -> None:
    """Write :func:`deconv_arrays` to ``path`` with ``np.savez_compressed`` (exactly those keys)."""
    write_npz(path, deconv_arrays(result))


# ---------------------------------------------------------------- page 1

def summary_notes(result: DeconvResult, info: ReportInfo) -> list[str]:
    """The notes page 1 shows: the run's (random init first), then the result's, each once."""
    from vizkit.render.kit.provenance import page_notes

    return page_notes(info, result.notes)


def render_summary_page(result: DeconvResult, info: ReportInfo, first_layer_page: int | list[int]) -> Figure:
    """Page 1 of deconv.pdf. ``first_layer_page``: each layer's first page, or the first layer's (one page each)."""
    from vizkit.render.kit.first_page import input_caption, page_one
    from vizkit.render.kit.page import LINE, MARGIN
    from vizkit.render.kit.provenance import notes_block

    starts = (first_layer_page if isinstance(first_layer_page, list)
              else [first_layer_page + i for i in range(len(result.layers))])
    fig, below = page_one("deconv", info, image=result.image, image_size=3.0,
                          caption=input_caption(np.shape(result.input)), beside=partial(_predictions_block, result))
    page_h, width = fig.get_size_inches()[1], below.width
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
                max_rows=max(3, int((page_h - MARGIN - 0.4 - below.y) / LINE) - 3))
    return fig


def _predictions_block(result: DeconvResult, c: Cursor) -> None:
    c.heading("Top-5 predictions")
    if not result.predictions:
        c.line("none (no classifier output)")
        return
    rows = [[i + 1, p.index, p.name[:38], f"{100 * p.probability:.1f} %"] for i, p in enumerate(result.predictions[:5])]
    c.table(["#", "class", "name", "probability"], rows, columns=[0.0, 0.45, 0.6, c.width],
            align=["left", "right", "left", "right"])


# ---------------------------------------------------------------- the document

def deconv_page_makers(result: DeconvResult, info: ReportInfo) -> list[PageMaker]:
    """The summary page, then each layer's pages (a layer with many units continues on further pages)."""
    from vizkit.render.deconv_pages import layer_page_count, layer_page_makers

    first_pages, page = [], 2
    for lp in result.layers:
        first_pages.append(page)
        page += layer_page_count(lp)
    makers: list[PageMaker] = [partial(render_summary_page, result, info, first_layer_page=first_pages)]
    for lp in result.layers:
        makers += layer_page_makers(lp, result.image)
    return makers


def render_deconv_pdf(result: DeconvResult, info: ReportInfo, path: Path) -> int:
    """Write deconv.pdf to ``path`` and return its page count (1 + the layers' pages)."""
    from vizkit.render.kit.pdf import write_pdf

    name = Path(info.image_path or "image").name
    return write_pdf(path, deconv_page_makers(result, info), title=f"vizkit deconv: {name}",
                     subject=f"Deconvnet projections of {info.model} on {name}",
                     keywords="deconvnet, Zeiler-Fergus, feature visualisation",
                     footer_left=f"{info.model} \u00b7 {name}")


def deconv_document(result: DeconvResult, info: ReportInfo) -> Document:
    # lambdas look the writers up at call time, so tests can watch the order in which files appear
    return Document([("deconv.npz", lambda p: save_deconv_npz(result, p)),
                     ("deconv.pdf", lambda p: render_deconv_pdf(result, info, p))], manifest="manifest.json")


def write_deconv_outputs(result: DeconvResult, info: ReportInfo, out_dir: Path, stem: str,
                         timings: dict[str, float]) -> Path:
    """``write_outputs`` for a ``DeconvResult``: ``out_dir/stem/`` atomically; ``timings`` gains ``render``."""
    return write_outputs(result, info, out_dir, stem, timings)


__all__ = ["deconv_arrays", "deconv_document", "deconv_page_makers", "render_deconv_pdf", "render_summary_page",
           "save_deconv_npz", "summary_notes", "write_deconv_outputs"]
