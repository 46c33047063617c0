"""The shortcuts gallery: html/index.html with, per class (ranked), why it was (not) flagged, its spectrum and
embedding, and per cluster its evidence, the mean map and exemplar tiles (picture and map, each box drawn) with
the members' file names. Offline: relative links only; ``<body data-loaded="N/M">`` reports how many images the
browser decoded (for headless checks; the shell: ``vizkit.render.kit.html``)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from vizkit.project.shortcuts.judge import ClassVerdict
from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.render.kit.glyphs import save_figure
from vizkit.render.kit.html import write_html_page
from vizkit.render.shortcuts_pages import class_page, evidence_line, why


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
        f"<tr><td>{r + 1}</td><td>{v.class_index}</td><td style='text-align:left'><a href='#c{v.class_index}'>"
        f"{html.escape(v.name)}</a></td><td>{v.images.size}</td><td>{len(v.clusters)}</td>"
        f"<td>{v.suspicion:.3f}</td><td>{'yes' if v.flagged else ''}</td></tr>"
        for r, v in enumerate(result.classes))
    body = ["<table><tr><th>rank</th><th>class</th><th>name</th><th>images</th><th>clusters</th>"
            f"<th>suspicion</th><th>flagged</th></tr>{rows}</table>"]
    for v in result.classes:
        body.append(f"<section id='c{v.class_index}'><h2>Class {v.class_index}: {html.escape(v.name)}</h2>")
        body.extend(f"<p>{html.escape(sentence)}</p>" for sentence in why(result, v))
        if v.warning:
            body.append(f"<p><b>Warning: {html.escape(v.warning)}.</b></p>")
        page = f"class{v.class_index}.png"
        save_figure(class_page(result, v), img / page, dpi=70)
        body.append(f"<figure><img src='img/{page}' alt='verdict, spectrum and embedding of class {v.class_index}'>"
                    "</figure>")
        for k in range(len(v.clusters)):
            body.extend(_cluster(result, v, k, img, pictures))
        body.append("</section>")
    method = f"{html.escape(result.method)}{' at ' + html.escape(result.layer) if result.layer else ''}"
    intro = f"<p>Method {method}; classes ranked by suspicion (see shortcuts.pdf page 1 for the definitions).</p>"
    return write_html_page(folder / "index.html", "vizkit shortcuts", [intro, *body])


def _cluster(result: ShortcutsResult, v: ClassVerdict, k: int, img: Path, pictures: dict[int, np.ndarray]
             ) -> list[str]:
    cl = v.clusters[k]
    view = result.view(v, cl)
    tag = f"c{v.class_index}_{k}"
    _map_png(view.mean_map, view.box, result.input_hw, img / f"{tag}_mean.png")
    flagged = result.cluster_flagged(cl)
    out = [f"<h3{' class=compact' if flagged else ''}>Cluster {k}: {cl.members.size} images, box {list(view.box)}"
           f"{', flagged' if flagged else ''}</h3><p>{html.escape(evidence_line(result, cl))}</p><div class='tiles'>"
           f"<div class='tile'><img src='img/{tag}_mean.png' alt='mean map'>mean map</div>"]
    for i in view.exemplars:
        index = int(v.images[i])
        name = html.escape(Path(result.paths[index]).name)
        if index in pictures:
            _save_with_box(pictures[index], view.box, result.input_hw, img / f"{tag}_{index}.png")
            out.append(f"<div class='tile'><img src='img/{tag}_{index}.png' alt='{name}'>{name}</div>")
        _map_png(result.display[index], view.box, result.input_hw, img / f"{tag}_{index}_map.png")
        out.append(f"<div class='tile'><img src='img/{tag}_{index}_map.png' alt='map of {name}'>map</div>")
    out.append("</div>")
    return out
