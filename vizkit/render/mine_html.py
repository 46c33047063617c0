"""html/: an offline gallery of the mined units: index -> one page per layer listing every unit
(``vizkit.render.mine_browse``) -> one page per rendered unit (with ``--dream``, what it wants; with ``--rank
relevance``, its conditional heatmaps: ``vizkit.render.mine_relevance_html``).

Plain files opened from disk: relative links, images as PNG files in ``img/``, the histogram as inline SVG, nothing
remote and no server. Every page reports in ``<body data-loaded="N/M">`` how many of its images the browser decoded,
so a headless browser can check it (the shell: ``vizkit.render.kit.html``).
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vizkit.outputs.info import ReportInfo
from vizkit.project.mine_projection import UnitTopProjections
from vizkit.render.kit.display import normalise_projection
from vizkit.render.kit.html import write_html_page
from vizkit.render.mine_browse import (
    thumbnail_indices,
    unit_rows,
    write_class_scripts,
    write_layer_page,
    write_thumbnails,
)
from vizkit.render.mine_pages import dream_picture, summary_lines

if TYPE_CHECKING:
    from vizkit.project.mine_heatmaps import UnitHeatmaps
    from vizkit.project.results import LayerDreams
    from vizkit.scan.topk import LayerTopK, MineResult


def _layer_file(n: int) -> str:
    return f"layer{n:02d}.html"


def _unit_file(n: int, channel: int) -> str:
    return f"layer{n:02d}-unit{channel:05d}.html"


def _save_pictures(folder: Path, n: int, unit: UnitTopProjections) -> list[tuple[str, str]]:
    """Write each entry's projection and patch as PNG; return their (projection, patch) paths relative to html/."""
    names = []
    for r, entry in enumerate(unit.entries):
        stem = f"img/l{n:02d}-c{unit.channel:05d}-{r:02d}"
        picture = (normalise_projection(entry.projection) * 255).round().astype(np.uint8)
        Image.fromarray(picture).save(folder / f"{stem}-d.png")
        Image.fromarray(np.ascontiguousarray(entry.patch)).save(folder / f"{stem}-p.png")
        names.append((f"{stem}-d.png", f"{stem}-p.png"))
    return names


def histogram_svg(values: np.ndarray, mean: float, width: int = 360, height: int = 120) -> str:
    """Inline SVG: histogram of the unit's top-K activations (what the scan keeps), the dataset mean marked."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "<p>no activations</p>"
    lo, hi = min(float(values.min()), mean, 0.0), max(float(values.max()), mean)
    hi = hi if hi > lo else lo + 1.0
    counts, edges = np.histogram(values, bins=min(10, max(values.size, 1)), range=(lo, hi))
    sx = lambda v: 10 + (width - 20) * (v - lo) / (hi - lo)  # noqa: E731
    bar = lambda c: 80 * c / counts.max()  # noqa: E731
    bars = [f'<rect x="{sx(a):.1f}" y="{height - 20 - bar(c):.1f}" width="{max(sx(b) - sx(a) - 1, 1):.1f}" '
            f'height="{bar(c):.1f}" fill="#4a7bb7"><title>{c} in [{a:.4g}, {b:.4g})</title></rect>'
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True) if c]
    marks = [f'<line x1="{sx(mean):.1f}" x2="{sx(mean):.1f}" y1="10" y2="{height - 20}" stroke="firebrick"/>',
             f'<text x="{sx(mean) + 3:.1f}" y="18" font-size="10" fill="firebrick">dataset mean {mean:.3g}</text>',
             f'<text x="10" y="{height - 5}" font-size="10">{lo:.3g}</text>',
             f'<text x="{width - 10}" y="{height - 5}" font-size="10" text-anchor="end">{hi:.3g}</text>']
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="histogram of the top activations">{"".join(bars + marks)}</svg>')


def _unit_stats(state: LayerTopK, channel: int) -> str:
    dead = " <span class=\"dead\">dead over the dataset</span>" if bool(state.dead[channel]) else ""
    return (f"mean activation {float(state.mean[channel]):.4g} &middot; firing rate "
            f"{100 * float(state.rate[channel]):.1f}%{dead}")


def _unit_page(folder: Path, n: int, layer: str, unit: UnitTopProjections, state: LayerTopK,
               pictures: list[tuple[str, str]], dream: str | None = None, score: float | None = None) -> None:
    body = [f'<p><a href="index.html">index</a> &rsaquo; <a href="{_layer_file(n)}">{html.escape(layer)}</a></p>',
            f"<p>{_unit_stats(state, unit.channel)}</p>"]
    if dream is not None:
        body += ["<h2>What it wants</h2>", f'<div class="entry"><img src="{dream}" alt="dream"><br>the image '
                 f"optimised to excite the channel's mean activation: score {score:.5g} (top value over the "
                 f"dataset {float(state.values[unit.channel, 0]):.5g}, a spatial maximum)</div>"]
    body += ["<h2>Top activations</h2>", histogram_svg(state.values[unit.channel], float(state.mean[unit.channel])),
             "<p>Histogram of the unit's top-K spatial maxima over the dataset (the scan keeps only these).</p>",
             '<div class="entries">']
    for r, (entry, (proj, patch)) in enumerate(zip(unit.entries, pictures, strict=True)):
        y0, y1, x0, x1 = entry.box
        body.append(f'<div class="entry"><img src="{proj}" alt="projection #{r + 1}"> '
                    f'<img src="{patch}" alt="patch #{r + 1}"><br>#{r + 1} value {entry.value:.5g} at '
                    f"{entry.position} &middot; box y {y0}:{y1}, x {x0}:{x1}<br>"
                    f"image {entry.image_index}: {html.escape(entry.path)}</div>")
    body.append("</div>")
    if not unit.entries:
        body.append("<p>no image activated this unit</p>")
    write_html_page(folder / _unit_file(n, unit.channel), f"{layer} channel {unit.channel}", body)


def _save_dreams(folder: Path, n: int, dreams: LayerDreams | None) -> tuple[dict[int, str], dict[int, float]]:
    """Each dream as ``img/lNN-cCCCCC-dream.png``: channel -> file, channel -> score."""
    if dreams is None:
        return {}, {}
    files, scores = {}, {}
    for u, ch in enumerate(int(c) for c in dreams.channels):
        files[ch] = f"img/l{n:02d}-c{ch:05d}-dream.png"
        Image.fromarray(dream_picture(dreams.images, u)).save(folder / files[ch])
        scores[ch] = float(dreams.scores[u])
    return files, scores


def _layer_page(folder: Path, result: MineResult, name: str, n: int, units: Sequence[UnitTopProjections],
                dreams: LayerDreams | None, thumbs: set[int], heatmaps: Sequence[UnitHeatmaps] = ()) -> int:
    """Every rendered unit's page (projections, or ``heatmaps`` of a relevance-ranked run) and the layer's browsing
    page; returns the number of rendered units."""
    from vizkit.render.mine_relevance_html import heatmap_unit_page

    state = result.layers[name]
    dream_files, scores = _save_dreams(folder, n, dreams)
    pictures, pages = {}, {}
    for unit in units:
        saved = _save_pictures(folder, n, unit)
        _unit_page(folder, n, name, unit, state, saved, dream_files.get(unit.channel), scores.get(unit.channel))
        pages[unit.channel] = _unit_file(n, unit.channel)
        if saved:
            pictures[unit.channel] = saved[0][1]
    for heat in heatmaps:
        pages[heat.channel] = _unit_file(n, heat.channel)
        top = heatmap_unit_page(folder, n, pages[heat.channel], _layer_file(n), heat, result)
        if top:
            pictures[heat.channel] = top
    shown = "conditional heatmaps" if heatmaps else "projections"
    rendered = len(units) + len(heatmaps)
    dead = int(np.count_nonzero(state.dead))
    per_class = f"layer{n:02d}-classes"
    write_class_scripts(folder, per_class, state, thumbs)
    intro = ['<p><a href="index.html">index</a></p>',
             f"<p>All {len(state.mean)} channels ({dead} dead), ranked by the {html.escape(state.ranked)}; "
             f"the {rendered} rendered ones link to their page "
             f"(top-K patches, {shown}" + (", what the unit wants" if dream_files else "") + "). A card shows "
             "the unit's top " + ("heatmap" if heatmaps else "patch") + " when it was rendered, else its top image"
             + (", and its dream (the image optimised to excite it)" if dream_files else "") + ".</p>"]
    write_layer_page(folder / _layer_file(n), f"Layer {name}", intro,
                     unit_rows(state, pictures, pages, dream_files, scores, thumbs), result.classes, per_class)
    return rendered


def write_mine_html(result: MineResult, units: Sequence[UnitTopProjections], info: ReportInfo,
                    folder: Path, dreams: Mapping[str, LayerDreams] | None = None, notes: Sequence[str] = (),
                    heatmaps: Sequence[UnitHeatmaps] = ()) -> Path:
    """Write the gallery into ``folder`` (created); returns ``folder/index.html``. ``dreams``: per layer, the
    rendered units' dreams (``--dream``). ``notes``: page 1's notes (what was ranked, ties, image independence
    ...), listed on the index too. ``heatmaps``: a relevance-ranked run's rendered units (instead of ``units``)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    thumbs = write_thumbnails(folder, result.paths, thumbnail_indices(result))
    rows = []
    for n, (name, state) in enumerate(result.layers.items()):
        rendered = _layer_page(folder, result, name, n, [u for u in units if u.layer == name],
                               (dreams or {}).get(name), thumbs, [h for h in heatmaps if h.layer == name])
        dead = int(np.count_nonzero(state.dead))
        rows.append(f'<tr><td><a href="{_layer_file(n)}">{html.escape(name)}</a></td><td>{len(state.mean)}</td>'
                    f"<td>{dead}</td><td>{rendered}</td></tr>")
    skipped = [f"<li>{html.escape(p)}: {html.escape(reason)}</li>" for p, reason in result.skipped]
    write_html_page(folder / "index.html", f"vizkit mine: {info.model}", [
        "<ul>", *[f"<li>{k}: {html.escape(v)}</li>" for k, v in summary_lines(result, info)], "</ul>",
        "<table><tr><th>layer</th><th>channels</th><th>dead</th><th>rendered</th></tr>", *rows, "</table>",
        "<p>Each layer's page lists every unit: sort, find a channel"
        + (", filter by class" if result.classes else "") + ".</p>",
        *([f"<h2>Notes ({len(notes)})</h2>", "<ul>", *[f"<li>{html.escape(n)}</li>" for n in notes], "</ul>"]
          if notes else []),
        f"<h2>Skipped files ({len(skipped)})</h2>", "<ul>", *skipped, "</ul>"])
    return folder / "index.html"
