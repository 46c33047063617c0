"""The per-image folder of ``vizkit report``: report.pdf (contents, then every method's pages), html/ (the same
pages as a static gallery), deconv.npz and report.manifest.json last. Each command's own page builders are reused.

Both carry the same content: every page is a matplotlib Figure; the PDF embeds them, the HTML shows each as a PNG
next to its section heading. The HTML needs no server and no network (relative links only), and reports in
``<body data-loaded="N/M">`` how many of its images the browser decoded, so a headless browser can check it.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vizkit.outputs.info import ReportInfo
from vizkit.project.results import ReportResult
from vizkit.render.deconv import save_deconv_npz
from vizkit.render.kit.glyphs import save_figure
from vizkit.render.writer import Document

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vizkit.render.kit.pdf import PageMaker

MANIFEST = "report.manifest.json"


@dataclass
class Section:
    """A titled group of pages. ``pages`` are built lazily so a long report never holds all figures at once."""

    title: str
    pages: list[Callable[[], Figure]] = field(default_factory=list)
    level: int = 1  # 1: a part of the report; 2: a sub-section (one layer)
    summary: str = ""


def _toc_page(title: str, subtitle: str, sections: Sequence[Section], first_pages: list[int],
              info: ReportInfo | None) -> Figure:
    """Page 1: the header every command's page 1 has (provenance block, short), then the contents."""
    from vizkit.render.kit.first_page import page_one

    fig, c = page_one("report", info, title=title, compact=True)
    c.paragraph(subtitle)
    c.heading("Contents")
    for section, page in zip(sections, first_pages, strict=True):
        indent = 0.25 * (section.level - 1)
        c.text(c.x + indent, section.title, weight="bold" if section.level == 1 else "normal")
        c.text(c.x + c.width, str(page), ha="right")
        c.y += 0.17
        if section.summary:
            c.paragraph(section.summary, size=6.5, indent=indent + 0.15, max_lines=2, color="0.3")
    return fig


def write_report(pdf_path: Path, html_folder: Path, title: str, subtitle: str, sections: Sequence[Section], *,
                 info: ReportInfo | None = None, dpi: int = 90) -> int:
    """The PDF (contents page, then every section's pages, numbered) and the HTML gallery of the same pages.

    Each page is built once and saved twice (PDF page and PNG): building a page costs more than saving it.
    Returns the PDF's page count."""
    from vizkit.render.kit.html import write_html_page
    from vizkit.render.kit.pdf import write_pdf

    first_pages, page = [], 2
    for section in sections:
        first_pages.append(page)
        page += len(section.pages)
    images = html_folder / "img"
    images.mkdir(parents=True, exist_ok=True)
    pages: list[PageMaker] = [partial(_toc_page, title, subtitle, sections, first_pages, info)]
    nav, body, pending = [], [f"<p>{html.escape(subtitle)}</p>"], []
    before: dict[int, tuple[str, list[str]]] = {}  # page number -> (its section's title, gallery HTML before it)
    for s, section in enumerate(sections):
        nav.append(f'<li class="l{section.level}"><a href="#s{s}">{html.escape(section.title)}</a></li>')
        tag = "h2" if section.level == 1 else "h3"
        pending.append(f'<section id="s{s}"><{tag}>{html.escape(section.title)}</{tag}>')
        if section.summary:
            pending.append(f'<p class="summary">{html.escape(section.summary)}</p>')
        for make in section.pages:
            pages.append(make)
            before[len(pages)], pending = (section.title, pending), []
        pending.append("</section>")

    def saved(number: int, fig: Figure) -> None:
        """After page ``number`` is in the PDF: its PNG and its entry in the gallery."""
        if number not in before:  # the contents page: the gallery has its own
            return
        section_title, opening = before[number]
        body.extend(opening)
        name = f"p{number:03d}.png"
        save_figure(fig, images / name, dpi=dpi)
        alt = html.escape(f"{section_title}, page {number}")
        body.append(f'<figure><img src="img/{name}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')

    total = write_pdf(pdf_path, pages, title=title, subject=subtitle, footer_left=title, saved=saved,
                      keywords="report, deconvnet, Grad-CAM, occlusion, filters")
    write_html_page(html_folder / "index.html", title,
                    ["<nav><h2>Contents</h2><ul>", *nav, "</ul></nav>", *body, *pending])
    return total


def report_sections(result: ReportResult, info: ReportInfo) -> list[Section]:
    """The report's sections in order, each a title and page builders (pages are built when written)."""
    from vizkit.render.activations import activation_page
    from vizkit.render.deconv import render_summary_page
    from vizkit.render.deconv_pages import layer_page_count, layer_page_makers
    from vizkit.render.filters import filters_page_makers
    from vizkit.render.gradcam import gradcam_pages
    from vizkit.render.kit.pdf import built
    from vizkit.render.occlusion import occlusion_pages
    from vizkit.render.sanity import sanity_pages

    deconv, image = result.deconv, result.deconv.image
    grids = {g.layer: g for g in result.grids}
    starts, page = [], 3  # page 1 contents, page 2 summary
    for lp in deconv.layers:
        starts.append(page)
        page += layer_page_count(lp) + (lp.layer in grids)
    sections = [Section("Summary", [partial(render_summary_page, deconv, info, first_layer_page=starts)],
                        summary="image, model, predictions, interception audit, notes")]
    for lp in deconv.layers:
        pages: list[PageMaker] = layer_page_makers(lp, image)
        if lp.layer in grids:
            pages.append(partial(activation_page, grids[lp.layer], image))
        sections.append(Section(f"Layer {lp.layer}", pages, level=2, summary=lp.note or (
            "deconvnet projections of the top feature maps; the strongest feature maps")))
    from vizkit.render.report_dream import dream_section_pages, dream_summary

    if result.dream is not None:
        sections.append(Section("What the units want (dream)", dream_section_pages(result),
                                summary=dream_summary(result)))
    cam = result.gradcam
    sections.append(Section(f"Grad-CAM and guided backprop ({cam.layer})",
                            [built(fig) for fig in gradcam_pages(cam, info)],
                            summary="which pixels drove the top class"))
    occ = result.occlusion
    name = Path(info.image_path or "image").name
    sections.append(Section("Occlusion", [built(fig) for fig in occlusion_pages(
        occ.maps, occ.image, occ.class_names, predictions=occ.predictions, notes=occ.notes, name=name)],
                            summary="activity, projection, class probability and label under a grey square"))
    if occ.sanity:
        sections.append(Section("Sanity checks", [built(fig) for fig in sanity_pages(occ.sanity)],
                                summary="cascading randomisation and image dependence of each method"))
    if result.attribution is not None:
        from vizkit.render.report_attribution import attribution_section

        sections.append(attribution_section(result.attribution))
    first = 2 + sum(len(section.pages) for section in sections)  # after the contents page
    sections.append(Section("Filters", filters_page_makers(result.filters.stats, pictured=result.filters.pictured,
                                                           first_page=first),
                            summary="learned filters, per-filter RMS, dead and dominant filters"))
    return sections


def report_document(result: ReportResult, info: ReportInfo) -> Document:
    name = Path(info.image_path or "image").name
    layers = ", ".join(lp.layer for lp in result.deconv.layers)
    title, subtitle = f"vizkit report: {name}", f"model {info.model} ({info.weights}); layers {layers}"

    def pdf_and_html(path: Path) -> None:
        write_report(path, path.parent / "html", title, subtitle, report_sections(result, info), info=info)

    return Document([("deconv.npz", lambda p: save_deconv_npz(result.deconv, p)), ("report.pdf", pdf_and_html)],
                    manifest=MANIFEST)


__all__ = ["MANIFEST", "Section", "report_document", "report_sections", "write_report"]
