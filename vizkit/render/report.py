"""One report per image from many methods' pages: a PDF with a table of contents, and a static HTML gallery.

Both carry the same content: every page is a matplotlib Figure; the PDF embeds them, the HTML shows each as a PNG
next to its section heading. The HTML needs no server and no network (relative links only), and reports in
``<body data-loaded="N/M">`` how many of its images the browser decoded, so a headless browser can check it.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from vizkit.render.info import vizkit_version
from vizkit.render.pages import MARGIN, Cursor, footer, new_page


@dataclass
class Section:
    """A titled group of pages. ``pages`` are built lazily so a long report never holds all figures at once."""

    title: str
    pages: list[Callable[[], Figure]] = field(default_factory=list)
    level: int = 1  # 1: a part of the report; 2: a sub-section (one layer)
    summary: str = ""


def _toc_page(title: str, subtitle: str, sections: Sequence[Section], first_pages: list[int]) -> Figure:
    fig = new_page()
    width = fig.get_size_inches()[0] - 2 * MARGIN
    c = Cursor(fig, MARGIN, MARGIN, width)
    c.line(title, size=14, weight="bold")
    c.paragraph(subtitle)
    c.heading("Contents")
    for section, page in zip(sections, first_pages, strict=True):
        indent = 0.25 * (section.level - 1)
        c.text(c.x + indent, section.title, weight="bold" if section.level == 1 else "normal")
        c.text(c.x + width, str(page), ha="right")
        c.y += 0.17
        if section.summary:
            c.paragraph(section.summary, size=6.5, indent=indent + 0.15, max_lines=2, color="0.3")
    return fig


def write_report(pdf_path: Path, html_folder: Path, title: str, subtitle: str, sections: Sequence[Section], *,
                 dpi: int = 90) -> int:
    """The PDF (contents page, then every section's pages, numbered) and the HTML gallery of the same pages.

    Each page is built once and saved twice (PDF page and PNG): building a page costs more than saving it.
    Returns the PDF's page count."""
    first_pages, page = [], 2
    for section in sections:
        first_pages.append(page)
        page += len(section.pages)
    total = page - 1
    footer_text = f"vizkit {vizkit_version()} \u00b7 {title}"
    images = html_folder / "img"
    images.mkdir(parents=True, exist_ok=True)
    nav, body, number = [], [], 1
    with PdfPages(pdf_path, metadata={"Title": title, "Creator": f"vizkit {vizkit_version()}"}) as pdf:
        fig = _toc_page(title, subtitle, sections, first_pages)
        footer(fig, footer_text, 1, total)
        pdf.savefig(fig)
        for s, section in enumerate(sections):
            anchor = f"s{s}"
            nav.append(f'<li class="l{section.level}"><a href="#{anchor}">{html.escape(section.title)}</a></li>')
            tag = "h2" if section.level == 1 else "h3"
            body.append(f'<section id="{anchor}"><{tag}>{html.escape(section.title)}</{tag}>')
            if section.summary:
                body.append(f'<p class="summary">{html.escape(section.summary)}</p>')
            for make in section.pages:
                number += 1
                fig = make()
                footer(fig, footer_text, number, total)
                pdf.savefig(fig)
                name = f"p{number:03d}.png"
                fig.savefig(images / name, dpi=dpi)
                alt = html.escape(f"{section.title}, page {number}")
                body.append(f'<figure><img src="img/{name}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')
            body.append("</section>")
    _write_index(html_folder, title, subtitle, nav, body)
    return total


#: Counts the images that loaded (the Chromium tests read it), in every offline gallery.
LOADED_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-loaded', ok + '/' + imgs.length);
  document.getElementById('loaded').textContent = ok + ' of ' + imgs.length + ' images loaded';
});
</script>"""

_STYLE = """<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
nav li.l2 { margin-left: 1.5em; list-style: circle; }
figure { margin: 1em 0 2em; } figure img { width: 100%; border: 1px solid #ccc; }
.summary { color: #555; } #loaded { color: #888; font-size: small; }
</style>"""


def _write_index(folder: Path, title: str, subtitle: str, nav: list[str], body: list[str]) -> Path:
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", _STYLE, "</head><body>",
        f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(subtitle)}</p>", '<p id="loaded"></p>',
        "<nav><h2>Contents</h2><ul>", *nav, "</ul></nav>", *body,
        f"<footer><p>vizkit {html.escape(vizkit_version())}</p></footer>", LOADED_SCRIPT, "</body></html>",
    ])
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
