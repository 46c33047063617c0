"""``vizkit gradcam`` as a function: ``run_gradcam(GradCamConfig(...))``; ``gradcam_image`` is the per-image step
for notebooks (no files written).

Images are processed ``batch_size`` at a time: one forward pass per batch, one backward per target index (seeded
with each image's own class). A bad image is reported and skipped without losing the rest of its batch.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vizkit.capture.recorder import resolve_layers
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, UserInputError, VizkitError
from vizkit.jobs.common import ImageJob, JobReport, for_each_image, output_stems, predictions
from vizkit.load import LoadedModel, deprocess, load_image, preprocess
from vizkit.project.gradcam import GradCamResult, default_gradcam_layer, gradcam
from vizkit.project.targets import parse_targets
from vizkit.render import ReportInfo
from vizkit.render.gradcam_pdf import write_gradcam_outputs

RANDOM_NOTE = "random init weights (not pretrained): the maps show architecture, not learned features"
NO_RECTIFIER_NOTE = "no rectifier call was intercepted: guided backprop here equals the plain input gradient"


@dataclass
class GradCamConfig(ImageJob):
    """Options of ``vizkit gradcam``. ``images`` empty means the bundled sample photos; ``layer`` None means the
    last spatial feature layer; ``targets``: ``auto``, class indices or class names (several allowed)."""

    layer: str | None = None
    targets: Sequence[str] = ("auto",)
    batch_size: int = 8

    def check(self) -> None:
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be at least 1, got {self.batch_size}")


def num_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The number of class scores the model returns (one forward on a zero image; the model is left as it was)."""
    param = next(model.parameters(), None)
    x = torch.zeros(input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    with preserve_model_state(model), torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model returns {shape}, not class scores (N, classes); Grad-CAM needs a classifier")
    return int(out.shape[1])


def gradcam_inputs(loaded: LoadedModel, x: torch.Tensor, layer: str,
                   targets: Sequence[int | None]) -> list[GradCamResult]:
    """One ``GradCamResult`` per image of the preprocessed batch ``x`` (N, C, H, W); ``None`` targets = top-1."""
    out = gradcam(loaded.model, x, layer, [list(targets)] * x.shape[0])
    names = loaded.class_names or []
    notes = [] if loaded.pretrained is not False else [RANDOM_NOTE]
    if not any("guided" in a.rule for a in out.audit):
        notes.append(NO_RECTIFIER_NOTE)
    results = []
    for n in range(x.shape[0]):
        idx = [int(i) for i in out.targets[n]]
        results.append(GradCamResult(
            input=x[n:n + 1].detach().float().cpu().numpy(),
            image=deprocess(x[n:n + 1].cpu(), loaded.preprocessing),
            layer=layer,
            targets=out.targets[n],
            class_names=[names[i] if i < len(names) else f"class {i}" for i in idx],
            scores=out.scores[n],
            cam_raw=out.cam_raw[n],
            cam=out.cam[n],
            guided_backprop=out.guided_backprop[n],
            guided_gradcam=out.guided_gradcam[n],
            predictions=predictions(torch.from_numpy(out.logits[n:n + 1]), loaded.class_names),
            audit=out.audit,
            notes=list(notes),
        ))
    return results


def gradcam_image(loaded: LoadedModel, image: str | Path, layer: str | None = None,
                  targets: Sequence[str] = ("auto",)) -> GradCamResult:
    """Load, preprocess and explain one image: everything ``vizkit gradcam`` renders, as a ``GradCamResult``."""
    prep = loaded.preprocessing
    shape = (1, prep.channels, prep.crop, prep.crop)
    layer = layer or default_gradcam_layer(loaded.model, shape)
    parsed = parse_targets(targets, loaded.class_names, num_classes(loaded.model, shape))
    device = next(loaded.model.parameters()).device
    return gradcam_inputs(loaded, preprocess(load_image(image), prep).to(device), layer, parsed)[0]


def run_gradcam(config: GradCamConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit gradcam``: one folder per image under ``config.out``; bad images are reported and skipped.

    Model, layer and target problems raise before any image is read (nothing can be done for any image);
    per-image problems are collected in the returned report so the batch goes on.
    """
    config.check()
    started = time.perf_counter()
    loaded = config.load()
    device = next(loaded.model.parameters()).device
    prep = loaded.preprocessing
    shape = (1, prep.channels, prep.crop, prep.crop)
    layer = config.layer or default_gradcam_layer(loaded.model, shape)
    resolve_layers(loaded.model, [layer])
    parsed = parse_targets(config.targets, loaded.class_names, num_classes(loaded.model, shape))
    load_seconds = time.perf_counter() - started
    images = config.image_paths()
    settings = {"layer": layer, "targets": [str(t) for t in config.targets] or ["auto"], "device": str(device),
                "batch_size": config.batch_size}
    batches = _Batches(loaded, layer, parsed, images, config.batch_size, device)

    def work(path: Path, stem: str) -> Path:
        result, seconds = batches.result(stem)
        info = ReportInfo(str(path), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                          prep.to_dict(), settings, config.command)
        return write_gradcam_outputs(result, info, Path(config.out), stem,
                                     {"load_model": load_seconds, "project": seconds})

    return for_each_image(images, work, progress)


class _Batches:
    """Computes results a batch at a time, on first request of any image in the batch; keeps per-image errors."""

    def __init__(self, loaded: LoadedModel, layer: str, targets: list[int | None], images: list[Path],
                 batch_size: int, device: torch.device) -> None:
        self.loaded, self.layer, self.targets, self.device = loaded, layer, targets, device
        stems = output_stems(images)
        self.batch_of = {stem: i // batch_size for i, stem in enumerate(stems)}
        self.members = [list(zip(images, stems))[i:i + batch_size] for i in range(0, len(images), batch_size)]
        self.done: dict[str, tuple[GradCamResult, float] | BaseException] = {}

    def result(self, stem: str) -> tuple[GradCamResult, float]:
        if stem not in self.done:
            self.done.clear()  # one batch of results in memory at a time
            self._compute(self.members[self.batch_of[stem]])
        value = self.done.pop(stem)
        if isinstance(value, BaseException):
            raise value
        return value

    def _compute(self, members: list[tuple[Path, str]]) -> None:
        xs, ok = [], []
        for path, stem in members:
            try:
                xs.append(preprocess(load_image(path), self.loaded.preprocessing))
                ok.append(stem)
            except VizkitError as err:
                self.done[stem] = err
        if not ok:
            return
        start = time.perf_counter()
        try:
            results = gradcam_inputs(self.loaded, torch.cat(xs).to(self.device), self.layer, self.targets)
        except Exception as err:  # noqa: BLE001 - re-raised for every image of the batch by result()
            for stem in ok:
                self.done[stem] = err
            return
        seconds = (time.perf_counter() - start) / len(ok)
        for stem, result in zip(ok, results):
            self.done[stem] = (result, seconds)


__all__ = ["GradCamConfig", "gradcam_image", "gradcam_inputs", "num_classes", "run_gradcam"]
