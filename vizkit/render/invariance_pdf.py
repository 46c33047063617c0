"""The invariance outputs of one image: invariance.npz, invariance.csv, invariance.pdf, invariance.manifest.json.

invariance.pdf is Zeiler & Fergus Fig. 5 for the image: one row per transform, with (left) the relative distance
between the original's and the transformed image's feature vector at each layer, (right) the probability of the
target class and of the original's other top-5 classes, and under both the transformed images along the axis.
"""
from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from vizkit.project.invariance import Curves, InvarianceResult
from vizkit.project.results import Prediction
from vizkit.render.atomic import atomic_dir, output_folder
from vizkit.render.info import ReportInfo, vizkit_version
from vizkit.render.manifest import write_manifest
from vizkit.render.pages import FONT, MARGIN, Cursor, footer, new_page

MANIFEST = "invariance.manifest.json"
ROW = 3.45  # inches per transform row: title, plots, tick labels, thumbnails
PLOT_H = 1.75
THUMB = 0.72
LAYER_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
CLASS_COLOURS = ("#444444", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
TITLES = {"translate": "vertical translation", "scale": "scale (zoom about the centre)",
          "rotate": "rotation (counter-clockwise)"}
AXIS = {"px": "shift down (pixels of the model input)", "x": "scale factor", "deg": "angle (degrees)"}


@dataclass
class InvarianceOutcome:
    """Everything ``vizkit invariance`` renders for one image: the sweep, the original picture, thumbnails of
    transformed copies per transform ((amount, (H, W, 3) uint8) along the axis), predictions, class names."""

    result: InvarianceResult
    image: np.ndarray
    thumbnails: dict[str, list[tuple[float, np.ndarray]]]
    predictions: list[Prediction]
    class_names: list[str] | None
    notes: list[str]


def _class_label(index: int, names: Sequence[str] | None) -> str:
    names = names or []
    return f"{index} {names[index]}" if 0 <= index < len(names) else f"class {index}"


def _amount(value: float, unit: str) -> str:
    if unit == "px":
        return f"{value:+.0f} px"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g}\u00b0" if unit == "deg" else f"{value:g} {unit}"


def _header(fig: Figure, outcome: InvarianceOutcome, info: ReportInfo | None) -> float:
    page_w, _ = fig.get_size_inches()
    c = Cursor(fig, MARGIN, MARGIN, page_w - 2 * MARGIN)
    r = outcome.result
    title = Path(info.image_path).name if info and info.image_path else "image"
    c.line(f"vizkit invariance: {title}", size=15, weight="bold")
    c.y += 0.06
    if info:
        pre = "" if info.pretrained else "  \u00b7  NOT pretrained (random init)"
        c.paragraph(f"model {info.model}  \u00b7  weights {info.weights}{pre}", color="0.3", max_lines=2)
    target = _class_label(r.target, outcome.class_names)
    c.paragraph(
        "Zeiler & Fergus Fig. 5. Each transform is applied to the preprocessed input; uncovered pixels are filled "
        "with the model's mean pixel (0 in normalised input space). Distance: the Euclidean distance between the "
        "layer's whole output for the original and for the transformed image, divided by the original's norm "
        "(0 = same features, 1 = as far as the vector is long, ~1.41 = orthogonal). "
        f"Target class: {target} (p = {r.base_probability:.3f} on the original).", color="0.25")
    for note in outcome.notes:
        c.paragraph(f"note: {note}", color="firebrick", max_lines=2)
    c.paragraph("top-5 original: " + ";  ".join(f"{_class_label(p.index, outcome.class_names)} "
                                                f"{100 * p.probability:.1f} %" for p in outcome.predictions[:5]),
                max_lines=2)
    if info:
        command = info.command if isinstance(info.command, str) else " ".join(str(a) for a in info.command)
        c.paragraph(f"command: {command}", size=FONT - 0.5, color="0.3", max_lines=2)
    return c.y + 0.15


def _axes(fig: Figure, x: float, y: float, w: float, h: float) -> Axes:
    page_w, page_h = fig.get_size_inches()
    return fig.add_axes((x / page_w, 1 - (y + h) / page_h, w / page_w, h / page_h))


def _row(fig: Figure, top: float, curves: Curves, result: InvarianceResult, outcome: InvarianceOutcome) -> None:
    page_w, _ = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    Cursor(fig, MARGIN, top, width).line(f"{TITLES.get(curves.name, curves.name)}: {len(curves.amounts)} steps, "
                                         f"{_amount(curves.amounts[0], curves.unit)} to "
                                         f"{_amount(curves.amounts[-1], curves.unit)}", size=FONT + 1.5,
                                         weight="bold")
    gap, left = 0.75, MARGIN + 0.4
    plot_w = (width - 0.4 - gap) / 2
    y = top + 0.3
    dist = _axes(fig, left, y, plot_w, PLOT_H)
    for i, layer in enumerate(result.layers):
        dist.plot(curves.amounts, curves.distance[layer], "-o", ms=2.2, lw=1.2,
                  color=LAYER_COLOURS[i % len(LAYER_COLOURS)], label=f"{layer} (|f(x)| {result.norm[layer]:.3g})")
    dist.set_ylim(bottom=0)
    dist.set_ylabel("relative distance", fontsize=FONT)
    dist.legend(fontsize=FONT - 2, loc="best", frameon=False)
    prob = _axes(fig, left + plot_w + gap, y, plot_w, PLOT_H)
    classes = [result.target, *[p.index for p in outcome.predictions[:5] if p.index != result.target][:4]]
    for i, cls in enumerate(classes):
        prob.plot(curves.amounts, curves.softmax[:, cls], "-o" if i == 0 else "-", ms=2.2, lw=1.6 if i == 0 else 0.8,
                  color=CLASS_COLOURS[i % len(CLASS_COLOURS)],
                  label=_class_label(cls, outcome.class_names)[:30] + (" (target)" if i == 0 else ""))
    prob.set_ylim(0, 1.02)
    prob.set_ylabel("probability", fontsize=FONT)
    prob.legend(fontsize=FONT - 2, loc="best", frameon=False)
    for ax in (dist, prob):
        ax.set_xlabel(AXIS.get(curves.unit, curves.unit), fontsize=FONT - 0.5, labelpad=1)
        ax.tick_params(labelsize=FONT - 1.5, length=2)
        ax.grid(alpha=0.25, lw=0.5)
    _thumbnails(fig, y + PLOT_H + 0.42, outcome.thumbnails.get(curves.name, []), curves.unit)


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
        ax = _axes(fig, x, y, side, side)
        ax.imshow(picture, interpolation="bilinear")
        ax.set_axis_off()
        c.text(x + side / 2, _amount(amount, unit), size=FONT - 1.5, ha="center", color="0.25")


def invariance_pages(outcome: InvarianceOutcome, info: ReportInfo | None = None) -> list[Figure]:
    """The pages of invariance.pdf: a header, then one row per transform (a new page when a row does not fit)."""
    fig = new_page()
    _, page_h = fig.get_size_inches()
    pages, y = [fig], _header(fig, outcome, info)
    for curves in outcome.result.curves:
        if y + ROW > page_h - MARGIN - 0.2:
            fig = new_page()
            pages.append(fig)
            y = MARGIN
        _row(fig, y, curves, outcome.result, outcome)
        y += ROW
    return pages


def write_invariance_csv(outcome: InvarianceOutcome, path: Path) -> None:
    """One row per (transform, amount): the target's probability, the top-5 (``index:probability``) and the
    relative and raw distance per layer."""
    r = outcome.result
    names = outcome.class_names or []
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


def render_invariance_pdf(outcome: InvarianceOutcome, info: ReportInfo, path: Path) -> int:
    """Write invariance.pdf and return its page count."""
    version = vizkit_version()
    name = Path(info.image_path).name if info.image_path else "image"
    figures = invariance_pages(outcome, info)
    metadata = {"Title": f"vizkit invariance: {name}", "Creator": f"vizkit {version}",
                "Subject": f"Invariance of {info.model} to {', '.join(c.name for c in outcome.result.curves)}",
                "Keywords": "invariance, Zeiler-Fergus, translation, scale, rotation"}
    with PdfPages(path, metadata=metadata) as pdf:
        for number, fig in enumerate(figures, start=1):
            footer(fig, f"vizkit {version} \u00b7 {info.model} \u00b7 {name}", number, len(figures))
            pdf.savefig(fig)
    return len(figures)


def write_invariance_outputs(outcome: InvarianceOutcome, info: ReportInfo, out_dir: Path, stem: str,
                             timings: dict[str, float]) -> Path:
    """Write invariance.npz, invariance.csv, invariance.pdf and invariance.manifest.json (last) into
    ``out_dir/stem/`` atomically; other commands' files there stay. Returns the folder."""
    start = time.perf_counter()
    final = output_folder(out_dir, stem)
    with atomic_dir(final) as tmp:
        with open(tmp / "invariance.npz", "wb") as f:  # a file object: savez would otherwise append ".npz"
            np.savez_compressed(f, **outcome.result.arrays())
        write_invariance_csv(outcome, tmp / "invariance.csv")
        render_invariance_pdf(outcome, info, tmp / "invariance.pdf")
        write_manifest(tmp, info, {**timings, "render": time.perf_counter() - start}, name=MANIFEST)
    return final


__all__ = ["MANIFEST", "InvarianceOutcome", "invariance_pages", "render_invariance_pdf", "write_invariance_csv",
           "write_invariance_outputs"]
