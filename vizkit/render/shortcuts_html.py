"""The shortcuts gallery: html/index.html with, per class (ranked), its spectrum and embedding, and per cluster the
mean map and exemplar tiles (picture and map, each box drawn) with the members' file names. Offline: relative
links only; ``<body data-loaded="N/M">`` reports how many images the browser decoded (for headless checks; the shell:
``vizkit.render.kit.html``)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.render.kit.glyphs import save_figure
from vizkit.render.kit.html import write_html_page
from vizkit.render.shortcuts import class_page


def _map_png(m: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int], path: Path) -> None:
    rgb = (colormaps["inferno"](m / (float(m.max()) or 1.0))[..., :3] * 255).astype(np.uint8)
    _save_with_box(rgb, box, input_hw, path)


def _save_with_box(rgb: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int], path: Path) -> None:
    h, w = rgb.shape[:2]
    scale = max(1, 112 // max(h, w))
    rgb = np.repeat(np.repeat(rgb, scale, 0), scale, 1).copy()
    scales = (rgb.shape[0] / input_hw[0], rgb.shape[1] / input_hw[1]) * 2
    y0, x0, y1, x1 = (int(v * s) for v, s in zip(box, scales, strict=True))
    y1, x1 = min(y1, rgb.shape[0]) - 1, min(x1, rgb.shape[1]) - 1
    cyan = np.array([0, 255, 255], np.uint8)
    rgb[y0, x0:x1 + 1] = rgb[y1, x0:x1 + 1] = cyan
    rgb[y0:y1 + 1, x0] = rgb[y0:y1 + 1, x1] = cyan
    Image.fromarray(rgb).save(path)


def write_gallery(folder: Path, result: ShortcutsResult, pictures: dict[int, np.ndarray]) -> Path:
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><td>{r + 1}</td><td>{a.class_index}</td><td style='text-align:left'><a href='#c{a.class_index}'>"
        f"{html.escape(a.name)}</a></td><td>{a.images.size}</td><td>{len(a.clusters)}</td>"
        f"<td>{a.spectral.eigengap:.3f}</td><td>{a.suspicion:.4f}</td><td>{'yes' if a.flagged else ''}</td></tr>"
        for r, a in enumerate(result.classes))
    body = ["<table><tr><th>rank</th><th>class</th><th>name</th><th>images</th><th>clusters</th><th>eigengap</th>"
            f"<th>suspicion</th><th>flagged</th></tr>{rows}</table>"]
    for a in result.classes:
        body.append(f"<section id='c{a.class_index}'><h2>Class {a.class_index}: {html.escape(a.name)}</h2>")
        page = f"class{a.class_index}.png"
        save_figure(class_page(result, a), img / page, dpi=70)
        body.append(f"<figure><img src='img/{page}' alt='spectrum and embedding of class {a.class_index}'></figure>")
        for k, cl in enumerate(a.clusters):
            tag = f"c{a.class_index}_{k}"
            _map_png(cl.mean_map, cl.box, result.input_hw, img / f"{tag}_mean.png")
            css = " class='compact'" if cl.compact else ""
            body.append(f"<h3{css}>Cluster {k}: {cl.size} images, box {list(cl.box)}, relevance in box "
                        f"{cl.relevance_in_box:.2f}{'' if cl.reliance is None else f', reliance {cl.reliance:.2f}'}"
                        f"{', compact' if cl.compact else ''}</h3><div class='tiles'>"
                        f"<div class='tile'><img src='img/{tag}_mean.png' alt='mean map'>mean map</div>")
            for i in cl.exemplars:
                index = int(a.images[i])
                name = html.escape(Path(result.paths[index]).name)
                if index in pictures:
                    _save_with_box(pictures[index], cl.box, result.input_hw, img / f"{tag}_{index}.png")
                    body.append(f"<div class='tile'><img src='img/{tag}_{index}.png' alt='{name}'>{name}</div>")
                _map_png(result.display[index], cl.box, result.input_hw, img / f"{tag}_{index}_map.png")
                body.append(f"<div class='tile'><img src='img/{tag}_{index}_map.png' alt='map of {name}'>map</div>")
            body.append("</div>")
        body.append("</section>")
    method = f"{html.escape(result.method)}{' at ' + html.escape(result.layer) if result.layer else ''}"
    intro = f"<p>Method {method}; classes ranked by suspicion (see shortcuts.pdf page 1 for the definitions).</p>"
    return write_html_page(folder / "index.html", "vizkit shortcuts", [intro, *body])
