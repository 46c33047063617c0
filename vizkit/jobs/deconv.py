"""``vizkit deconv`` as a function: ``run_deconv(DeconvConfig(...))``; ``deconv_image`` is the per-image step
for notebooks (no files written)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.jobs.common import ImageJob, JobReport, for_each_image, predictions
from vizkit.load import LoadedModel, deprocess, load_image, preprocess
from vizkit.project.deconv import MODES, analyse_receptive_fields, deconv
from vizkit.project.results import DeconvResult
from vizkit.render import ReportInfo, write_deconv_outputs

NO_SWITCH_NOTE = ("no max-pool, gate or normalisation statistic before this layer: its projections do not depend "
                  "on the image beyond which units fire (guided backprop, which uses the forward ReLU masks, does)")
RANDOM_NOTE = "random init weights (not pretrained): the pictures show architecture, not learned features"


@dataclass
class DeconvConfig(ImageJob):
    """Options of ``vizkit deconv``. ``images`` empty means the bundled sample photos."""

    layers: Sequence[str] | None = None
    top_k: int = 9
    mode: str = "max"
    crop: bool = True

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserInputError(f"unknown mode '{self.mode}'; use one of {', '.join(MODES)}")
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be at least 1, got {self.top_k}")


def deconv_image(loaded: LoadedModel, image: str | Path, layers: Sequence[str], *, top_k: int = 9, mode: str = "max",
                 crop: bool = True, receptive_fields: dict | None = None) -> DeconvResult:
    """Load, preprocess and project one image: everything ``vizkit deconv`` renders, as a ``DeconvResult``."""
    device = next(loaded.model.parameters()).device
    x = preprocess(load_image(image), loaded.preprocessing).to(device)
    out = deconv(loaded.model, x, layers, top_k=top_k, mode=mode, crop=crop, logits=True,
                 receptive_fields=receptive_fields)
    for lp in out.layers:
        if not lp.image_dependent:
            lp.note = NO_SWITCH_NOTE
    notes = [] if loaded.pretrained is not False else [RANDOM_NOTE]
    if any(not lp.image_dependent for lp in out.layers):
        notes.append("some layers have no max-pool before them; " + NO_SWITCH_NOTE.split(": ", 1)[1])
    return DeconvResult(
        input=x.detach().float().cpu().numpy(),
        image=deprocess(x.cpu(), loaded.preprocessing),
        layers=out.layers,
        predictions=predictions(out.logits, loaded.class_names) if out.logits is not None else [],
        audit=out.audit,
        notes=notes,
    )


def prepare(config: ImageJob, layers: Sequence[str] | None
            ) -> tuple[LoadedModel, torch.device, list[str], dict[str, object | None]]:
    """Load the model once per run, pick and check the layers (default: one per resolution stage), and analyse
    the receptive fields (for crops and image patches). Model and layer errors raise before any image is read."""
    loaded = config.load()
    device = next(loaded.model.parameters()).device
    prep = loaded.preprocessing
    input_shape = (1, prep.channels, prep.crop, prep.crop)
    layers = list(layers) if layers else default_layers(loaded.model, input_shape)
    resolve_layers(loaded.model, layers)
    return loaded, device, layers, analyse_receptive_fields(loaded.model, input_shape)


def run_deconv(config: DeconvConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit deconv``: one folder per image under ``config.out``; bad images are reported and skipped.

    Model and layer problems raise (nothing can be done for any image); per-image problems are collected in the
    returned report so the batch goes on.
    """
    config.check()
    started = time.perf_counter()
    loaded, device, layers, rfs = prepare(config, config.layers)
    prep = loaded.preprocessing
    load_seconds = time.perf_counter() - started
    images = config.image_paths()
    settings = {"layers": layers, "top_k": config.top_k, "mode": config.mode, "device": str(device),
                "crop": config.crop}

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        result = deconv_image(loaded, path, layers, top_k=config.top_k, mode=config.mode, crop=config.crop,
                              receptive_fields=rfs)
        info = ReportInfo(str(path), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                          prep.to_dict(), settings, config.command)
        timings = {"load_model": load_seconds, "project": time.perf_counter() - t0}
        return write_deconv_outputs(result, info, Path(config.out), stem, timings)

    return for_each_image(images, work, progress)


__all__ = ["DeconvConfig", "deconv_image", "run_deconv"]
