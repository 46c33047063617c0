"""``vizkit deconv`` as a function: ``run_deconv(DeconvConfig(...))``.

Per image, two steps: ``RunContext.input(path)`` loads and preprocesses the file, ``deconv_tensor(ctx, x, ...)``
works on the tensor (a report or a dataset scan calls it on tensors it already has). ``deconv_image`` does both
for notebooks (no files written).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vizkit.capture.probe import probe_input
from vizkit.errors import UserInputError
from vizkit.jobs.common import JobReport, VideoJob, for_each_image
from vizkit.jobs.context import RunContext, tiny_activation_notes
from vizkit.load import LoadedModel
from vizkit.project.deconv import ENGINES, MODES, DeconvOutput, deconv
from vizkit.project.results import DeconvResult

NO_SWITCH_NOTE = ("no max-pool, gate or normalisation statistic before this layer: its projections do not depend "
                  "on the image beyond which units fire (guided backprop, which uses the forward ReLU masks, does)")


@dataclass
class DeconvConfig(VideoJob):
    """Options of ``vizkit deconv``. ``images`` empty means the bundled sample photos. ``engine``: ``autograd``
    (any graph) or ``explicit`` (layer by layer, chain models); ``save_switches``: max-pool switches in the npz.
    Video files among ``images`` go through ``run_video`` (``every``/``max_frames`` choose the frames)."""

    layers: Sequence[str] | None = None
    top_k: int = 9
    mode: str = "max"
    crop: bool = True
    engine: str = "autograd"
    save_switches: bool = False

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserInputError(f"unknown mode '{self.mode}'; use one of {', '.join(MODES)}")
        if self.engine not in ENGINES:
            raise UserInputError(f"unknown engine '{self.engine}'; use one of {', '.join(ENGINES)}")
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be at least 1, got {self.top_k}")


def deconv_output(ctx: RunContext, x: torch.Tensor, layers: Sequence[str], *, top_k: int = 9, mode: str = "max",
                  crop: bool = True, engine: str = "autograd", switches: bool = False) -> DeconvOutput:
    """The raw projections of one preprocessed image x (1, C, H, W): one forward to the logits, then the deconvnet.
    ``deconv_tensor`` = this + ``deconv_result``; composite jobs (the report) keep the activations from here."""
    return deconv(ctx.model, x, layers, top_k=top_k, mode=mode, crop=crop, logits=True, engine=engine,
                  receptive_fields=ctx.receptive_fields(), switches=switches)


def deconv_result(ctx: RunContext, x: torch.Tensor, out: DeconvOutput, top_k: int) -> DeconvResult:
    """What ``vizkit deconv`` renders from a projection: the result with its notes (image independence, fewer
    channels than asked, activations too small to come from trained weights)."""
    notes: list[str] = []
    for lp in out.layers:
        if not lp.image_dependent:
            lp.note = NO_SWITCH_NOTE
        if len(lp.units) < top_k:
            short = f"layer {lp.layer} has {len(lp.units)} feature maps: all shown (--top-k {top_k} asked for more)"
            lp.note = f"{lp.note}; {short}" if lp.note else short
            notes.append(short)
    if any(not lp.image_dependent for lp in out.layers):
        notes.append("some layers have no max-pool before them; " + NO_SWITCH_NOTE.split(": ", 1)[1])
    notes += tiny_activation_notes([out.outputs[lp.layer].float().cpu().numpy() for lp in out.layers])
    return DeconvResult(
        input=x.detach().float().cpu().numpy(),
        image=ctx.display(x),
        layers=out.layers,
        predictions=ctx.predictions(out.logits) if out.logits is not None else [],
        audit=out.audit,
        notes=notes,
        switches={name: idx.cpu().numpy() for name, idx in out.switches.items()},
    )


def deconv_tensor(ctx: RunContext, x: torch.Tensor, layers: Sequence[str], *, top_k: int = 9, mode: str = "max",
                  crop: bool = True, engine: str = "autograd", switches: bool = False) -> DeconvResult:
    """Project one preprocessed image x (1, C, H, W): everything ``vizkit deconv`` renders, as a ``DeconvResult``."""
    out = deconv_output(ctx, x, layers, top_k=top_k, mode=mode, crop=crop, engine=engine, switches=switches)
    return deconv_result(ctx, x, out, top_k)


def deconv_image(loaded: LoadedModel | RunContext, image: str | Path, layers: Sequence[str], *, top_k: int = 9,
                 mode: str = "max", crop: bool = True, engine: str = "autograd", switches: bool = False
                 ) -> DeconvResult:
    """Load, preprocess and project one image file (for notebooks: nothing is written)."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    return deconv_tensor(ctx, ctx.input(image), layers, top_k=top_k, mode=mode, crop=crop, engine=engine,
                         switches=switches)


def run_deconv(config: DeconvConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit deconv``: one folder per image under ``config.out``; bad images are reported and skipped.

    Model and layer problems raise (nothing can be done for any image); per-image problems are collected in the
    returned report so the batch goes on.
    """
    from vizkit.render.writer import write_outputs

    config.check()
    inputs = config.inputs()
    ctx = RunContext.from_job(config)
    layers = ctx.spatial_layers(config.layers)
    if config.engine == "explicit":  # refuse a model the engine cannot walk once, not once per image
        from vizkit.project.explicit import check_explicit

        check_explicit(ctx.model, probe_input(ctx.model, ctx.input_shape), layers)
    settings = {"layers": layers, "top_k": config.top_k, "mode": config.mode, "device": str(ctx.device),
                "crop": config.crop, "engine": config.engine}

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        result = deconv_tensor(ctx, ctx.input(path), layers, top_k=config.top_k, mode=config.mode, crop=config.crop,
                               engine=config.engine, switches=config.save_switches)
        timings = {"load_model": ctx.load_seconds, "project": time.perf_counter() - t0}
        return write_outputs(result, ctx.info(path, settings), config.out, stem, timings)

    report = for_each_image(inputs.stills, work, progress, stems=inputs.still_stems)
    options = {"mode": config.mode, "crop": config.crop, "engine": config.engine}
    report.extend(config.run_videos(ctx, inputs, "deconv", progress, layers=layers, top_k=config.top_k,
                                    deconv_options=options))
    return report


__all__ = ["NO_SWITCH_NOTE", "DeconvConfig", "deconv_image", "deconv_output", "deconv_result", "deconv_tensor",
           "run_deconv"]
