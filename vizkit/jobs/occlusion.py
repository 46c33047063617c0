"""``vizkit occlusion`` as a function: ``run_occlusion(OcclusionConfig(...))``; ``occlusion_tensor`` works on a
preprocessed image, ``occlusion_image`` loads one file first (for notebooks: no files written).

Per image: the Zeiler–Fergus occlusion maps (``vizkit.project.occlusion``) and, unless ``sanity=False``, the sanity
checks (``vizkit.project.sanity``) of the three map methods for the same unit and class, with a second, unrelated
image taken from the bundled sample photos.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vizkit.capture.probe import num_classes
from vizkit.capture.recorder import resolve_layers
from vizkit.errors import UserInputError
from vizkit.jobs.common import ImageJob, JobReport, for_each_image
from vizkit.jobs.context import RunContext
from vizkit.load import LoadedModel, load_image, preprocess, sample_images
from vizkit.project.deconv import DeconvOutput, Unit
from vizkit.project.occlusion import check_window, default_window, occlusion_maps
from vizkit.project.results import OcclusionResult
from vizkit.project.sanity import sanity_checks
from vizkit.project.targets import parse_targets


@dataclass
class OcclusionConfig(ImageJob):
    """Options of ``vizkit occlusion``. ``images`` empty: the sample photos. ``layer`` None: the deepest default
    layer (the last resolution stage, the paper's layer 5). ``window``/``stride`` None: a seventh of the input side
    and half of that (32 / 16 at 224). ``target`` None: the top class of each unoccluded image; else a class index
    or name. ``batch``: occluded copies per forward pass. ``sanity``: add the sanity-check page."""

    layer: str | None = None
    window: int | None = None
    stride: int | None = None
    target: str | None = None
    batch: int = 64
    sanity: bool = True

    def check(self) -> None:
        if self.batch < 1:
            raise UserInputError(f"--batch must be at least 1, got {self.batch}")
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserInputError(f"--{name} must be at least 1, got {value}")


class OtherImages:
    """The sample photos, preprocessed once: the second, unrelated image of the sanity checks."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._cache: list[torch.Tensor] | None = None

    def unlike(self, x: torch.Tensor) -> torch.Tensor:
        """The sample photo that differs most from x (so never the image itself)."""
        if self._cache is None:
            self._cache = [preprocess(load_image(p), self.loaded.preprocessing) for p in sample_images()]
        xc = x.detach().cpu()
        candidates = [o for o in self._cache if o.shape == xc.shape] or self._cache
        return max(candidates, key=lambda o: float((o - xc).abs().mean()) if o.shape == xc.shape else 0.0)


def settings_for(ctx: RunContext, layer: str | None, window: int | None, stride: int | None
                 ) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """The layer, window and stride a run uses (defaults filled in, all validated against the model's input)."""
    _, _, height, width = ctx.input_shape
    layer = layer or ctx.deepest_layer()
    resolve_layers(ctx.model, [layer])
    auto_window, auto_stride = default_window(height, width)
    if stride is None:
        stride = auto_stride if window is None else max(1, window // 2)
    window = auto_window if window is None else window
    win, step = check_window(window, stride, height, width)
    return layer, win, step


def occlusion_tensor(ctx: RunContext, x: torch.Tensor, *, layer: str, window: tuple[int, int],
                     stride: tuple[int, int], target: int | None = None, batch: int = 64, sanity: bool = True,
                     others: OtherImages | None = None, reference: DeconvOutput | None = None) -> OcclusionResult:
    """Occlude one preprocessed image x (1, C, H, W) (settings from ``settings_for``); ``reference``: a deconvnet
    run on x whose strongest unit at ``layer`` is reused for panel (b) and the sanity checks."""
    maps = occlusion_maps(ctx.model, x, layer, window=window, stride=stride, target=target, batch=batch,
                          reference=reference)
    checks = None
    if sanity:
        other = (others or OtherImages(ctx.loaded)).unlike(x).to(ctx.device)
        checks = sanity_checks(ctx.model, x, other, layer=layer, deconv_unit=Unit(maps.channel, maps.position),
                               target=maps.target)
    return OcclusionResult(maps, ctx.display(x), ctx.predictions(torch.from_numpy(maps.logits)), checks, [],
                           ctx.loaded.class_names)


def occlusion_image(loaded: LoadedModel | RunContext, image: str | Path, *, layer: str | None = None,
                    window: int | None = None, stride: int | None = None, target: int | None = None,
                    batch: int = 64, sanity: bool = True, others: OtherImages | None = None) -> OcclusionResult:
    """Load, preprocess and occlude one image: everything ``vizkit occlusion`` renders, as an ``OcclusionResult``."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    layer, win, step = settings_for(ctx, layer, window, stride)
    return occlusion_tensor(ctx, ctx.input(image), layer=layer, window=win, stride=step, target=target, batch=batch,
                            sanity=sanity, others=others)


def run_occlusion(config: OcclusionConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit occlusion``: per image ``out/<stem>/occlusion.pdf``, ``occlusion.npz``, manifest; bad images
    are reported and skipped. Model, layer, window and target problems raise before any image is read."""
    from vizkit.render.writer import write_outputs

    config.check()
    ctx = RunContext.from_job(config)
    layer, win, step = settings_for(ctx, config.layer, config.window, config.stride)
    target = None
    if config.target is not None:
        target = parse_targets([config.target], ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))[0]
    settings = {"layer": layer, "window": list(win), "stride": list(step), "fill": 0.0,
                "target": config.target or "auto", "batch": config.batch, "sanity": config.sanity,
                "device": str(ctx.device)}
    others = OtherImages(ctx.loaded)

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        result = occlusion_tensor(ctx, ctx.input(path), layer=layer, window=win, stride=step, target=target,
                                  batch=config.batch, sanity=config.sanity, others=others)
        timings = {"load_model": ctx.load_seconds, "project": time.perf_counter() - t0}
        return write_outputs(result, ctx.info(path, settings), config.out, stem, timings)

    return for_each_image(config.image_paths(), work, progress)


__all__ = ["OcclusionConfig", "OcclusionResult", "OtherImages", "occlusion_image", "occlusion_tensor", "run_occlusion",
           "settings_for"]
