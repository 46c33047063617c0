"""The sanity-check page (part of occlusion.pdf and report.pdf; numbers in occlusion.sanity.json): rank correlation
with the original map along the cascading randomisation, per method, the image-dependence correlation, and a table of
flags."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from vizkit.project.sanity import ALL_THRESHOLD, IMAGE_THRESHOLD, TOP_THRESHOLD, SanityResult
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, new_page

LABELS = {"deconv": "deconvnet", "guided_backprop": "guided backprop", "gradcam": "Grad-CAM"}
COLOURS = {"deconv": "tab:blue", "guided_backprop": "tab:orange", "gradcam": "tab:green"}
PLOT_H = 3.6  # inches
EXPLANATION = (
    "Cascading randomisation (Adebayo et al. 2018): on a copy of the model, the weights are replaced by random "
    "ones from the top layer down, step by step; after each step every map is recomputed and compared with the "
    "original map by Spearman rank correlation (|map| summed over colour channels; Grad-CAM: the CAM; deconvnet: "
    "over the pixels where either projection is nonzero). A map that keeps its picture when the weights are random "
    "shows the image or the architecture, not what the model learned. Image dependence: the same unit / target "
    "class on a second, unrelated image.")


def sanity_pages(results: Sequence[SanityResult]) -> list[Figure]:
    """One A4 page: the correlation-vs-step plot, the image-dependence correlations and the flags."""
    fig = new_page()
    width = fig.get_size_inches()[0] - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line("Sanity checks", size=13, weight="bold")
    c.y += 0.06
    c.paragraph(EXPLANATION, color="0.3")
    c.y += 0.15
    curves = [r for r in results if r.randomisation]
    if curves:
        _plot(fig, curves, c.y + 0.1, width)
        c.y += PLOT_H + 1.5
    else:
        c.line("cascading randomisation not run", style="italic")
    c.heading("Image dependence")
    c.table(["method", "rank correlation between two unrelated images", "flag above"],
            [[LABELS.get(r.method, r.method), f"{r.image_corr:.3f}", IMAGE_THRESHOLD] for r in results],
            columns=[0.0, 1.6, width], align=["left", "left", "right"])
    c.heading("Flags")
    flagged = [(r, f) for r in results for f in r.flags]
    if not flagged:
        c.line("none: every map changed under randomisation and differs between images")
    for r, flag in flagged:
        c.paragraph(f"\u2022 {LABELS.get(r.method, r.method)}: {flag}", color="firebrick", max_lines=3)
    c.y += 0.1
    c.paragraph(f"Thresholds: 'insensitive to the top layers' when the correlation after the first step that reaches "
                f"the method is at least {TOP_THRESHOLD}; 'barely depends on the weights' when it is above "
                f"{ALL_THRESHOLD} after every layer is random; 'does not depend on the image' above "
                f"{IMAGE_THRESHOLD}.", size=FONT - 0.5, color="0.3")
    return [fig]


def _plot(fig: Figure, curves: Sequence[SanityResult], top: float, width: float) -> None:
    ax = axes_at(fig, MARGIN + 0.5, top, width - 0.6, PLOT_H)
    names = [name for name, _ in curves[0].randomisation]
    steps = list(range(len(names) + 1))
    for r in curves:
        values = [1.0] + [v for _, v in r.randomisation]
        ax.plot(steps, values, marker="o", ms=3.5, lw=1.4, label=LABELS.get(r.method, r.method),
                color=COLOURS.get(r.method))
    ax.axhline(TOP_THRESHOLD, color="0.5", lw=0.6, ls="--")
    ax.axhline(ALL_THRESHOLD, color="0.5", lw=0.6, ls=":")
    ax.axhline(0.0, color="0.75", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(steps)
    ax.set_xticklabels(["original"] + [_short(n) for n in names], rotation=30, ha="right", fontsize=FONT - 1.5)
    ax.tick_params(axis="y", labelsize=FONT - 1)
    ax.set_ylabel("rank correlation with the original map", fontsize=FONT)
    ax.set_xlabel("randomised down to (cumulative, top layers first)", fontsize=FONT)
    ax.legend(fontsize=FONT - 0.5, loc="lower left", frameon=False)


def _short(step: str, n: int = 34) -> str:
    return step if len(step) <= n else step[: n - 1] + "\u2026"


def sanity_json(results: Sequence[SanityResult]) -> str:
    """The results as JSON (what the PDF page shows, in numbers)."""
    return json.dumps([{"method": r.method, "randomisation": [[n, float(v)] for n, v in r.randomisation],
                        "image_corr": float(r.image_corr), "flags": list(r.flags),
                        "unaffected_steps": r.unaffected_steps} for r in results], indent=2) + "\n"


def write_sanity_json(results: Sequence[SanityResult], path: Path) -> None:
    Path(path).write_text(sanity_json(results), encoding="utf-8")


__all__ = ["sanity_json", "sanity_pages", "write_sanity_json"]
