"""The pages of attribute.pdf after page 1: one per image (the methods side by side) and the ranking page.

Each map is drawn on its own scale: its channels summed, clipped at the ``CLIP_PERCENTILE``th percentile of
``|value|``; a signed map (``MethodMaps.signed``) in a diverging colour map centred at 0 (blue negative, white 0,
red positive), a magnitude in a sequential one from 0. Pictures are drawn on one page-sized canvas.
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.project.attribute.evaluate.ranking import DEFAULT_METRICS, LOWER_IS_BETTER
from vizkit.project.attribute.evaluate.suite import CURVES, AttributeEvaluation
from vizkit.project.attribute.result import AttributeResult, MethodMaps
from vizkit.render.kit.display import display_image
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, draw_picture, new_page, page_canvas

CLIP_PERCENTILE = 99.5
SIGNED_MAP, MAGNITUDE_MAP = "RdBu_r", "inferno"
COLUMNS = 4
GAP = 0.16
LABEL_H = 0.32
METRIC_TITLES = {"deletion-morf": "deletion MoRF", "deletion-lerf": "deletion LeRF", "insertion-morf":
                 "insertion MoRF", "insertion-lerf": "insertion LeRF", "road-morf": "ROAD MoRF",
                 "randomisation": "random. \u03c1"}


SHORT = {"deletion-morf": "del. MoRF", "deletion-lerf": "del. LeRF", "insertion-morf": "ins. MoRF",
         "insertion-lerf": "ins. LeRF", "road-morf": "ROAD", "randomisation": "rand. \u03c1"}


def map_picture(attribution: np.ndarray, signed: bool) -> tuple[np.ndarray, float]:
    """A (C, H, W) map as an (H, W, 3) picture in [0, 1] on its own scale, and the clipping value."""
    m = np.where(np.isfinite(attribution), attribution, 0.0).astype(np.float64).sum(axis=0)
    peak = float(np.percentile(np.abs(m), CLIP_PERCENTILE)) if m.size else 0.0
    if peak <= 0:
        peak = float(np.abs(m).max()) if m.size else 0.0
    scaled = m / peak if peak > 0 else np.zeros_like(m)
    if signed:
        rgba = colormaps[SIGNED_MAP]((np.clip(scaled, -1.0, 1.0) + 1.0) / 2.0)
    else:
        rgba = colormaps[MAGNITUDE_MAP](np.clip(scaled, 0.0, 1.0))
    return rgba[..., :3].astype(np.float32), peak


def image_page(result: AttributeResult, i: int) -> Figure:
    """Image ``i``: the input, then every method's map, ``COLUMNS`` to a row."""
    fig = new_page()
    page_w = fig.get_size_inches()[0]
    width = page_w - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(f"image {i + 1} / {len(result.names)}: {result.names[i]}", size=FONT + 4, weight="bold")
    score = "value" if result.targets[i] < 0 else "probability"
    c.line(f"target: {target_text(result, i)}  \u00b7  {score} {float(result.scores[i]):.4g}", size=FONT + 1)
    if result.predictions and result.predictions[i]:
        c.line("top predictions: " + "; ".join(f"{p.index} {p.name[:24]} {100 * p.probability:.1f} %"
                                                 for p in result.predictions[i][:3]), color="0.3")
    c.y += 0.1
    columns = 3 if len(result.maps) < 9 else COLUMNS  # 3 columns while 3 rows hold every panel
    side = (width - (columns - 1) * GAP) / columns
    canvas = page_canvas(fig)
    panels: list[MethodMaps | None] = [None, *result.maps]
    for k, maps in enumerate(panels):
        row, col = divmod(k, columns)
        x, y = MARGIN + col * (side + GAP), c.y + row * (side + LABEL_H + GAP)
        label = Cursor(fig, x, y, side)
        if maps is None:
            label.line("input", weight="bold")
            label.line("as fed to the model", size=FONT - 1, color="0.35")
            draw_picture(canvas, display_image(result.images[i]), (x, y + LABEL_H, side))
            continue
        picture, peak = map_picture(maps.attribution[i], maps.signed)
        label.line(maps.label, weight="bold")
        kind = "signed" if maps.signed else "magnitude"
        label.line(f"{maps.library} \u00b7 {kind} \u00b7 clip {peak:.3g}", size=FONT - 1, color="0.35")
        draw_picture(canvas, picture, (x, y + LABEL_H, side))
        if peak == 0:
            canvas.text(x + side / 2, y + LABEL_H + side / 2, "all zero", ha="center", va="center",
                        fontsize=FONT, color="firebrick")
    return fig


def ranking_page(result: AttributeResult) -> Figure:
    """The methods ranked on these images: the table of every measure, then the mean MoRF curves."""
    ev = result.evaluation
    assert ev is not None
    fig = new_page()
    page_w = fig.get_size_inches()[0]
    width = page_w - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(f"Which method to trust: {len(ev.ranking.methods)} methods on {len(result.names)} images",
           size=FONT + 4, weight="bold")
    c.paragraph("Deletion / insertion: the target's score while the most (MoRF) or least (LeRF) relevant pixels "
                f"are replaced by the baseline ({result.baseline}) or inserted into it; the number is the area "
                "under the curve (probability, or a target function's value). ROAD: deletion by noisy linear "
                "imputation, so the removed pixels' shape does not leak the class (Rong et al. 2022). random. "
                "\u03c1: rank correlation of the map with the same method on a copy of the model with randomised "
                "weights (Adebayo et al. 2018): a map that survives it shows the image, not what the model "
                "learned. With one baseline, deletion LeRF mirrors insertion MoRF and insertion LeRF mirrors "
                "deletion MoRF. Each is a mean over the images; arrows say which way is better. The order is by mean "
                f"rank over {', '.join(METRIC_TITLES[m] for m in DEFAULT_METRICS)}.", size=FONT - 0.5,
                color="0.25")
    c.y += 0.05
    metrics = [*CURVES, "road-morf", "randomisation"]
    header = ["#", "method", *[f"{SHORT[m]} {_arrow(m)}" for m in metrics], "mean rank"]
    columns = [0.25, 0.35, *[2.2 + 0.72 * k for k in range(1, len(metrics) + 1)], width]
    rows = []
    for place, label in enumerate(ev.ranking.order, start=1):
        k = ev.ranking.methods.index(label)
        values = [f"{float(np.mean(ev.auc(label, m))):.3f}" for m in metrics]
        rows.append([place, label[:26], *values, f"{float(ev.ranking.mean_rank[k]):.2f}"])
    c.table(header, rows, columns=columns, align=["right", "left", *["right"] * (len(metrics) + 1)])
    c.y += 0.2
    plot_h = 3.0
    half = (width - 0.6) / 2
    for j, curve in enumerate(("deletion-morf", "insertion-morf")):
        ax = axes_at(fig, MARGIN + 0.4 + j * (half + 0.4), c.y, half - 0.2, plot_h)
        _curves(ax, ev, curve)
    return fig


def target_text(result: AttributeResult, i: int) -> str:
    """'class 281 tabby', 'class 9' for a model without class names, or 'target function'."""
    t = int(result.targets[i])
    if t < 0:
        return "target function"
    name = result.target_names[i]
    return f"class {t}" if name == f"class {t}" else f"class {t} {name[:32]}"


def _arrow(metric: str) -> str:
    return "\u2193" if LOWER_IS_BETTER.get(metric, True) else "\u2191"


def _curves(ax: Axes, ev: AttributeEvaluation, curve: str) -> None:
    for label in ev.ranking.order:
        ax.plot(ev.fractions, ev.curves[label][curve].mean(axis=0), lw=1.0, label=label[:22])
    ax.set_title(f"{METRIC_TITLES[curve]} (mean over images)", fontsize=FONT)
    ax.set_xlabel("fraction of pixels " + ("deleted" if curve.startswith("deletion") else "inserted"),
                  fontsize=FONT - 1)
    ax.set_ylabel("target score", fontsize=FONT - 1)
    ax.tick_params(labelsize=FONT - 1.5)
    ax.legend(fontsize=FONT - 2, frameon=False)


__all__ = ["CLIP_PERCENTILE", "image_page", "map_picture", "ranking_page", "target_text"]
