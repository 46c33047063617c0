"""The invariance outputs of one image: invariance.npz, invariance.csv, invariance.pdf, invariance.manifest.json.

invariance.pdf: page 1 the image, how it was made and how to read the curves; then Zeiler & Fergus Fig. 5 for the
image: one row per transform, with (left) the relative distance between the original's and the transformed image's
feature vector at each layer, (right) the probability of the target class and of the original's other top-5
classes, and under both the transformed images along the axis.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.invariance import Curves
from vizkit.project.results import InvarianceResult
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, new_page
from vizkit.render.kit.pdf import PageMaker, write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes
from vizkit.render.writer import Document

MANIFEST = "invariance.manifest.json"
ROW = 3.45  # inches per transform row: title, plots, tick labels, thumbnails
PLOT_H = 1.75
THUMB = 0.72
LAYER_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
CLASS_COLOURS = ("#444444", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
TITLES = {"translate": "vertical translation", "scale": "scale (zoom about the centre)",
          "rotate": "rotation (counter-clockwise)"}
AXIS = {"px": "shift down (pixels of the model input)", "x": "scale factor", "deg": "angle (degrees)"}


def _class_label(index: int, names: Sequence[str] | None) -> str:
    names = names or []
    return f"{index} {names[index]}" if 0 <= index < len(names) else f"class {index}"


def _amount(value: float, unit: str) -> str:
    if unit == "px":
        return f"{value:+.0f} px"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g}\u00b0" if unit == "deg" else f"{value:g} {unit}"


def _summary_page(result: InvarianceResult, info: ReportInfo) -> Figure:
    """Page 1: the image, model and settings (the shared provenance blocks), how to read the rows, top-5, notes."""
    fig, below = page_one("invariance", info, image=result.image)
    r = result.sweep
    below.heading("How to read the pages")
    below.paragraph(
        "Zeiler & Fergus Fig. 5. Each transform is applied to the preprocessed input; uncovered pixels are filled "
        "with the model's mean pixel (0 in normalised input space). Distance: the Euclidean distance between the "
        "layer's whole output for the original and for the transformed image, divided by the original's norm "
        "(0 = same features, 1 = as far as the vector is long, ~1.41 = orthogonal). "
        f"Target class: {_class_label(r.target, result.class_names)} (p = {r.base_probability:.3f} on the "
        "original). One row per transform from page 2.")
    below.heading("Top-5 on the original")
    below.paragraph(";  ".join(f"{_class_label(p.index, result.class_names)} {100 * p.probability:.1f} %"
                               for p in result.predictions[:5]) or "none", max_lines=3)
    notes_block(below, page_notes(info, result.notes))
    return fig


def _row(fig: Figure, top: float, curves: Curves, result: InvarianceResult) -> None:
    page_w, _ = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    Cursor(fig, MARGIN, top, width).line(f"{TITLES.get(curves.name, curves.name)}: {len(curves.amounts)} steps, "
                                         f"{_amount(curves.amounts[0], curves.unit)} to "
                                         f"{_amount(curves.amounts[-1], curves.unit)}", size=FONT + 1.5,
                                         weight="bold")
    gap, left = 0.75, MARGIN + 0.4
    plot_w = (width - 0.4 - gap) / 2
    y = top + 0.3
    dist = axes_at(fig, left, y, plot_w, PLOT_H)
    sweep = result.sweep
    for i, layer in enumerate(sweep.layers):
        dist.plot(curves.amounts, curves.distance[layer], "-o", ms=2.2, lw=1.2,
                  color=LAYER_COLOURS[i % len(LAYER_COLOURS)], label=f"{layer} (|f(x)| {sweep.norm[layer]:.3g})")
    dist.set_ylim(bottom=0)
    dist.set_ylabel("relative distance", fontsize=FONT)
    dist.legend(fontsize=FONT - 2, loc="best", frameon=False)
    prob = axes_at(fig, left + plot_w + gap, y, plot_w, PLOT_H)
    classes = [sweep.target, *[p.index for p in result.predictions[:5] if p.index != sweep.target][:4]]
    for i, cls in enumerate(classes):
        prob.plot(curves.amounts, curves.softmax[:, cls], "-o" if i == 0 else "-", ms=2.2, lw=1.6 if i == 0 else 0.8,
                  color=CLASS_COLOURS[i % len(CLASS_COLOURS)],
                  label=_class_label(cls, result.class_names)[:30] + (" (target)" if i == 0 else ""))
    prob.set_ylim(0, 1.02)
    prob.set_ylabel("probability", fontsize=FONT)
    prob.legend(fontsize=FONT - 2, loc="best", frameon=False)
    for ax in (dist, prob):
        ax.set_xlabel(AXIS.get(curves.unit, curves.unit), fontsize=FONT - 0.5, labelpad=1)
        ax.tick_params(labelsize=FONT - 1.5, length=2)
        ax.grid(alpha=0.25, lw=0.5)
    _thumbnails(fig, y + PLOT_H + 0.42, result.thumbnails.get(curves.name, []), curves.unit)


def _thumbnails(fig: Figure, y: float, thumbs: Sequence[tuple[float, np.ndarray]], unit: str) -> None:
    """The transformed images in amount order across the page width, each labelled with its amount."""
    if not thumbs:
        return
    page_w, _ = fig.get_size_inches()
    width = page_w - 2 * MARGIN - 0.4
    step = width / len(thumbs)
    side = min(THUMB, step - 0.06)
    c = Cursor(fig, MARGIN, y + side + 0.03, width)
    for i, (amount, picture) in enumerate(thumbs):
        x = MARGIN + 0.4 + i * step + (step - side) / 2
        ax = axes_at(fig, x, y, side, side)
        ax.imshow(picture, interpolation="bilinear")
        ax.set_axis_off()
        c.text(x + side / 2, _amount(amount, unit), size=FONT - 1.5, ha="center", color="0.25")


def invariance_page_makers(result: InvarianceResult, info: ReportInfo) -> list[PageMaker]:
    """The pages of invariance.pdf, each built when written: page 1, then the transform rows, as many per page as
    fit."""
    _, page_h = new_page().get_size_inches()
    per_page = max(1, int((page_h - 2 * MARGIN - 0.2) // ROW))
    curves = result.sweep.curves
    chunks = [curves[i:i + per_page] for i in range(0, len(curves), per_page)]
    return [partial(_summary_page, result, info), *(partial(_rows_page, rows, result) for rows in chunks)]


def _rows_page(rows: Sequence[Curves], result: InvarianceResult) -> Figure:
    fig = new_page()
    for i, curves in enumerate(rows):
        _row(fig, MARGIN + i * ROW, curves, result)
    return fig


def invariance_pages(result: InvarianceResult, info: ReportInfo) -> list[Figure]:
    """The pages of invariance.pdf, built (no footers: ``write_pdf`` numbers them)."""
    return [make() for make in invariance_page_makers(result, info)]


def write_invariance_csv(result: InvarianceResult, path: Path) -> None:
    """One row per (transform, amount): the target's probability, the top-5 (``index:probability``) and the
    relative and raw distance per layer."""
    r = result.sweep
    names = result.class_names or []
    header = ["transform", "amount", "unit", "target", "probability", "top1", "top1_name", "top1_probability",
              "top5"] + [f"distance[{layer}]" for layer in r.layers] + [f"raw_distance[{layer}]" for layer in r.layers]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for c in r.curves:
            for s, amount in enumerate(c.amounts):
                top1 = int(c.top_classes[s, 0])
                writer.writerow([c.name, f"{amount:g}", c.unit, r.target, f"{c.probability[s]:.6g}", top1,
                                 names[top1] if top1 < len(names) else "", f"{c.top_probability[s, 0]:.6g}",
                                 _top5(c.top_classes[s], c.top_probability[s])]
                                + [f"{c.distance[layer][s]:.6g}" for layer in r.layers]
                                + [f"{c.raw_distance[layer][s]:.6g}" for layer in r.layers])


def _top5(classes: np.ndarray, probs: np.ndarray) -> str:
    return ";".join(f"{int(i)}:{p:.4g}" for i, p in zip(classes, probs, strict=True))


def render_invariance_pdf(result: InvarianceResult, info: ReportInfo, path: Path) -> int:
    """Write invariance.pdf and return its page count."""
    name = Path(info.image_path).name if info.image_path else "image"
    return write_pdf(path, invariance_page_makers(result, info), title=f"vizkit invariance: {name}",
                     subject=f"Invariance of {info.model} to {', '.join(c.name for c in result.sweep.curves)}",
                     keywords="invariance, Zeiler-Fergus, translation, scale, rotation",
                     footer_left=f"{info.model} \u00b7 {name}")


def save_invariance_npz(result: InvarianceResult, path: Path) -> None:
    write_npz(path, result.sweep.arrays())


def invariance_document(result: InvarianceResult, info: ReportInfo) -> Document:
    """invariance.npz, invariance.csv, invariance.pdf, then the manifest."""
    return Document([("invariance.npz", lambda p: save_invariance_npz(result, p)),
                     ("invariance.csv", lambda p: write_invariance_csv(result, p)),
                     ("invariance.pdf", lambda p: render_invariance_pdf(result, info, p))], manifest=MANIFEST)


__all__ = ["MANIFEST", "invariance_document", "invariance_page_makers", "invariance_pages", "render_invariance_pdf",
           "save_invariance_npz", "write_invariance_csv"]
