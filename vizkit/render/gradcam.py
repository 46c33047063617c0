"""The per-image folder of ``vizkit gradcam``: gradcam.npz, gradcam.pdf, gradcam.manifest.json (last), all or nothing.

gradcam.pdf: page 1 starts with the image, model, layer, top-5 predictions, notes and the interception audit;
then one row per target: the CAM over the image, guided backprop, guided Grad-CAM, with class name and probability.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.results import GradCamResult
from vizkit.render.kit.display import display_image, is_zero_projection, normalise_projection
from vizkit.render.kit.first_page import input_caption, page_one
from vizkit.render.kit.page import FONT, MARGIN, Cursor, axes_at, new_page
from vizkit.render.kit.pdf import built, write_pdf
from vizkit.render.kit.provenance import page_notes
from vizkit.render.writer import Document

NPZ_KEYS = ("input", "targets", "scores", "cam_raw", "cam", "guided_backprop", "guided_gradcam")
ZERO_CAM_NOTE = "CAM all zero: the ReLU removed every location (left at 0, not scaled)"
IMAGE_SIZE = 2.3  # inches, the image on page 1
MAX_PANEL = 2.05  # inches: two target rows fit under the header of page 1
MIN_PANEL = 1.5  # inches: below this the panels get too small to read; a second page follows instead
CLIP_PERCENTILE = 99.5  # gradient pictures: |values| above this percentile are clipped (a few pixels dominate)
LABEL_H = 0.34  # two label lines above a target's panels
ROW_GAP = 0.18
CAM_ALPHA = 0.5

MANIFEST = "gradcam.manifest.json"  # beside deconv's manifest.json in the same per-image folder


def gradcam_arrays(result: GradCamResult) -> dict[str, np.ndarray]:
    """The npz content, exactly ``NPZ_KEYS``; shapes are checked against each other."""
    inp = np.asarray(result.input, dtype=np.float32)
    if inp.ndim != 4 or inp.shape[0] != 1:
        raise ValueError(f"result.input must be (1, C, H, W), got shape {inp.shape}")
    _, c, h, w = inp.shape
    t = len(result.targets)
    arrays: dict[str, np.ndarray] = {
        "input": inp,
        "targets": np.asarray(result.targets, dtype=np.int64).reshape(t),
        "scores": np.asarray(result.scores, dtype=np.float32).reshape(t),
        "cam_raw": np.asarray(result.cam_raw, dtype=np.float32),
        "cam": np.asarray(result.cam, dtype=np.float32).reshape(t, h, w),
        "guided_backprop": np.asarray(result.guided_backprop, dtype=np.float32).reshape(t, c, h, w),
        "guided_gradcam": np.asarray(result.guided_gradcam, dtype=np.float32).reshape(t, c, h, w),
    }
    if arrays["cam_raw"].ndim != 3 or arrays["cam_raw"].shape[0] != t:
        raise ValueError(f"cam_raw must be (T, h, w) with T = {t}, got {arrays['cam_raw'].shape}")
    return arrays


def save_gradcam_npz(result: GradCamResult, path: Path) -> None:
    write_npz(path, gradcam_arrays(result))


def gradcam_document(result: GradCamResult, info: ReportInfo) -> Document:
    return Document([("gradcam.npz", lambda p: save_gradcam_npz(result, p)),
                     ("gradcam.pdf", lambda p: render_gradcam_pdf(result, info, p))], manifest=MANIFEST)


def render_gradcam_pdf(result: GradCamResult, info: ReportInfo, path: Path) -> int:
    """Write gradcam.pdf to ``path`` and return its page count."""
    name = Path(info.image_path or "image").name
    figures = gradcam_pages(result, info)
    return write_pdf(path, [built(fig) for fig in figures], title=f"vizkit gradcam: {name}",
                     subject=f"Grad-CAM, guided backprop and guided Grad-CAM of {info.model} on {name}",
                     keywords="Grad-CAM, guided backpropagation, guided Grad-CAM",
                     footer_left=f"{info.model} \u00b7 {name}")


def contrast_picture(p: np.ndarray, percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """A signed (C, H, W) gradient as an (H, W, 3) picture in [0, 1], grey = 0, clipped at a percentile of |p|."""
    p = np.where(np.isfinite(p), p, 0.0)
    peak = float(np.percentile(np.abs(p), percentile)) if p.size else 0.0
    return normalise_projection(np.clip(p, -peak, peak) if peak > 0 else p)


def gradcam_pages(result: GradCamResult, info: ReportInfo) -> list[Figure]:
    """The header (image, model, layer, predictions) and one row per target: CAM overlay, guided backprop,
    guided Grad-CAM. No footers: the caller numbers pages."""
    fig, y = _header(result, info)
    page_w, page_h = fig.get_size_inches()
    width = page_w - 2 * MARGIN
    bottom = page_h - MARGIN - 0.3
    # two target rows fit under page 1's header however long it grew (a long command line, notes), down to MIN_PANEL
    rows_on_first = min(len(result.targets), 2)
    fit = (bottom - y) / max(rows_on_first, 1) - LABEL_H - ROW_GAP
    side = max(MIN_PANEL, min(MAX_PANEL, (width - 0.3) / 3, fit))
    row_h = LABEL_H + side + ROW_GAP
    figures = [fig]
    picture = display_image(result.image)
    for t in range(len(result.targets)):
        if y + row_h > bottom:
            fig = new_page()
            figures.append(fig)
            y = MARGIN
        _target_row(fig, result, t, picture, y, side)
        y += row_h
    return figures


def _header(result: GradCamResult, info: ReportInfo) -> tuple[Figure, float]:
    """Page 1's header (``page_one``, the layer and the predictions beside the image), the method and the notes;
    returns the page and where the target rows start."""
    fig, below = page_one("gradcam", info, image=result.image, image_size=IMAGE_SIZE,
                          caption=input_caption(np.shape(result.input), denormalised=False), compact=True,
                          beside=partial(_layer_and_predictions, result))
    below.heading("Method")
    below.paragraph("CAM: relu(sum over channels of (spatial mean of d score / d maps) x maps) at the layer, score = "
                    "the target's pre-softmax logit; upsampled bilinearly and divided by its maximum, shown over "
                    "the image (jet, alpha 0.5). Guided backprop: input gradient with every rectifier passing "
                    "relu(gradient) down (Springenberg et al.). Guided Grad-CAM: guided backprop x CAM. Gradient "
                    f"pictures: each scaled on its own, grey = 0, clipped at the {CLIP_PERCENTILE:g}th percentile of "
                    "|value|.", size=FONT - 0.5, color="0.25")
    notes = page_notes(info, result.notes, [f"target {t} ({result.class_names[i]}): {ZERO_CAM_NOTE}"
                                            for i, t in enumerate(result.targets) if result.zero_cam[i]])
    if notes:
        below.heading("Notes")
    for note in notes:
        below.paragraph(f"\u2022 {note}", max_lines=3)
    if result.audit:
        below.paragraph("interception audit (guided backprop): " + "; ".join(
            f"{a.op} x{a.count}: {a.rule}" for a in result.audit), size=FONT - 0.5, color="0.3", max_lines=3)
    return fig, below.y + 0.15


def _layer_and_predictions(result: GradCamResult, c: Cursor) -> None:
    grid = "x".join(map(str, np.shape(result.cam_raw)[1:]))
    c.y += 0.06
    c.paragraph(f"Grad-CAM layer: {result.layer} (grid {grid})", weight="bold")
    c.heading("Top-5 predictions")
    rows = [[i + 1, p.index, p.name[:36], f"{100 * p.probability:.1f} %"] for i, p in enumerate(result.predictions[:5])]
    if rows:
        c.table(["#", "class", "name", "probability"], rows, columns=[0.0, 0.45, 0.6, c.width],
                align=["left", "right", "left", "right"])


def target_label(index: int, name: str) -> str:
    """'class 281 tabby' or, for a model without class names, 'class 9' (not 'class 9 class 9')."""
    return f"class {index}" if name == f"class {index}" else f"class {index} {name}"


def _target_row(fig: Figure, result: GradCamResult, t: int, picture: np.ndarray, y: float, side: float) -> None:
    page_w = fig.get_size_inches()[0]
    gap = (page_w - 2 * MARGIN - 3 * side) / 2
    label = Cursor(fig, MARGIN, y, page_w - 2 * MARGIN)
    label.line(f"target {t + 1}: {target_label(int(result.targets[t]), result.class_names[t])}  \u00b7  probability "
               f"{100 * float(result.scores[t]):.2f} %", size=FONT + 1, weight="bold")
    zero = bool(result.zero_cam[t])
    raw_max = float(np.max(result.cam_raw[t])) if np.size(result.cam_raw[t]) else 0.0
    headers = ["CAM over the image (" + ("all zero" if zero else f"raw max {raw_max:.4g}") + ")",
               "guided backprop", "guided Grad-CAM"]
    for j, text in enumerate(headers):
        label.text(MARGIN + j * (side + gap), text, size=FONT - 0.5, color="0.3")
    axes = [axes_at(fig, MARGIN + j * (side + gap), y + LABEL_H, side, side) for j in range(3)]
    _draw(axes, result, t, picture, zero)


def _draw(axes: list[Axes], result: GradCamResult, t: int, picture: np.ndarray, zero: bool) -> None:
    overlay, gbp, ggc = axes
    overlay.imshow(picture, interpolation="none")
    overlay.imshow(result.cam[t], cmap="jet", vmin=0.0, vmax=1.0, alpha=CAM_ALPHA, interpolation="none")
    if zero:
        overlay.text(0.5, 0.5, "CAM all zero\n(ReLU removed\nevery location)", transform=overlay.transAxes,
                     ha="center", va="center", fontsize=FONT, color="white", weight="bold",
                     bbox={"facecolor": "firebrick", "alpha": 0.8, "lw": 0})
    for ax, proj in ((gbp, result.guided_backprop[t]), (ggc, result.guided_gradcam[t])):
        ax.imshow(contrast_picture(proj), vmin=0, vmax=1, interpolation="none")
        if is_zero_projection(proj):
            ax.text(0.5, 0.5, "all zero", transform=ax.transAxes, ha="center", va="center", fontsize=FONT,
                    color="firebrick")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.4)
            spine.set_color("0.6")


__all__ = ["NPZ_KEYS", "gradcam_arrays", "gradcam_document", "gradcam_pages", "render_gradcam_pdf",
           "save_gradcam_npz", "target_label"]
