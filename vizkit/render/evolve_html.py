"""html/ of ``vizkit evolve``: an offline gallery in the style of ``vizkit mine``'s: an index with the checkpoints
and the trends per layer, and one page per layer with the Fig. 4 grid (rows units, columns checkpoints).

Plain files opened from disk (relative links, PNGs in ``img/``, nothing remote); every page reports in ``<body
data-loaded="N/M">`` how many of its images the browser decoded, as the other galleries do (the shell:
``vizkit.render.kit.html``).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image

from vizkit.outputs.info import ReportInfo
from vizkit.project.evolution import LayerEvolution
from vizkit.project.results import EvolveResult
from vizkit.render.evolve import order_sentence
from vizkit.render.kit.display import normalise_projection
from vizkit.render.kit.html import write_html_page
from vizkit.render.kit.provenance import page_notes


def _layer_file(n: int) -> str:
    return f"layer{n:02d}.html"


def _png(folder: Path, name: str, picture: np.ndarray) -> str:
    Image.fromarray(np.ascontiguousarray(picture)).save(folder / "img" / name)
    return f"img/{name}"


def _fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.3g}"


def _trend_table(result: EvolveResult, evo: LayerEvolution) -> list[str]:
    rows = ["<table><tr><th>checkpoint</th><th>file</th><th>filter RMS median</th><th>RMS &gt; 0.1</th>"
            "<th>dead units</th><th>mean activation</th><th>top-1 unchanged</th><th>top-K set unchanged</th></tr>"]
    for t, (label, path) in enumerate(zip(result.labels(), result.checkpoints.paths, strict=True)):
        stable = _fmt(evo.stable[t - 1]) if t else ""
        same = _fmt(evo.topk_same[t - 1]) if t else ""
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(path.name)}</td>"
                    f"<td>{_fmt(evo.rms_median[t])}</td><td>{_fmt(evo.rms_above[t])}</td>"
                    f"<td>{int(evo.dead[t].sum())} / {evo.dead.shape[1]}</td><td>{_fmt(float(evo.mean[t].mean()))}"
                    f"</td><td>{stable}</td><td>{same}</td></tr>")
    return [*rows, "</table>"]


def _grid(folder: Path, n: int, result: EvolveResult, evo: LayerEvolution, patches: bool) -> list[str]:
    labels = result.labels()
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = [f'<table class="grid"><tr><th>unit</th>{head}</tr>']
    for u, ch in enumerate(result.units[evo.layer]):
        cells = []
        for t in range(len(labels)):
            cell = result.cells[evo.layer][t][u]
            if cell is None:
                cells.append("<td>no entry</td>")
                continue
            stem = f"l{n:02d}-c{ch:05d}-t{t:03d}"
            proj = _png(folder, f"{stem}-d.png", (normalise_projection(cell.projection) * 255).round().astype(np.uint8))
            pictures = f'<img src="{proj}" alt="projection">'
            if patches:
                pictures += f'<img src="{_png(folder, f"{stem}-p.png", cell.patch)}" alt="patch">'
            changed = t > 0 and bool(evo.top1_changed[t - 1, ch])
            mark = ' class="changed" title="top-1 image changed"' if changed else ""
            path = html.escape(result.paths[cell.image_index])
            cells.append(f'<td>{pictures}<br><span{mark}>{cell.value:.4g}</span><br>'
                         f'<small title="{path}">image {cell.image_index}</small></td>')
        rows.append(f"<tr><th>ch {ch}</th>{''.join(cells)}</tr>")
    return [*rows, "</table>"]


def write_evolve_html(result: EvolveResult, info: ReportInfo, folder: Path, *, patches: bool = False) -> Path:
    """Write the gallery into ``folder`` (created); returns ``folder/index.html``, which lists page 1's notes (what
    was ranked before a cap, the layers left out, image independence ...)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    notes = page_notes(info, result.notes)
    links = []
    for n, evo in enumerate(result.layers):
        body = ['<p><a href="index.html">index</a></p>',
                "<p>Each cell: the deconvnet projection of the unit's strongest activation over the dataset at that "
                "checkpoint (normalised on its own, grey = 0)" + (", the image patch" if patches else "")
                + ", its value and image. Red value: the top-1 image changed since the previous checkpoint.</p>",
                *_grid(folder, n, result, evo, patches), "<h2>Trends</h2>", *_trend_table(result, evo)]
        write_html_page(folder / _layer_file(n), f"{evo.layer} across checkpoints", body)
        links.append(f'<li><a href="{_layer_file(n)}">{html.escape(evo.layer)}</a>: '
                     f"{len(result.units[evo.layer])} units rendered; filters of {html.escape(evo.conv or 'none')}"
                     "</li>")
    skipped = [f"<li>{html.escape(p)}</li>" for p in result.skipped_checkpoints]
    checkpoints = [f"<li>{html.escape(label)}: {html.escape(str(p))}</li>"
                   for label, p in zip(result.labels(), result.checkpoints.paths, strict=True)]
    write_html_page(folder / "index.html", f"vizkit evolve: {info.model}", [
        f"<p>dataset {html.escape(str(info.settings.get('data')))}: {len(result.paths)} images, "
        f"{result.images_scanned} scanned, {len(result.skipped_images)} unreadable.</p>",
        f"<p>{html.escape(order_sentence(result))}.</p>", "<ol>", *checkpoints, "</ol>",
        f"<h2>Skipped checkpoints ({len(skipped)})</h2>", "<ul>", *skipped, "</ul>",
        "<h2>Layers</h2>", "<ul>", *links, "</ul>",
        *([f"<h2>Notes ({len(notes)})</h2>", "<ul>", *[f"<li>{html.escape(n)}</li>" for n in notes], "</ul>"]
          if notes else [])])
    return folder / "index.html"


__all__ = ["write_evolve_html"]
