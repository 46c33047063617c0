"""The folder of ``vizkit attribute``: attribute.npz, attribute.pdf, attribute.manifest.json (last), all or nothing.

attribute.pdf: page 1 is the provenance header, the method table (who computes each, signed or not) and the
notes; with ``--evaluate`` the ranking page follows; then one page per image with the methods side by side
(``attribute_pages.py``). The manifest adds ``ranking`` (with ``--evaluate``) and the per-method seconds.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.attribute.evaluate.suite import CURVES
from vizkit.project.attribute.methods import METHODS
from vizkit.project.attribute.result import AttributeResult
from vizkit.render.attribute_pages import image_page, ranking_page, target_text
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import FONT
from vizkit.render.kit.pdf import PageMaker, write_pdf
from vizkit.render.kit.provenance import page_notes
from vizkit.render.writer import Document

MANIFEST = "attribute.manifest.json"
LIBRARY = {"captum": "Captum", "zennit": "zennit", "vizkit": "vizkit's rules"}


def attribute_arrays(result: AttributeResult) -> dict[str, np.ndarray]:
    """The npz content: ``input``, ``targets``, ``scores``, per method ``<label>/attribution``; with ``--evaluate``
    also ``fractions``, ``road_percentages``, per method ``<label>/<curve>`` (N, K+1), ``<label>/road-morf``
    (N, P), ``<label>/randomisation`` (N,), and ``ranking/order``, ``ranking/mean_rank``, ``ranking/<metric>``."""
    n = len(result.names)
    arrays: dict[str, np.ndarray] = {
        "input": np.asarray(result.input, dtype=np.float32),
        "targets": np.asarray(result.targets, dtype=np.int64).reshape(n),
        "scores": np.asarray(result.scores, dtype=np.float32).reshape(n),
    }
    for m in result.maps:
        attr = np.asarray(m.attribution, dtype=np.float32)
        if attr.ndim != 4 or attr.shape[0] != n or attr.shape[-2:] != arrays["input"].shape[-2:]:
            raise ValueError(f"{m.label}: attribution must be (N, C, H, W) like the input, got {attr.shape}")
        arrays[f"{m.label}/attribution"] = attr
    ev = result.evaluation
    if ev is not None:
        arrays["fractions"] = np.asarray(ev.fractions, dtype=np.float64)
        arrays["road_percentages"] = np.asarray(ev.road_percentages, dtype=np.float64)
        for label in ev.curves:
            for curve in CURVES:
                arrays[f"{label}/{curve}"] = np.asarray(ev.curves[label][curve], dtype=np.float64)
            arrays[f"{label}/road-morf"] = np.asarray(ev.road[label], dtype=np.float64)
            arrays[f"{label}/randomisation"] = np.asarray(ev.randomisation[label], dtype=np.float64)
        arrays["ranking/methods"] = np.asarray(ev.ranking.methods, dtype=str)
        arrays["ranking/order"] = np.asarray(ev.ranking.order, dtype=str)
        arrays["ranking/mean_rank"] = np.asarray(ev.ranking.mean_rank, dtype=np.float64)
        for metric, values in ev.ranking.scores.items():
            arrays[f"ranking/{metric}"] = np.asarray(values, dtype=np.float64)
    return arrays


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def manifest_extra(result: AttributeResult) -> dict[str, object]:
    extra: dict[str, object] = {"seconds_per_method": {m.label: round(m.seconds, 4) for m in result.maps}}
    ev = result.evaluation
    if ev is not None:
        r = ev.ranking
        extra["ranking"] = {"order": r.order,
                            "mean_rank": {m: _finite(v) for m, v in zip(r.methods, r.mean_rank, strict=True)},
                            "scores": {metric: {m: _finite(v) for m, v in zip(r.methods, values, strict=True)}
                                       for metric, values in r.scores.items()}}
    return extra


def attribute_document(result: AttributeResult, info: ReportInfo) -> Document:
    return Document([("attribute.npz", lambda p: write_npz(p, attribute_arrays(result))),
                     ("attribute.pdf", lambda p: render_attribute_pdf(result, info, p))],
                    manifest=MANIFEST, folder="attribute", manifest_extra=manifest_extra(result))


def render_attribute_pdf(result: AttributeResult, info: ReportInfo, path: Path) -> int:
    """Write attribute.pdf to ``path`` and return its page count."""
    labels = ", ".join(m.label for m in result.maps)
    return write_pdf(path, attribute_pages(result, info), title=f"vizkit attribute: {info.model}",
                     subject=f"attribution maps of {info.model} ({labels}) on {len(result.names)} images",
                     keywords="attribution, Captum, zennit, LRP, integrated gradients, Grad-CAM",
                     footer_left=f"{info.model} \u00b7 attribute")


def attribute_pages(result: AttributeResult, info: ReportInfo | None) -> list[PageMaker]:
    """Page 1, the ranking page (with ``--evaluate``), one page per image; built when written."""
    pages: list[PageMaker] = [lambda: first_page(result, info)]
    if result.evaluation is not None:
        pages.append(lambda: ranking_page(result))
    pages += [partial(image_page, result, i) for i in range(len(result.names))]
    return pages


def first_page(result: AttributeResult, info: ReportInfo | None) -> Figure:
    fig, c = page_one("attribute", info, title=f"vizkit attribute: {info.model if info else 'model'}")
    c.heading("Methods")
    rows = []
    for m in result.maps:
        rows.append([m.label, LIBRARY.get(m.library, m.library), "signed" if m.signed else "magnitude",
                     f"{m.seconds:.2f} s", _clip(METHODS[m.method].summary, 52)])
    c.table(["method", "computed by", "map", "time", "what it is"], rows,
            columns=[0.0, 1.45, 2.35, 3.35, 3.85], align=["left", "left", "left", "right", "left"])
    c.paragraph("Each map is scaled on its own: signed maps (the sign argues for or against the target) in a "
                "diverging map, blue < 0 < red, centred at 0; magnitudes in a sequential map from 0. Channels are "
                "summed; values beyond the 99.5th percentile of |value| are clipped."
                + (f" CAM layer: {result.layer}." if result.layer else "")
                + f" Baseline: {result.baseline}.", size=FONT - 0.5, color="0.25")
    c.heading("Images")
    images: list[list[object]] = [[i + 1, name[:40], target_text(result, i), f"{float(result.scores[i]):.4g}"]
                                  for i, name in enumerate(result.names)]
    c.table(["#", "image", "target", "score"], images, columns=[0.0, 0.3, 3.2, c.width],
            align=["right", "left", "left", "right"], max_rows=24)
    notes = page_notes(info, result.notes)
    if notes:
        c.heading("Notes")
    for note in notes:
        c.paragraph(f"\u2022 {note}", max_lines=3)
    return fig


__all__ = ["MANIFEST", "attribute_arrays", "attribute_document", "attribute_pages", "render_attribute_pdf"]
