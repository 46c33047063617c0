"""``vizkit report`` as a function: every method on each image, as one PDF with contents and an HTML gallery.

The report reuses each command's computation and page renderers; it adds the table of contents, the HTML gallery
and one manifest. Sections: a summary, one section per layer (deconvnet projections and feature maps), Grad-CAM
with guided backprop, occlusion, the sanity checks, and the model's filters.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vizkit.capture.activations import activation_grids
from vizkit.capture.filters import filter_stats, running_convs
from vizkit.jobs.common import ImageJob, JobReport, for_each_image
from vizkit.jobs.deconv import deconv_image, prepare
from vizkit.jobs.filters import pictured_layers
from vizkit.jobs.gradcam import gradcam_inputs
from vizkit.jobs.occlusion import OtherImages, occlusion_image
from vizkit.project.gradcam import default_gradcam_layer
from vizkit.render import ReportInfo, atomic_dir, save_deconv_npz, write_manifest
from vizkit.render.activations_pdf import activation_page
from vizkit.render.filters_pdf import filters_page_makers
from vizkit.render.gradcam_pdf import gradcam_pages
from vizkit.render.layer_page import render_layer_page
from vizkit.render.occlusion_pdf import occlusion_pages
from vizkit.render.report import Section, write_report
from vizkit.render.sanity_pdf import sanity_pages
from vizkit.render.summary_page import render_summary_page


@dataclass
class ReportConfig(ImageJob):
    """Options of ``vizkit report``. ``images`` empty means the bundled sample photos."""

    layers: Sequence[str] | None = None
    top_k: int = 9


def run_report(config: ReportConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Write ``out/<stem>/report.pdf``, ``html/index.html`` (+ images), ``deconv.npz`` and ``report.manifest.json``."""
    loaded, device, layers, rfs = prepare(config, config.layers)
    prep = loaded.preprocessing
    input_shape = (1, prep.channels, prep.crop, prep.crop)
    images = config.image_paths()
    settings = {"layers": layers, "top_k": config.top_k, "device": str(device)}
    stats = filter_stats(loaded.model)  # model-level: the same section in every image's report
    runs = set(running_convs(loaded.model, input_shape))  # not GoogLeNet's aux heads: they never run in eval
    pictured = pictured_layers([s.layer for s in stats if s.layer in runs], 5)
    cam_layer = default_gradcam_layer(loaded.model, input_shape)
    others = OtherImages(loaded)  # the second, unrelated image of the sanity checks

    def work(path: Path, stem: str) -> Path:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        result = deconv_image(loaded, path, layers, top_k=config.top_k, receptive_fields=rfs)
        timings["deconv"] = time.perf_counter() - t0
        info = ReportInfo(str(path), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                          prep.to_dict(), settings, config.command)
        sections = [Section("Summary", [lambda: render_summary_page(result, info, first_layer_page=3)],
                            summary="image, model, predictions, interception audit")]
        t0 = time.perf_counter()
        x = torch.from_numpy(result.input).to(device)
        grids = {g.layer: g for g in activation_grids(loaded.model, x, layers, top=32)}
        timings["activations"] = time.perf_counter() - t0
        for lp in result.layers:
            sections.append(Section(f"Layer {lp.layer}", [
                lambda lp=lp: render_layer_page(lp, result.image),
                lambda lp=lp: activation_page(grids[lp.layer], result.image),
            ], level=2, summary=lp.note or "deconvnet projections of the top feature maps; the strongest feature maps"))
        t0 = time.perf_counter()
        cam = gradcam_inputs(loaded, x, cam_layer, [None])[0]
        timings["gradcam"] = time.perf_counter() - t0
        sections.append(Section(f"Grad-CAM and guided backprop ({cam_layer})",
                                [lambda fig=fig: fig for fig in gradcam_pages(cam, info)],
                                summary="which pixels drove the top class"))
        t0 = time.perf_counter()
        occ = occlusion_image(loaded, path, others=others)
        timings["occlusion_and_sanity"] = time.perf_counter() - t0
        sections.append(Section("Occlusion", [lambda fig=fig: fig for fig in occlusion_pages(
            occ.maps, occ.image, loaded.class_names, predictions=occ.predictions)],
                                summary="activity, projection, class probability and label under a grey square"))
        if occ.sanity:
            sections.append(Section("Sanity checks", [lambda fig=fig: fig for fig in sanity_pages(occ.sanity)],
                                    summary="cascading randomisation and image dependence of each method"))
        first = 2 + sum(len(section.pages) for section in sections)  # after the contents page
        sections.append(Section("Filters", filters_page_makers(stats, pictured=pictured, first_page=first),
                                summary="learned filters, per-filter RMS, dead and dominant filters"))
        title = f"vizkit report: {path.name}"
        subtitle = f"model {loaded.name} ({loaded.weights}); layers {', '.join(layers)}"
        with atomic_dir(Path(config.out) / stem) as tmp:
            t1 = time.perf_counter()
            save_deconv_npz(result, tmp / "deconv.npz")
            write_report(tmp / "report.pdf", tmp / "html", title, subtitle, sections)
            timings["render"] = time.perf_counter() - t1
            write_manifest(tmp, info, timings, name="report.manifest.json")
        return Path(config.out) / stem

    return for_each_image(images, work, progress)


__all__ = ["ReportConfig", "run_report"]
