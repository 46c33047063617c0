"""The one PDF writer: pages built one at a time (a long report never holds every figure), numbered footers,
metadata."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from vizkit.outputs.info import vizkit_version
from vizkit.render.kit.glyphs import fix_glyphs, quiet_glyphs
from vizkit.render.kit.page import MARGIN

PageMaker = Callable[[], Figure]


def built(fig: Figure) -> PageMaker:
    """A page maker for a page that is already built."""
    return lambda: fig


def footer(fig: Figure, left: str, page: int, pages: int) -> None:
    w, h = fig.get_size_inches()
    y = 1 - (h - MARGIN + 0.12) / h
    fig.text(MARGIN / w, y, left, fontsize=6, color="0.35", va="bottom")
    fig.text(1 - MARGIN / w, y, f"page {page} / {pages}", fontsize=6, color="0.35", va="bottom", ha="right")


def write_pdf(path: Path, pages: Sequence[PageMaker], *, title: str, subject: str, keywords: str,
              footer_left: str, saved: Callable[[int, Figure], object] | None = None) -> int:
    """Build each page, number it ("vizkit <version> · footer_left ... page i / n") and save it into ``path``;
    ``saved(number, fig)`` is called after each page is saved (the report also saves it as a PNG). Returns the
    page count."""
    from matplotlib.backends.backend_pdf import PdfPages

    version = vizkit_version()
    metadata = {"Title": title, "Subject": subject, "Creator": f"vizkit {version}", "Keywords": keywords}
    with PdfPages(path, metadata=metadata) as pdf, quiet_glyphs():
        for number, make in enumerate(pages, start=1):
            fig = make()
            footer(fig, f"vizkit {version} \u00b7 {footer_left}", number, len(pages))
            fix_glyphs(fig)  # a CJK file name: a CJK font when installed, else escapes; never empty boxes
            pdf.savefig(fig)
            if saved is not None:
                saved(number, fig)
    return len(pages)


__all__ = ["PageMaker", "built", "footer", "write_pdf"]
