"""OUT/shortcuts/ of ``vizkit shortcuts``: shortcuts.json, shortcuts.npz, shortcuts.pdf, html/
(``vizkit.render.shortcuts_html``) and shortcuts.manifest.json (last), written by the one writer
(``vizkit.render.writer.write_outputs``) atomically: a failed run leaves the previous folder as it was.

shortcuts.pdf: a summary page ranking the classes by suspicion, then per flagged class (or, when none is, the most
suspicious ones) why (``shortcuts_pages``): its verdict and evidence, spectrum and embedding, and per cluster its
figures, mean map with its box and 8 exemplars with their maps. Figures only (no pyplot).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vizkit.outputs.info import ReportInfo
from vizkit.outputs.npz import write_npz
from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.render.kit.first_page import page_one
from vizkit.render.kit.pdf import write_pdf
from vizkit.render.kit.provenance import notes_block, page_notes
from vizkit.render.shortcuts_pages import CLUSTERS_PER_PAGE, class_page, cluster_page
from vizkit.render.writer import Document

MANIFEST = "shortcuts.manifest.json"

EXPLAIN = ("Maps: {method}{layer}, one per image for its class, pooled to a {side}x{side} grid and normalised to "
           "unit sum. SpRAy per class: k-nearest-neighbour graph, normalised Laplacian, k from the eigengap; "
           "clusters whose evidence shares a place and a pattern are merged, a cluster whose pattern only some "
           "members carry is split. Per cluster (region: the fewest cells holding half its mean map, grown by one "
           "cell): transplant gain and flip rate (the members' patches and their mean pasted on other classes' "
           "images, against pasting another image's content), deletion (the region set to the normalisation's "
           "mean on the members), content consistency (members against non-members in the region), relevance "
           "in the region. Score: a logistic combination of these, weights fitted on half of a family of labs "
           "and checked on the other half; a class's suspicion is its best cluster's score, flagged at >= {flag:.3f}.")


def summary_page(result: ShortcutsResult, info: ReportInfo | None = None) -> Figure:
    """Page 1: the provenance block, what was done, the classes ranked by suspicion, then the notes."""
    fig, c = page_one("shortcuts", info, title="vizkit shortcuts: which classes rely on a shortcut?")
    c.heading("Method")
    side = result.pooled.shape[-1]
    c.paragraph(EXPLAIN.format(method=result.method, layer=f" at {result.layer}" if result.layer else "", side=side,
                               flag=result.thresholds.flag))
    c.heading("Classes ranked by suspicion")
    rows = []
    for r, v in enumerate(result.classes):
        e = v.top.evidence if v.top is not None else None
        figures = ("", "", "") if e is None else (f"{100 * e.flip_mean:+.0f}%", f"{e.deletion:+.2f}",
                                                  f"{e.consistency:+.2f}")
        rows.append((r + 1, v.class_index, v.name[:24], v.images.size, len(v.clusters), f"{v.suspicion:.3f}",
                     *figures, "yes" if v.flagged else ""))
    c.table(["rank", "class", "name", "images", "clusters", "suspicion", "flip", "deletion", "consist.", "flagged"],
            rows, [0.3, 0.8, 0.9, 3.0, 3.6, 4.3, 4.9, 5.5, 6.1, 6.7], ["right", "right", "left", "right", "right",
                                                                          "right", "right", "right", "right", "right"],
            max_rows=20 if info is not None else 50)
    notes = [f"Warning: {v.warning}." for v in result.classes if v.warning][:3]
    if result.skipped:
        notes.append(f"{len(result.skipped)} unreadable file(s) skipped (listed in the manifest).")
    if info is None:
        for note in notes:
            c.paragraph(note)
        return fig
    notes_block(c, page_notes(info, notes), max_lines=4)
    return fig


def page_builders(result: ShortcutsResult, pictures: dict[int, np.ndarray], info: ReportInfo | None = None
                  ) -> Iterator[Callable[[], Figure]]:
    yield partial(summary_page, result, info)
    for v in result.detailed():
        yield partial(class_page, result, v)
        for first in range(0, len(v.clusters), CLUSTERS_PER_PAGE):
            yield partial(cluster_page, result, v, first, pictures)


def write_shortcuts_pdf(path: Path, result: ShortcutsResult, info: ReportInfo) -> int:
    """shortcuts.pdf through the one PDF writer; returns its page count."""
    return write_pdf(path, list(page_builders(result, result.pictures, info)), title=f"vizkit shortcuts: {info.model}",
                     subject=f"SpRAy clusters, transplant and deletion evidence, suspicion by class, {info.model}",
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


__all__ = ["MANIFEST", "npz_arrays", "page_builders", "shortcuts_document", "summary_page", "write_shortcuts_pdf"]
