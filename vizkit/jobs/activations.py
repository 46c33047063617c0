"""``vizkit activations`` as a function: ``run_activations(ActivationsConfig(...))`` writes ``OUT/<stem>/`` per
image; ``activations_image`` is the per-image step for notebooks (no files written)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vizkit.capture.activations import DEFAULT_TOP, ActivationGrid, activation_grids
from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.jobs.common import ImageJob, JobReport, for_each_image
from vizkit.load import LoadedModel, deprocess, load_image, preprocess
from vizkit.render.activations_pdf import SCALES, write_activations_outputs
from vizkit.render.info import ReportInfo

#: Default output folder: its own, so it never replaces a ``vizkit deconv`` result folder of the same image.
DEFAULT_OUT = "vizkit-out"


@dataclass
class ActivationsConfig(ImageJob):
    """Options of ``vizkit activations``. ``images`` empty means the bundled sample photos."""

    layers: Sequence[str] | None = None
    top: int = DEFAULT_TOP
    scale: str = "shared"

    def check(self) -> None:
        if self.top < 1:
            raise UserInputError(f"--top must be at least 1, got {self.top}")
        if self.scale not in SCALES:
            raise UserInputError(f"unknown colour scale '{self.scale}'; use one of {', '.join(SCALES)}")


def activations_image(loaded: LoadedModel, image: str | Path, layers: Sequence[str], *, top: int = DEFAULT_TOP
                      ) -> tuple[np.ndarray, np.ndarray, list[ActivationGrid]]:
    """Load, preprocess and record one image: (input (1, C, H, W) float32, display image (H, W, 3) uint8, grids)."""
    device = next(loaded.model.parameters()).device
    x = preprocess(load_image(image), loaded.preprocessing).to(device)
    grids = activation_grids(loaded.model, x, layers, top=top)
    return x.detach().float().cpu().numpy(), deprocess(x.cpu(), loaded.preprocessing), grids


def run_activations(config: ActivationsConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit activations``: one folder per image under ``config.out``; bad images are reported and
    skipped. Model, layer and option problems raise before any image is processed."""
    config.check()
    started = time.perf_counter()
    loaded = config.load()
    device = next(loaded.model.parameters()).device
    prep = loaded.preprocessing
    layers = list(dict.fromkeys(config.layers)) if config.layers else default_layers(
        loaded.model, (1, prep.channels, prep.crop, prep.crop))
    resolve_layers(loaded.model, layers)
    load_seconds = time.perf_counter() - started
    images = config.image_paths()
    settings = {"layers": layers, "top": config.top, "scale": config.scale, "device": str(device),
                "ranking": "max activation, ties by mean"}

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        x, picture, grids = activations_image(loaded, path, layers, top=config.top)
        info = ReportInfo(str(path), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                          prep.to_dict(), settings, config.command)
        timings = {"load_model": load_seconds, "forward": time.perf_counter() - t0}
        return write_activations_outputs(x, grids, picture, info, Path(config.out), stem, timings, config.scale)

    return for_each_image(images, work, progress)


__all__ = ["DEFAULT_OUT", "ActivationsConfig", "activations_image", "run_activations"]
