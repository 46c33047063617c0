"""The per-image folder of ``vizkit deconv``: deconv.npz, deconv.pdf (a summary page, then one or more pages per
layer), manifest.json last; written by ``vizkit.render.writer``."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from vizkit.project.results import DeconvResult
from vizkit.render.arrays import save_deconv_npz
from vizkit.render.info import ReportInfo
from vizkit.render.writer import Document, PageMaker, write_outputs, write_pdf


def deconv_page_makers(result: DeconvResult, info: ReportInfo) -> list[PageMaker]:
    """The summary page, then each layer's pages (a layer with many units continues on further pages)."""
    from vizkit.render.layer_page import layer_page_count, layer_page_makers
    from vizkit.render.summary_page import render_summary_page

    first_pages, page = [], 2
    for lp in result.layers:
        first_pages.append(page)
        page += layer_page_count(lp)
    makers: list[PageMaker] = [partial(render_summary_page, result, info, first_layer_page=first_pages)]
    for lp in result.layers:
        makers += layer_page_makers(lp, result.image)
    return makers


def render_deconv_pdf(result: DeconvResult, info: ReportInfo, path: Path) -> int:
    """Write deconv.pdf to ``path`` and return its page count (1 + the layers' pages)."""
    name = Path(info.image_path or "image").name
    return write_pdf(path, deconv_page_makers(result, info), title=f"vizkit deconv: {name}",
                     subject=f"Deconvnet projections of {info.model} on {name}",
                     keywords="deconvnet, Zeiler-Fergus, feature visualisation",
                     footer_left=f"{info.model} \u00b7 {name}")


def deconv_document(result: DeconvResult, info: ReportInfo) -> Document:
    # lambdas look the writers up at call time, so tests can watch the order in which files appear
    return Document([("deconv.npz", lambda p: save_deconv_npz(result, p)),
                     ("deconv.pdf", lambda p: render_deconv_pdf(result, info, p))], manifest="manifest.json")


def write_deconv_outputs(result: DeconvResult, info: ReportInfo, out_dir: Path, stem: str,
                         timings: dict[str, float]) -> Path:
    """``write_outputs`` for a ``DeconvResult``: ``out_dir/stem/`` atomically; ``timings`` gains ``render``."""
    return write_outputs(result, info, out_dir, stem, timings)


__all__ = ["deconv_document", "deconv_page_makers", "render_deconv_pdf", "write_deconv_outputs"]
