"""``vizkit activations`` as a function: ``run_activations(ActivationsConfig(...))`` writes ``OUT/<stem>/`` per
image; ``activations_tensor`` works on a preprocessed image, ``activations_image`` loads one file first (for
notebooks: nothing is written)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vizkit.capture.activations import DEFAULT_TOP, activation_grids
from vizkit.errors import UserInputError
from vizkit.jobs.common import JobReport, VideoJob, for_each_image
from vizkit.jobs.context import RunContext, tiny_activation_notes
from vizkit.load import LoadedModel
from vizkit.project.results import SCALES, ActivationsResult


@dataclass
class ActivationsConfig(VideoJob):
    """Options of ``vizkit activations``. ``images`` empty means the bundled sample photos; video files among
    them go through ``run_video`` (``every``/``max_frames`` choose the frames)."""

    layers: Sequence[str] | None = None
    top: int = DEFAULT_TOP
    scale: str = "shared"

    def check(self) -> None:
        if self.top < 1:
            raise UserInputError(f"--top must be at least 1, got {self.top}")
        if self.scale not in SCALES:
            raise UserInputError(f"unknown colour scale '{self.scale}'; use one of {', '.join(SCALES)}")


def activations_tensor(ctx: RunContext, x: torch.Tensor, layers: Sequence[str], *, top: int = DEFAULT_TOP,
                       scale: str = "shared") -> ActivationsResult:
    """The strongest feature maps of each layer for one preprocessed image x (1, C, H, W)."""
    grids = activation_grids(ctx.model, x, layers, top=top)
    notes = tiny_activation_notes([np.asarray(g.value_range) for g in grids])
    return ActivationsResult(input=x.detach().float().cpu().numpy(), image=ctx.display(x), grids=grids,
                             scale=scale, notes=notes)


def activations_image(loaded: LoadedModel | RunContext, image: str | Path, layers: Sequence[str], *,
                      top: int = DEFAULT_TOP) -> ActivationsResult:
    """Load, preprocess and record one image file."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    return activations_tensor(ctx, ctx.input(image), layers, top=top)


def run_activations(config: ActivationsConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit activations``: one folder per image under ``config.out``; bad images are reported and
    skipped. Model, layer and option problems raise before any image is processed."""
    from vizkit.render.writer import write_outputs

    config.check()
    inputs = config.inputs()
    ctx = RunContext.from_job(config)
    layers = ctx.layers(config.layers)
    settings = {"layers": layers, "top": config.top, "scale": config.scale, "device": str(ctx.device),
                "ranking": "max activation, ties by mean"}

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        result = activations_tensor(ctx, ctx.input(path), layers, top=config.top, scale=config.scale)
        timings = {"load_model": ctx.load_seconds, "forward": time.perf_counter() - t0}
        return write_outputs(result, ctx.info(path, settings), config.out, stem, timings)

    report = for_each_image(inputs.stills, work, progress, stems=inputs.still_stems)
    report.extend(config.run_videos(ctx, inputs, "activations", progress, layers=layers, top=config.top,
                                    scale=config.scale))
    return report


__all__ = ["SCALES", "ActivationsConfig", "activations_image", "activations_tensor",
           "run_activations"]
