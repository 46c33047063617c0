"""The mine gallery's layer pages: EVERY unit of a mined layer, not only the rendered ones, browsable at scale.

One card per unit, built by ``mine_browse.js`` from the page's JSON: its top image (the top patch for rendered
units, else a thumbnail of its top image), its dream (``--dream``), mean, firing rate, top value and dream score.
Images load only as they scroll into view (IntersectionObserver), so a layer of thousands of units opens at once.
Sort by mean, firing rate, top value, dream score or channel; find a channel by its number; with ``--per-class``,
show each unit's top image and value within one class (that class's data is a small script file loaded on demand,
so a thousand classes do not weigh on the page). The state lives in the URL (``#sort=rate&class=cat&find=12``).

The page reports in ``<body data-loaded="N/M">`` the images decoded of those requested so far and in
``data-cards`` the cards shown; nothing remote, no server.
"""
from __future__ import annotations

import html
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vizkit.render.kit.html import write_html_page

if TYPE_CHECKING:
    from vizkit.scan.topk import LayerTopK, MineResult

THUMB_PX = 96  # the side of a top-image thumbnail (the cards show 112 px)
THUMBS = "img"
SCRIPT = Path(__file__).with_name("mine_browse.js")
STYLE = """<style>
.controls { position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #ccc; z-index: 1; }
.controls label { margin-right: 1.2em; } #said { color: firebrick; }
.unit { width: 240px; font-size: small; } .unit.found { outline: 3px solid firebrick; }
.unit.rendered > a { font-weight: bold; }
</style>"""


def thumb_name(index: int) -> str:
    return f"{THUMBS}/t{index:07d}.jpg"


def read_thumbnail(path: str, px: int = THUMB_PX) -> np.ndarray | None:
    """The image at ``path`` centre-cropped to a square of ``px`` (H, W, 3) uint8, or None when it cannot be read
    (a file gone since the scan, or a bare tensor stream's ``#3``)."""
    from PIL import ImageOps

    from vizkit.load.images import load_image

    try:
        image = load_image(path)
    except Exception:  # noqa: BLE001 - a picture that cannot be read is left out, not the whole output
        return None
    return np.asarray(ImageOps.fit(image.convert("RGB"), (px, px)))


def write_thumbnails(folder: Path, paths: Sequence[str], indices: Iterable[int]) -> set[int]:
    """A ``read_thumbnail`` JPEG of each distinct image (``folder/img/t<index>.jpg``); returns the indices
    written."""
    from PIL import Image

    (folder / THUMBS).mkdir(parents=True, exist_ok=True)
    written = set()
    for i in sorted({int(i) for i in indices if 0 <= int(i) < len(paths)}):
        picture = read_thumbnail(paths[i])
        if picture is not None:
            Image.fromarray(picture).save(folder / thumb_name(i), quality=85)
            written.add(i)
    return written


def thumbnail_indices(result: MineResult) -> set[int]:
    """The images the layer pages show: every unit's top image, and with ``--per-class`` its top image per class."""
    wanted: set[int] = set()
    for state in result.layers.values():
        wanted.update(np.asarray(state.image_index)[:, 0].tolist() if state.image_index.size else [])
        if state.class_image_index is not None and state.class_image_index.size:
            wanted.update(np.unique(np.asarray(state.class_image_index)[:, :, 0]).tolist())
    return {i for i in wanted if i >= 0}


def _number(v: float) -> float | None:
    return float(f"{float(v):.5g}") if np.isfinite(v) else None


def unit_rows(state: LayerTopK, pictures: Mapping[int, str], pages: Mapping[int, str], dreams: Mapping[int, str],
              scores: Mapping[int, float], thumbs: Collection[int]) -> list[dict[str, object]]:
    """One JSON row per channel: c, mean, rate, top, dream (score or None), dead, img, dimg, page."""
    rows: list[dict[str, object]] = []
    for ch in range(state.values.shape[0]):
        top = int(state.image_index[ch, 0]) if state.image_index.shape[1] else -1
        img = pictures.get(ch) or (thumb_name(top) if top in thumbs else "")
        rows.append({"c": ch, "mean": _number(state.mean[ch]), "rate": _number(state.rate[ch]),
                     "top": _number(state.values[ch, 0]) if state.values.shape[1] else None,
                     "dream": _number(scores[ch]) if ch in scores else None, "dead": int(bool(state.dead[ch])),
                     "img": img, "dimg": dreams.get(ch, ""), "page": pages.get(ch, "")})
    return rows


def write_class_scripts(folder: Path, name: str, state: LayerTopK, thumbs: Collection[int]) -> None:
    """``folder/<name>/cNNNN.js`` per class: each channel's top value and top image index (-1: no thumbnail) in
    that class, or null where the class never reached the unit."""
    if state.class_values is None or state.class_image_index is None:
        return
    (folder / name).mkdir(parents=True, exist_ok=True)
    for k in range(state.class_values.shape[0]):
        entries = []
        for ch in range(state.class_values.shape[1]):
            index = int(state.class_image_index[k, ch, 0]) if state.class_image_index.shape[2] else -1
            value = _number(state.class_values[k, ch, 0]) if index >= 0 else None
            entries.append([value, index if index in thumbs else -1])
        (folder / name / f"c{k:04d}.js").write_text(f"vizkitClass('{k}', {json.dumps(entries)});\n",
                                                    encoding="utf-8")


def _controls(classes: Sequence[str] | None, has_dream: bool) -> str:
    sorts = [("mean", "mean activation"), ("rate", "firing rate"), ("top", "top value")]
    sorts += [("dream", "dream score")] if has_dream else []
    sorts += [("channel", "channel number")]
    options = "".join(f'<option value="{v}">{label}</option>' for v, label in sorts)
    names = "".join(f'<option value="{k}">{html.escape(c)}</option>' for k, c in enumerate(classes or []))
    pick = (f'<label>class <select id="class"><option value="">all classes</option>{names}</select></label>'
            if classes else '<select id="class" hidden><option value=""></option></select>')
    return (f'<div class="controls"><label>sort by <select id="sort">{options}</select></label>{pick}'
            '<label>find channel <input id="find" type="number" min="0" style="width: 6em"></label>'
            '<span id="said"></span></div>')


def write_layer_page(path: Path, title: str, intro: Sequence[str], rows: list[dict[str, object]],
                     classes: Sequence[str] | None, class_dir: str) -> Path:
    """The browsing page of one layer (see the module docstring)."""
    payload = {"units": rows, "classes": list(classes or []), "classDir": class_dir, "thumbs": THUMBS}
    text = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    has_dream = any(r["dream"] is not None for r in rows)
    body = [STYLE, *intro, _controls(classes, has_dream), '<div class="units" id="grid"></div>',
            f'<script type="application/json" id="units-data">{text}</script>']
    return write_html_page(path, title, body, script=f"<script>\n{SCRIPT.read_text(encoding='utf-8')}</script>")


__all__ = ["THUMB_PX", "read_thumbnail", "thumb_name", "thumbnail_indices", "unit_rows", "write_class_scripts",
           "write_layer_page", "write_thumbnails"]
