"""Whole jobs, as the CLI runs them: a config dataclass in, files and a report out.

Everything ``vizkit deconv`` does is ``run_deconv(DeconvConfig(...))``; ``deconv_image`` is the per-image step
for notebooks (no files written).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError, VizkitError
from vizkit.load import DEFAULT_MODEL, LoadedModel, deprocess, load_image, load_model, preprocess, sample_images
from vizkit.project.deconv import MODES, analyse_receptive_fields, deconv
from vizkit.project.results import DeconvResult, Prediction
from vizkit.render import ReportInfo, write_deconv_outputs

log = logging.getLogger("vizkit")

NO_SWITCH_NOTE = ("no max-pool, gate or normalisation statistic before this layer: its projections do not depend "
                  "on the image beyond which units fire (guided backprop, which uses the forward ReLU masks, does)")
RANDOM_NOTE = "random init weights (not pretrained): the pictures show architecture, not learned features"


@dataclass
class DeconvConfig:
    """Options of ``vizkit deconv``. ``images`` empty means the bundled sample photos."""

    images: Sequence[str | Path] = ()
    model: str = DEFAULT_MODEL
    weights: str | None = None
    layers: Sequence[str] | None = None
    top_k: int = 9
    mode: str = "max"
    out: str | Path = "vizkit-out"
    device: str = "auto"
    allow_pickle: bool = False
    allow_download: bool = False
    crop: bool = True
    command: list[str] | str = field(default_factory=lambda: list(sys.argv))

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserInputError(f"unknown mode '{self.mode}'; use one of {', '.join(MODES)}")
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be at least 1, got {self.top_k}")


@dataclass
class Failure:
    image: str
    message: str
    exit_code: int


@dataclass
class JobReport:
    """What a batch run did. ``exit_code``: 0 all written, 2 some input was bad, 1 an internal error happened."""

    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return 0
        return 1 if any(f.exit_code == 1 for f in self.failures) else 2


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {device} requested but no CUDA device is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise UserInputError(f"unknown device '{device}': {err}") from None


def predictions(logits: torch.Tensor, class_names: Sequence[str] | None, k: int = 5) -> list[Prediction]:
    probs = torch.softmax(logits.detach().float()[0], dim=0)
    top = torch.topk(probs, min(k, probs.numel()))
    names = class_names or []
    return [Prediction(int(i), names[int(i)] if int(i) < len(names) else f"class {int(i)}", float(p))
            for p, i in zip(top.values, top.indices)]


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
    notes = [] if loaded.pretrained else [RANDOM_NOTE]
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


def _stems(images: Sequence[Path]) -> list[str]:
    """Output folder names: the image stem, made unique when two images share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in images:
        stem = path.stem.lstrip(".") or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def run_deconv(config: DeconvConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit deconv``: one folder per image under ``config.out``; bad images are reported and skipped.

    Model and layer problems raise (nothing can be done for any image); per-image problems are collected in the
    returned report so the batch goes on.
    """
    config.check()
    started = time.perf_counter()
    device = resolve_device(config.device)
    loaded = load_model(config.model, config.weights, device=device, allow_pickle=config.allow_pickle,
                        allow_download=config.allow_download)
    prep = loaded.preprocessing
    input_shape = (1, prep.channels, prep.crop, prep.crop)
    layers = list(config.layers) if config.layers else default_layers(loaded.model, input_shape)
    resolve_layers(loaded.model, layers)
    rfs = analyse_receptive_fields(loaded.model, input_shape)
    load_seconds = time.perf_counter() - started
    images = [Path(p) for p in config.images] or sample_images()
    report = JobReport()
    settings = {"layers": layers, "top_k": config.top_k, "mode": config.mode, "device": str(device),
                "crop": config.crop}
    for path, stem in zip(images, _stems(images)):
        t0 = time.perf_counter()
        try:
            result = deconv_image(loaded, path, layers, top_k=config.top_k, mode=config.mode, crop=config.crop,
                                  receptive_fields=rfs)
            info = ReportInfo(str(path), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                              prep.to_dict(), settings, config.command)
            timings = {"load_model": load_seconds, "project": time.perf_counter() - t0}
            report.written.append(write_deconv_outputs(result, info, Path(config.out), stem, timings))
        except VizkitError as err:
            report.failures.append(Failure(str(path), str(err), err.exit_code))
        except Exception as err:  # noqa: BLE001 - one image's internal error must not lose the others
            log.debug("internal error on %s", path, exc_info=True)
            report.failures.append(Failure(str(path), f"internal error: {type(err).__name__}: {err}", 1))
        if progress:
            progress(str(path))
    return report


__all__ = ["DeconvConfig", "Failure", "JobReport", "deconv_image", "predictions", "resolve_device", "run_deconv"]
