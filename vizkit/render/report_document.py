"""The per-image folder of ``vizkit report``: report.pdf (contents, then every method's pages), html/ (the same
pages as a static gallery), deconv.npz and report.manifest.json last. Each command's own page builders are reused."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from vizkit.project.results import ReportResult
from vizkit.render.arrays import save_deconv_npz
from vizkit.render.info import ReportInfo
from vizkit.render.report import Section
from vizkit.render.writer import Document, PageMaker, built

MANIFEST = "report.manifest.json"


def report_sections(result: ReportResult, info: ReportInfo) -> list[Section]:
    """The report's sections in order, each a title and page builders (pages are built when written)."""
    from vizkit.render.activations_pdf import activation_page
    from vizkit.render.filters_pdf import filters_page_makers
    from vizkit.render.gradcam_pdf import gradcam_pages
    from vizkit.render.layer_page import layer_page_count, layer_page_makers
    from vizkit.render.occlusion_pdf import occlusion_pages
    from vizkit.render.sanity_pdf import sanity_pages
    from vizkit.render.summary_page import render_summary_page

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
    first = 2 + sum(len(section.pages) for section in sections)  # after the contents page
    sections.append(Section("Filters", filters_page_makers(result.filters.stats, pictured=result.filters.pictured,
                                                           first_page=first),
                            summary="learned filters, per-filter RMS, dead and dominant filters"))
    return sections


def report_document(result: ReportResult, info: ReportInfo) -> Document:
    from vizkit.render.report import write_report

    name = Path(info.image_path or "image").name
    layers = ", ".join(lp.layer for lp in result.deconv.layers)
    title, subtitle = f"vizkit report: {name}", f"model {info.model} ({info.weights}); layers {layers}"

    def pdf_and_html(path: Path) -> None:
        write_report(path, path.parent / "html", title, subtitle, report_sections(result, info))

    return Document([("deconv.npz", lambda p: save_deconv_npz(result.deconv, p)), ("report.pdf", pdf_and_html)],
                    manifest=MANIFEST)


__all__ = ["MANIFEST", "report_document", "report_sections"]
