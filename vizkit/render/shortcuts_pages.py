"""The per-class pages of shortcuts.pdf: why the class was (or was not) flagged, its spectrum and embedding, then
its clusters with their evidence, mean map and exemplars. Figures only (no pyplot)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vizkit.project.shortcuts.judge import ClassVerdict, ClusterVerdict
from vizkit.project.shortcuts.result import ShortcutsResult, contributions
from vizkit.render.kit.page import MARGIN, Cursor, new_page

CLUSTERS_PER_PAGE = 4
LABELS = {"concentration": "relevance in region", "consistency": "content consistency", "deletion": "deletion",
          "gain_own": "transplant gain (own patches)", "flip_own": "flip rate (own patches)",
          "gain_mean": "transplant gain (mean patch)", "flip_mean": "flip rate (mean patch)"}


def evidence_line(result: ShortcutsResult, c: ClusterVerdict) -> str:
    """One line of figures for a cluster."""
    if c.evidence is None:
        return f"{c.members.size} images: too few to judge"
    e = c.evidence
    line = (f"score {c.score:.3f}; region {100 * e.area:.0f}% of the image; transplant gain own {e.gain_own:+.2f} / "
            f"mean {e.gain_mean:+.2f} / pattern {e.gain_pattern:+.2f}, flip own {100 * e.flip_own:+.0f}% / mean "
            f"{100 * e.flip_mean:+.0f}% / pattern {100 * e.flip_pattern:+.0f}%; deletion "
            f"{e.deletion:+.2f}; consistency {e.consistency:+.2f}; relevance in region {e.concentration + e.area:.2f}"
            f" (area {e.area:.2f})")
    if c.tcav is not None:
        verdict = "significant" if c.tcav.significant else "not significant"
        line += f"; TCAV {c.tcav.score:.2f} (p = {c.tcav.p_value:.3g}, {verdict})"
    return line


def why(result: ShortcutsResult, v: ClassVerdict) -> list[str]:
    """The verdict in sentences: the deciding cluster's evidence, which figures pushed its score up or down."""
    top = v.top
    flag = result.thresholds.flag
    if top is None or top.evidence is None:
        return [f"Not flagged: no cluster of at least 3 images to judge ({v.images.size} images)."]
    k = v.clusters.index(top)
    e = top.evidence
    head = (f"{'FLAGGED' if v.flagged else 'Not flagged'}: cluster {k} ({top.members.size} of {v.images.size} images)"
            f" scores {top.score:.3f} {'>=' if v.flagged else '<'} the flag {flag:.3f}.")
    terms = sorted(contributions(e, result.thresholds).items(), key=lambda t: -abs(t[1]))
    push = ", ".join(f"{LABELS[f]} {t:+.2f}" for f, t in terms if abs(t) >= 0.05) or "none"
    lines = [head,
             "Pasted on other classes' images, the members' own patches raise "
             f"p(class) by {e.gain_own:+.2f} and flip {100 * e.flip_own:+.0f}% to the class; their mean patch by "
             f"{e.gain_mean:+.2f}, flipping {100 * e.flip_mean:+.0f}%; their shared pattern alone (the pixels where "
             f"they agree) by {e.gain_pattern:+.2f}, flipping {100 * e.flip_pattern:+.0f}% (all against pasting "
             "another image's content at the same place).",
             f"Deleting the region costs the members a median {e.deletion:+.2f} of p(class); the region's pixels are "
             f"{'alike' if e.consistency > 0.5 else 'not alike'} across members (consistency {e.consistency:+.2f}: 1 "
             f"one pattern, 0 as varied as anyone's); {100 * (e.concentration + e.area):.0f}% of a typical member's "
             f"evidence lies in the region, which covers {100 * e.area:.0f}% of the image.",
             f"Terms of the score's logit (weight x standardised figure): {push}."]
    if top.tcav is not None:
        t = top.tcav
        lines.append(f"TCAV at {t.layer}: the region's concept raises the class score for {100 * t.score:.0f}% of "
                     f"the class's images against {100 * float(np.mean(t.random_scores)):.0f}% for random concepts "
                     f"(t-test over {t.scores.size} runs, p = {t.p_value:.3g}: "
                     f"{'significant' if t.significant else 'not significant'}).")
    return lines


def spectrum(ax: Axes, v: ClassVerdict) -> None:
    """Eigenvalues as points (a zero eigenvalue is still visible), the chosen gap as a dashed line."""
    ev = v.spectral.eigenvalues[:20]
    x = np.arange(1, ev.size + 1)
    k = v.spectral.k
    ax.plot(x, ev, color="0.6", lw=0.6, zorder=1)
    ax.scatter(x, ev, s=10, color=["C3" if i < k else "0.4" for i in range(ev.size)], zorder=2)
    if 0 < k < ev.size:
        ax.axvline(k + 0.5, color="C3", ls="--", lw=0.8)
    ax.set_title(f"Laplacian eigenvalues; red: the first k = {k}, dashed: the gap used", fontsize=7.5)
    ax.tick_params(labelsize=6)
    ax.set_ylim(-0.05, max(0.2, float(ev.max()) * 1.1) if ev.size else 1)


def class_page(result: ShortcutsResult, v: ClassVerdict) -> Figure:
    fig = new_page()
    width = fig.get_size_inches()[0] - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(f"Class {v.class_index} '{v.name}': {v.images.size} images, suspicion {v.suspicion:.3f}",
           size=11, weight="bold")
    c.heading("Why")
    for sentence in why(result, v):
        c.paragraph(sentence)
    c.heading("Clusters")
    c.paragraph(f"{v.spectral.reason}. Merged and split: {v.split_merge()}.")
    if v.warning:
        c.paragraph(f"Warning: {v.warning}.", weight="bold")
    top = 1 - (c.y + 0.3) / fig.get_size_inches()[1]
    h = min(0.3, top - 0.08)
    spectrum(fig.add_axes((0.08, top - h, 0.38, h)), v)
    ax = fig.add_axes((0.55, top - h, 0.38, h))
    emb = v.spectral.embedding
    for k, cl in enumerate(v.clusters):
        ax.scatter(emb[cl.members, 0], emb[cl.members, 1], s=6, color=f"C{k % 10}",
                   label=f"{k}: {cl.members.size}{' flagged' if result.cluster_flagged(cl) else ''}")
    ax.set_title("t-SNE of the maps, coloured by merged cluster", fontsize=7.5)
    if v.clusters:
        ax.legend(fontsize=6, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def cluster_page(result: ShortcutsResult, v: ClassVerdict, first: int, pictures: dict[int, np.ndarray]) -> Figure:
    fig = new_page()
    h = 0.9 / CLUSTERS_PER_PAGE
    for row, cl in enumerate(v.clusters[first:first + CLUSTERS_PER_PAGE]):
        top = 0.96 - row * h
        view = result.view(v, cl)
        flagged = result.cluster_flagged(cl)
        parts = "+".join(map(str, cl.group.parts)) + (f" ({cl.group.split})" if cl.group.split else "")
        fig.text(0.05, top, f"class {v.class_index} cluster {first + row} (spectral {parts}): {cl.members.size} "
                 f"images, box {list(view.box)}{', FLAGGED' if flagged else ''}", fontsize=7.5,
                 weight="bold" if flagged else "normal", va="top")
        fig.text(0.05, top - 0.014, evidence_line(result, cl), fontsize=6, va="top", wrap=True)
        tile = min(0.085, (h - 0.05) / 2)
        ax = fig.add_axes((0.05, top - 0.035 - 2 * tile, 2 * tile * 11.69 / 8.27 * 0.7, 2 * tile))
        draw_map(ax, view.mean_map, view.box, result.input_hw, "mean map")
        for e, i in enumerate(view.exemplars[:8]):
            index = int(v.images[i])
            x = 0.25 + e * 0.09
            ax = fig.add_axes((x, top - 0.035 - tile, 0.085, tile))
            ax.imshow(pictures.get(index, np.zeros((2, 2, 3), np.uint8)))
            ax.set_axis_off()
            ax.set_title(Path(result.paths[index]).name[:16], fontsize=5)
            ax = fig.add_axes((x, top - 0.04 - 2 * tile, 0.085, tile))
            draw_map(ax, result.display[index], view.box, result.input_hw, "")
    return fig


def draw_map(ax: Axes, m: np.ndarray, box: tuple[int, int, int, int], input_hw: tuple[int, int], title: str) -> None:
    ax.imshow(m, cmap="inferno", vmin=0, vmax=float(m.max()) or 1.0)
    sy, sx = m.shape[0] / input_hw[0], m.shape[1] / input_hw[1]
    y0, x0, y1, x1 = box
    ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0) * sx, (y1 - y0) * sy, fill=False,
                           edgecolor="cyan", lw=0.8))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=6)


__all__ = ["CLUSTERS_PER_PAGE", "class_page", "cluster_page", "draw_map", "evidence_line", "spectrum", "why"]
