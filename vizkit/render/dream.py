"""``OUT/dream/`` of ``vizkit dream``: dream.npz, dream.pdf, html/ (the gallery), dream.manifest.json (last).

dream.pdf: page 1 starts with the provenance block (``page_one``), the method and the notes, then every image in
a grid, each labelled with its objective, its score (the objective on the final image, untransformed) and, with
``--data``, the largest value over the data; the grid continues on the following pages.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.dream import DreamResult
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import FONT, MARGIN, draw_picture, new_page, page_canvas, text_at
from vizkit.render.kit.pdf import built, write_pdf
from vizkit.render.kit.provenance import page_notes
from vizkit.render.writer import Document

MANIFEST = "dream.manifest.json"
NPZ_KEYS = ("objectives", "images", "scores", "reference", "alpha")
TILE = 1.62  # inches: one image in the grid
LABEL_H = 0.3  # two label lines under each image
GAP = 0.12
METHODS_TEXT = {
    "pixel": "pixels in [0, 1] (clipped), Adam",
    "fourier": "Fourier coefficients scaled by 1/f, decorrelated colour, sigmoid (Lucid's defaults), Adam",
    "maco": "phase only, under a fixed magnitude spectrum of natural photos (MACO), decorrelated colour, NAdam",
}


def dream_arrays(result: DreamResult) -> dict[str, np.ndarray]:
    """The npz content: ``objectives`` (N,) str, ``images`` (N, 3, H, W) float32 in [0, 1], ``scores`` and
    ``reference`` (N,) float32, and ``alpha`` (N, H, W) float32 when the method gives one."""
    n = len(result.objectives)
    images = np.asarray(result.images, dtype=np.float32)
    if images.ndim != 4 or images.shape[:2] != (n, 3):
        raise ValueError(f"images must be ({n}, 3, H, W), got {images.shape}")
    arrays = {"objectives": np.array(result.objectives, dtype=str), "images": images,
              "scores": np.asarray(result.scores, dtype=np.float32).reshape(n),
              "reference": np.asarray(result.reference, dtype=np.float32).reshape(n)}
    if result.alpha is not None:
        arrays["alpha"] = np.asarray(result.alpha, dtype=np.float32).reshape(n, *images.shape[2:])
    return arrays


def dream_document(result: DreamResult, info: ReportInfo) -> Document:
    return Document([("dream.npz", lambda p: write_npz(p, dream_arrays(result))),
                     ("dream.pdf", lambda p: render_dream_pdf(result, info, p)),
                     ("html", lambda p: write_gallery(result, info, p))], manifest=MANIFEST, folder="dream")


def render_dream_pdf(result: DreamResult, info: ReportInfo, path: Path) -> int:
    pages = [built(fig) for fig in dream_pages(result, info)]
    return write_pdf(path, pages, title=f"vizkit dream: {info.model}",
                     subject=f"feature visualisation of {len(set(result.objectives))} objectives of {info.model}",
                     keywords="feature visualisation, MACO, Fourier, dream", footer_left=f"{info.model} \u00b7 dream")


def tile_label(result: DreamResult, i: int) -> tuple[str, str]:
    """Two lines: the objective (with its class name, copy number when there are several) and the numbers."""
    copies = int(result.settings.get("diversity", 1) or 1)
    name = result.label(i) + (f" #{i % copies + 1}" if copies > 1 else "")
    numbers = f"score {float(result.scores[i]):.3g}"
    if np.isfinite(result.reference[i]):
        numbers += f" \u00b7 data max {float(result.reference[i]):.3g}"
    return name, numbers


def method_text(settings: dict) -> str:
    t = settings.get("transforms", {})
    start = settings.get("progressive")
    growth = f", growing from {float(start):.0%} of that by 3/4 of the steps" if start else ""
    return (f"{settings.get('method')}: {METHODS_TEXT.get(str(settings.get('method')), '')}; lr "
            f"{settings.get('lr')}, {settings.get('steps')} steps, canvas {settings.get('size')} px, views of "
            f"{settings.get('input_size')} px{growth}, seed "
            f"{settings.get('seed')}. Each step, {t.get('crops')} random views per image: pad {t.get('pad')} px, "
            f"jitter {t.get('jitter')} px, scale {t.get('scale')}, rotation \u00b1{t.get('angle')}\u00b0, crop box "
            f"{t.get('crop_box')}, noise {t.get('noise')}. Score: the objective on the final image, "
            "untransformed, at the model's input size.")


def dream_pages(result: DreamResult, info: ReportInfo) -> list[Figure]:
    """Page 1 (provenance, method, notes, the first rows of the grid) and the rest of the grid."""
    fig, c = page_one("dream", info, title=f"vizkit dream: {info.model}", compact=True)
    c.heading("Method")
    c.paragraph(method_text(result.settings), size=FONT - 0.5, color="0.25", max_lines=6)
    notes = page_notes(info, result.notes)
    if notes:
        c.heading("Notes")
        for note in notes:
            c.paragraph(f"\u2022 {note}", max_lines=3)
    figures = [fig]
    page_w, page_h = fig.get_size_inches()
    cols = max(1, int((page_w - 2 * MARGIN + GAP) // (TILE + GAP)))
    y, bottom = c.y + 0.15, page_h - MARGIN - 0.3
    canvas = page_canvas(fig)
    for row in range(math.ceil(len(result.objectives) / cols)):
        if y + TILE + LABEL_H > bottom:
            fig = new_page()
            figures.append(fig)
            canvas, y = page_canvas(fig), MARGIN
        for col in range(cols):
            i = row * cols + col
            if i < len(result.objectives):
                _tile(fig, canvas, result, i, MARGIN + col * (TILE + GAP), y)
        y += TILE + LABEL_H + GAP
    return figures


def _tile(fig: Figure, canvas: object, result: DreamResult, i: int, x: float, y: float) -> None:
    picture = np.clip(np.asarray(result.images[i], dtype=np.float32).transpose(1, 2, 0), 0, 1)
    draw_picture(canvas, picture, (x, y, TILE))  # type: ignore[arg-type]
    name, numbers = tile_label(result, i)
    width = int(TILE * 72 / (FONT - 1.5) * 1.7)  # characters that fit under the tile
    text_at(fig, x, y + TILE + 0.03, name if len(name) <= width else name[:width - 1] + "\u2026", size=FONT - 1)
    text_at(fig, x, y + TILE + 0.16, numbers, size=FONT - 1.5, color="0.35")


def png(image: np.ndarray, path: Path) -> None:
    """One (3, H, W) image in [0, 1] as a PNG."""
    from PIL import Image

    arr = (np.clip(np.asarray(image, dtype=np.float32).transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)


def write_gallery(result: DreamResult, info: ReportInfo, folder: Path) -> Path:
    """``html/index.html`` and ``html/img/dNNNN.png``: every image with its objective and numbers, offline."""
    from vizkit.render.kit.html import write_html_page

    images = folder / "img"
    images.mkdir(parents=True)
    tiles = []
    for i in range(len(result.objectives)):
        name = f"d{i:04d}.png"
        png(result.images[i], images / name)
        label, numbers = (html.escape(s) for s in tile_label(result, i))
        tiles.append(f'<div class="unit"><img src="img/{name}" alt="{label}"><br>{label}<br>'
                     f'<span class="summary">{numbers}</span></div>')
    notes = [f"<li>{html.escape(n)}</li>" for n in page_notes(info, result.notes)]
    body = [f'<p class="summary">{html.escape(method_text(result.settings))}</p>',
            *(["<ul>", *notes, "</ul>"] if notes else []), '<div class="units">', *tiles, "</div>"]
    return write_html_page(folder / "index.html", f"vizkit dream: {info.model}", body)


__all__ = ["MANIFEST", "NPZ_KEYS", "dream_arrays", "dream_document", "dream_pages", "png", "render_dream_pdf",
           "tile_label", "write_gallery"]
