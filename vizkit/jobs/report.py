"""``vizkit report`` as a function: every method on each image, as one PDF with contents and an HTML gallery.

Each image is loaded and preprocessed once; one deconvnet forward (run to the logits) gives the projections, the
predictions, the feature-map pages (its recorded layer outputs) and occlusion's panel (b) (its strongest unit at
the occlusion layer). Per run: the model, the layers and the default-layer probe, once. Sections and files:
``vizkit.render.report``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vizkit.capture.activations import grid_from_output
from vizkit.capture.filters import filter_stats
from vizkit.errors import UserInputError
from vizkit.jobs.attribute import attribute_tensor
from vizkit.jobs.common import ImageJob, JobReport, for_each_image
from vizkit.jobs.context import RunContext
from vizkit.jobs.deconv import deconv_output, deconv_result
from vizkit.jobs.filters import running_pictured
from vizkit.jobs.gradcam import gradcam_tensor
from vizkit.jobs.occlusion import OtherImages, occlusion_tensor, settings_for
from vizkit.jobs.report_dream import ReportDreams
from vizkit.project.attribute.methods import parse_methods
from vizkit.project.attribute.result import AttributeResult
from vizkit.project.results import FiltersResult, ReportResult

FEATURE_MAPS = 32  # strongest feature maps per layer on the report's feature-map pages


@dataclass
class ReportConfig(ImageJob):
    """Options of ``vizkit report``. ``images`` empty means the bundled sample photos."""

    layers: Sequence[str] | None = None
    top_k: int = 9
    methods: Sequence[str] = ()  # attribution methods to show (vizkit attribute's names); none: no section
    dream: bool | None = None  # --dream/--no-dream; None: on where the projections do not depend on the image

    def check(self) -> None:
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be at least 1, got {self.top_k}")
        if self.methods:
            parse_methods(self.methods)


def run_report(config: ReportConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Write ``out/<stem>/report.pdf``, ``html/index.html`` (+ images), ``deconv.npz`` and ``report.manifest.json``."""
    from vizkit.render.writer import write_outputs

    config.check()
    ctx = RunContext.from_job(config)
    layers = ctx.spatial_layers(config.layers)
    settings = {"layers": layers, "top_k": config.top_k, "device": str(ctx.device)}
    if config.methods:
        settings["methods"] = list(config.methods)
    stats = filter_stats(ctx.model)  # model-level: the same section in every image's report
    filters = FiltersResult(stats, running_pictured(ctx, [s.layer for s in stats], 5))
    cam_layer = ctx.deepest_layer()
    occ_layer, window, stride = settings_for(ctx, None, None, None)
    others = OtherImages(ctx.loaded)  # the second, unrelated image of the sanity checks
    dreams = ReportDreams(ctx, config.dream)
    settings.update(dreams.manifest())

    def work(path: Path, stem: str) -> Path:
        timings: dict[str, float] = {"load_model": ctx.load_seconds}
        t0 = time.perf_counter()
        x = ctx.input(path)
        out = deconv_output(ctx, x, layers, top_k=config.top_k)
        deconv = deconv_result(ctx, x, out, config.top_k)
        grids = [grid_from_output(layer, out.outputs[layer], FEATURE_MAPS) for layer in layers]
        timings["deconv_and_activations"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cam = gradcam_tensor(ctx, x, cam_layer, [None])[0]
        timings["gradcam"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        occ = occlusion_tensor(ctx, x, layer=occ_layer, window=window, stride=stride, others=others, reference=out)
        timings["occlusion_and_sanity"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dream = dreams(deconv, int(cam.targets[0]))
        timings["dream"] = time.perf_counter() - t0
        result = ReportResult(deconv, grids, cam, occ, filters, dream=dream,
                              attribution=attribution_of(ctx, x, path, config.methods, timings))
        return write_outputs(result, ctx.info(path, settings), config.out, stem, timings)

    return for_each_image(config.image_paths(), work, progress)


def attribution_of(ctx: RunContext, x: torch.Tensor, path: Path, methods: Sequence[str],
                   timings: dict[str, float]) -> AttributeResult | None:
    """The chosen attribution methods on the image's tensor (top-1 target), or None when none was chosen."""
    if not methods:
        return None
    t0 = time.perf_counter()
    result = attribute_tensor(ctx, x, methods, names=[path.name])
    timings["attribution"] = time.perf_counter() - t0
    return result


__all__ = ["FEATURE_MAPS", "ReportConfig", "run_report"]
