"""deconv.pdf: a summary page, then one page per layer."""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages

from vizkit.project.results import DeconvResult
from vizkit.render.info import ReportInfo, vizkit_version
from vizkit.render.layer_page import render_layer_page
from vizkit.render.pages import footer
from vizkit.render.summary_page import render_summary_page


def render_deconv_pdf(result: DeconvResult, info: ReportInfo, path: Path) -> int:
    """Write the report to ``path`` and return its page count (1 + number of layers)."""
    version = vizkit_version()
    name = Path(info.image_path).name
    pages = 1 + len(result.layers)
    metadata = {
        "Title": f"vizkit deconv: {name}",
        "Subject": f"Deconvnet projections of {info.model} on {name}",
        "Creator": f"vizkit {version}",
        "Keywords": "deconvnet, Zeiler-Fergus, feature visualisation",
    }
    with PdfPages(path, metadata=metadata) as pdf:
        figures = [lambda: render_summary_page(result, info, first_layer_page=2)]
        figures += [lambda lp=lp: render_layer_page(lp, result.image) for lp in result.layers]
        for number, make in enumerate(figures, start=1):
            fig = make()
            footer(fig, f"vizkit {version} \u00b7 {info.model} \u00b7 {name}", number, pages)
            pdf.savefig(fig)
    return pages
