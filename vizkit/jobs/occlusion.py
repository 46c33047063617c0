"""``vizkit occlusion`` as a function: ``run_occlusion(OcclusionConfig(...))``; ``occlusion_image`` is the per-image
step for notebooks (no files written).

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

from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import ModelError, UserInputError
from vizkit.jobs.common import ImageJob, JobReport, for_each_image, predictions
from vizkit.jobs.gradcam import num_classes
from vizkit.load import LoadedModel, deprocess, load_image, preprocess, sample_images
from vizkit.project.deconv import Unit
from vizkit.project.occlusion import OcclusionMaps, check_window, default_window, occlusion_maps
from vizkit.project.results import Prediction
from vizkit.project.sanity import SanityResult, sanity_checks
from vizkit.project.targets import parse_targets
from vizkit.render import ReportInfo
from vizkit.render.occlusion_pdf import write_occlusion_outputs

RANDOM_NOTE = "random init weights (not pretrained): the maps show architecture, not learned features"


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


@dataclass
class OcclusionResult:
    """Everything ``vizkit occlusion`` renders for one image."""

    maps: OcclusionMaps
    image: object  # (H, W, 3) uint8, the preprocessed image de-normalised
    predictions: list[Prediction]
    sanity: list[SanityResult] | None
    notes: list[str]


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


def settings_for(loaded: LoadedModel, layer: str | None, window: int | None, stride: int | None
                 ) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """The layer, window and stride a run uses (defaults filled in, all validated against the model's input)."""
    prep = loaded.preprocessing
    shape = (1, prep.channels, prep.crop, prep.crop)
    if layer is None:
        layers = default_layers(loaded.model, shape)
        if not layers:
            raise ModelError(f"{type(loaded.model).__name__} has no spatial feature layer; pass --layer")
        layer = layers[-1]
    resolve_layers(loaded.model, [layer])
    auto_window, auto_stride = default_window(prep.crop, prep.crop)
    if stride is None:
        stride = auto_stride if window is None else max(1, window // 2)
    window = auto_window if window is None else window
    win, step = check_window(window, stride, prep.crop, prep.crop)
    return layer, win, step


def occlusion_image(loaded: LoadedModel, image: str | Path, *, layer: str | None = None, window: int | None = None,
                    stride: int | None = None, target: int | None = None, batch: int = 64, sanity: bool = True,
                    others: OtherImages | None = None) -> OcclusionResult:
    """Load, preprocess and occlude one image: everything ``vizkit occlusion`` renders, as an ``OcclusionResult``."""
    layer, win, step = settings_for(loaded, layer, window, stride)
    device = next(loaded.model.parameters()).device
    x = preprocess(load_image(image), loaded.preprocessing).to(device)
    maps = occlusion_maps(loaded.model, x, layer, window=win, stride=step, target=target, batch=batch)
    checks = None
    if sanity:
        other = (others or OtherImages(loaded)).unlike(x).to(device)
        checks = sanity_checks(loaded.model, x, other, layer=layer, deconv_unit=Unit(maps.channel, maps.position),
                               target=maps.target)
    return OcclusionResult(maps, deprocess(x.cpu(), loaded.preprocessing),
                           predictions(torch.from_numpy(maps.logits), loaded.class_names), checks,
                           [] if loaded.pretrained is not False else [RANDOM_NOTE])


def run_occlusion(config: OcclusionConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit occlusion``: per image ``out/<stem>/occlusion.pdf``, ``occlusion.npz``, manifest; bad images
    are reported and skipped. Model, layer, window and target problems raise before any image is read."""
    config.check()
    started = time.perf_counter()
    loaded = config.load()
    device = next(loaded.model.parameters()).device
    layer, win, step = settings_for(loaded, config.layer, config.window, config.stride)
    prep = loaded.preprocessing
    target = None
    if config.target is not None:
        n_classes = num_classes(loaded.model, (1, prep.channels, prep.crop, prep.crop))
        target = parse_targets([config.target], loaded.class_names, n_classes)[0]
    load_seconds = time.perf_counter() - started
    images = config.image_paths()
    settings = {"layer": layer, "window": list(win), "stride": list(step), "fill": 0.0,
                "target": config.target or "auto", "batch": config.batch, "sanity": config.sanity,
                "device": str(device)}
    others = OtherImages(loaded)

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        result = occlusion_image(loaded, path, layer=layer, window=win[0], stride=step[0], target=target,
                                 batch=config.batch, sanity=config.sanity, others=others)
        info = ReportInfo(str(path), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                          prep.to_dict(), settings, config.command)
        timings = {"load_model": load_seconds, "project": time.perf_counter() - t0}
        return write_occlusion_outputs(result.maps, result.image, loaded.class_names, info, Path(config.out), stem,
                                       timings, predictions=result.predictions, notes=result.notes,
                                       sanity=result.sanity)

    return for_each_image(images, work, progress)


__all__ = ["OcclusionConfig", "OcclusionResult", "OtherImages", "occlusion_image", "run_occlusion", "settings_for"]
