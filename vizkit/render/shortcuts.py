"""OUT/shortcuts/ of ``vizkit shortcuts``: shortcuts.json, shortcuts.npz, shortcuts.pdf, html/
(``vizkit.render.shortcuts_html``) and shortcuts.manifest.json (last), written by the one writer
(``vizkit.render.writer.write_outputs``) atomically: a failed run leaves the previous folder as it was.

shortcuts.pdf: a summary page ranking the classes, then per flagged class (or the top one when none is) its
eigenvalue spectrum, t-SNE embedding coloured by cluster, and per cluster the mean map with its box and 8 exemplars
with their maps. Figures only (no pyplot).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.shortcuts.clusters import ClassAnalysis
from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.page import MARGIN, Cursor, new_page
from vizkit.render.kit.pdf import write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes
from vizkit.render.writer import Document

MANIFEST = "shortcuts.manifest.json"

CLUSTERS_PER_PAGE = 4
EXPLAIN = ("Maps: {method}{layer}, one per image for its class, pooled to a {side}x{side} grid and normalised to "
           "unit sum. SpRAy: symmetrised k-nearest-neighbour graph, normalised Laplacian, clusters from the eigengap; "
           "clusters whose members carry a small spot at a fixed place are split off. A cluster is compact when its "
           "half-maximum region covers at most a tenth of the image, 3/4 of its members have their own strongest "
           "evidence there, and removing the region costs the members a median of at least 0.25 of class probability "
           "(reliance). Suspicion = eigengap x (median member share in the region - region area) x reliance of the "
           "best compact cluster; flagged = has a compact cluster.")


def pages_to_show(result: ShortcutsResult) -> list[ClassAnalysis]:
    flagged = [c for c in result.classes if c.flagged]
    return flagged or result.classes[:1]


def summary_page(result: ShortcutsResult, info: ReportInfo | None = None) -> Figure:
    """Page 1: the provenance block, what was done, the classes ranked by suspicion, then the notes."""
    fig, c = page_one("shortcuts", info, title="vizkit shortcuts: which classes rely on a shortcut?")
    c.heading("Method")
    side = result.pooled.shape[-1]
    c.paragraph(EXPLAIN.format(method=result.method, layer=f" at {result.layer}" if result.layer else "", side=side))
    c.heading("Classes ranked by suspicion")
    rows = [(r + 1, a.class_index, a.name[:28], a.images.size, len(a.clusters), f"{a.spectral.eigengap:.3f}",
             f"{a.suspicion:.4f}", "yes" if a.flagged else "")
            for r, a in enumerate(result.classes)]
    c.table(["rank", "class", "name", "images", "clusters", "eigengap", "suspicion", "flagged"], rows,
            [0.3, 0.8, 0.9, 3.3, 4.0, 4.8, 5.7, 6.5], ["right", "right", "left", "right", "right", "right", "right",
                                                         "right"], max_rows=20 if info is not None else 50)
    skipped = [f"{len(result.skipped)} unreadable file(s) skipped (listed in the manifest)."] if result.skipped else []
    if info is None:
        for note in skipped:
            c.paragraph(note)
        return fig
    notes_block(c, page_notes(info, skipped), max_lines=2)
    return fig


def class_page(result: ShortcutsResult, a: ClassAnalysis) -> Figure:
    fig = new_page()
    width = fig.get_size_inches()[0] - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(f"Class {a.class_index} '{a.name}': {a.images.size} images, {len(a.clusters)} clusters, "
           f"eigengap {a.spectral.eigengap:.3f}, suspicion {a.suspicion:.4f}", size=11, weight="bold")
    ev = a.spectral.eigenvalues[:20]
    ax = fig.add_axes((0.08, 0.58, 0.38, 0.33))
    ax.bar(np.arange(1, ev.size + 1), ev, color=["C3" if i < a.spectral.k else "0.5" for i in range(ev.size)])
    ax.set_title("normalised Laplacian eigenvalues (red: k from the eigengap)", fontsize=8)
    ax.tick_params(labelsize=6)
    ax = fig.add_axes((0.55, 0.58, 0.38, 0.33))
    emb = a.spectral.embedding
    for k in range(len(a.clusters)):
        sel = a.spectral.labels == k
        ax.scatter(emb[sel, 0], emb[sel, 1], s=6, color=f"C{k % 10}",
                   label=f"{k}: {sel.sum()}{' compact' if a.clusters[k].compact else ''}")
    ax.set_title("t-SNE of the maps, coloured by cluster", fontsize=8)
    ax.legend(fontsize=6, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def cluster_page(result: ShortcutsResult, a: ClassAnalysis, first: int, pictures: dict[int, np.ndarray]) -> Figure:
    fig = new_page()
    clusters = a.clusters[first:first + CLUSTERS_PER_PAGE]
    h = 0.9 / CLUSTERS_PER_PAGE
    for row, cl in enumerate(clusters):
        top = 0.95 - row * h
        fig.text(0.05, top, f"class {a.class_index} cluster {first + row}: {cl.size} images, box {list(cl.box)}, "
                 f"relevance in box {cl.relevance_in_box:.2f}"
                 + ("" if cl.reliance is None else f", reliance {cl.reliance:.2f}")
                 + f", {'COMPACT' if cl.compact else 'not compact'}",
                 fontsize=7.5, weight="bold" if cl.compact else "normal", va="top")
        tile = min(0.095, (h - 0.04) / 2)
        ax = fig.add_axes((0.05, top - 0.02 - 2 * tile, 2 * tile * 11.69 / 8.27 * 0.7, 2 * tile))
        _map(ax, cl.mean_map, cl.box, result.input_hw, "mean map")
        for e, i in enumerate(cl.exemplars[:8]):
            index = int(a.images[i])
            x = 0.25 + e * 0.09
            ax = fig.add_axes((x, top - 0.02 - tile, 0.085, tile))
            ax.imshow(pictures.get(index, np.zeros((2, 2, 3), np.uint8)))
            ax.set_axis_off()
            ax.set_title(Path(result.paths[index]).name[:16], fontsize=5)
            ax = fig.add_axes((x, top - 0.025 - 2 * tile, 0.085, tile))
            _map(ax, result.display[index], cl.box, result.input_hw, "")
    return fig


def _map(ax: Axes, m: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int], title: str) -> None:
    ax.imshow(m, cmap="inferno", vmin=0, vmax=float(m.max()) or 1.0)
    sy, sx = m.shape[0] / input_hw[0], m.shape[1] / input_hw[1]
    y0, x0, y1, x1 = box
    ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0) * sx, (y1 - y0) * sy, fill=False,
                           edgecolor="cyan", lw=0.8))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=6)


def page_builders(result: ShortcutsResult, pictures: dict[int, np.ndarray], info: ReportInfo | None = None
                  ) -> Iterator[Callable[[], Figure]]:
    yield partial(summary_page, result, info)
    for a in pages_to_show(result):
        yield partial(class_page, result, a)
        for first in range(0, len(a.clusters), CLUSTERS_PER_PAGE):
            yield partial(cluster_page, result, a, first, pictures)


def write_shortcuts_pdf(path: Path, result: ShortcutsResult, info: ReportInfo) -> int:
    """shortcuts.pdf through the one PDF writer; returns its page count."""
    return write_pdf(path, list(page_builders(result, result.pictures, info)), title=f"vizkit shortcuts: {info.model}",
                     subject=f"SpRAy clusters of attribution maps, classes ranked by shortcut suspicion, {info.model}",
                     keywords="shortcuts, Clever Hans, SpRAy, spectral relevance analysis, attribution",
                     footer_left=f"shortcuts \u00b7 {info.model}")


def npz_arrays(result: ShortcutsResult) -> dict[str, np.ndarray]:
    """The arrays of shortcuts.npz (``ShortcutsResult.npz_arrays``)."""
    return result.npz_arrays()


def _write_json(result: ShortcutsResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")


def shortcuts_document(result: ShortcutsResult, info: ReportInfo) -> Document:
    """``shortcuts/``: shortcuts.json, shortcuts.npz, shortcuts.pdf, html/, then shortcuts.manifest.json."""
    from vizkit.render.shortcuts_html import write_gallery

    return Document([("shortcuts.json", lambda p: _write_json(result, p)),
                     ("shortcuts.npz", lambda p: write_npz(p, npz_arrays(result))),
                     ("shortcuts.pdf", lambda p: write_shortcuts_pdf(p, result, info)),
                     ("html", lambda p: write_gallery(p, result, result.pictures))],
                    manifest=MANIFEST, folder="shortcuts")


__all__ = ["MANIFEST", "class_page", "cluster_page", "npz_arrays", "page_builders", "shortcuts_document",
           "summary_page", "write_shortcuts_pdf"]
