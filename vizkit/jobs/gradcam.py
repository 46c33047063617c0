"""``vizkit gradcam`` as a function: ``run_gradcam(GradCamConfig(...))``; ``gradcam_inputs`` works on a batch of
preprocessed images, ``gradcam_image`` loads one file first (for notebooks: no files written).

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
from vizkit.jobs.common import ImageJob, JobReport, for_each_image, output_stems
from vizkit.jobs.context import RunContext, model_device
from vizkit.load import LoadedModel, load_image, preprocess
from vizkit.project.gradcam import gradcam
from vizkit.project.results import GradCamResult
from vizkit.project.targets import parse_targets

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
    x = torch.zeros(input_shape, device=model_device(model), dtype=param.dtype if param is not None else torch.float32)
    with preserve_model_state(model), torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model returns {shape}, not class scores (N, classes); Grad-CAM needs a classifier")
    return int(out.shape[1])


def gradcam_inputs(ctx: RunContext, x: torch.Tensor, layer: str,
                   targets: Sequence[int | None]) -> list[GradCamResult]:
    """One ``GradCamResult`` per image of the preprocessed batch ``x`` (N, C, H, W); ``None`` targets = top-1."""
    out = gradcam(ctx.model, x, layer, [list(targets)] * x.shape[0])
    names = ctx.loaded.class_names or []
    notes = []
    if not any("guided" in a.rule for a in out.audit):
        notes.append(NO_RECTIFIER_NOTE)
    results = []
    for n in range(x.shape[0]):
        idx = [int(i) for i in out.targets[n]]
        results.append(GradCamResult(
            input=x[n:n + 1].detach().float().cpu().numpy(),
            image=ctx.display(x[n:n + 1]),
            layer=layer,
            targets=out.targets[n],
            class_names=[names[i] if i < len(names) else f"class {i}" for i in idx],
            scores=out.scores[n],
            cam_raw=out.cam_raw[n],
            cam=out.cam[n],
            guided_backprop=out.guided_backprop[n],
            guided_gradcam=out.guided_gradcam[n],
            predictions=[] if out.logits is None else ctx.predictions(torch.from_numpy(out.logits[n:n + 1])),
            audit=out.audit,
            notes=list(notes),
        ))
    return results


def gradcam_image(loaded: LoadedModel | RunContext, image: str | Path, layer: str | None = None,
                  targets: Sequence[str] = ("auto",)) -> GradCamResult:
    """Load, preprocess and explain one image: everything ``vizkit gradcam`` renders, as a ``GradCamResult``."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    layer = layer or ctx.deepest_layer()
    parsed = parse_targets(targets, ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))
    return gradcam_inputs(ctx, ctx.input(image), layer, parsed)[0]


def run_gradcam(config: GradCamConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit gradcam``: one folder per image under ``config.out``; bad images are reported and skipped.

    Model, layer and target problems raise before any image is read (nothing can be done for any image);
    per-image problems are collected in the returned report so the batch goes on.
    """
    from vizkit.render.writer import write_outputs

    config.check()
    ctx = RunContext.from_job(config)
    layer = config.layer or ctx.deepest_layer()
    resolve_layers(ctx.model, [layer])
    parsed = parse_targets(config.targets, ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))
    images = config.image_paths()
    settings = {"layer": layer, "targets": [str(t) for t in config.targets] or ["auto"], "device": str(ctx.device),
                "batch_size": config.batch_size}
    batches = _Batches(ctx, layer, parsed, images, config.batch_size)

    def work(path: Path, stem: str) -> Path:
        result, seconds = batches.result(stem)
        return write_outputs(result, ctx.info(path, settings), config.out, stem,
                             {"load_model": ctx.load_seconds, "project": seconds})

    return for_each_image(images, work, progress)


class _Batches:
    """Computes results a batch at a time, on first request of any image in the batch; keeps per-image errors."""

    def __init__(self, ctx: RunContext, layer: str, targets: list[int | None], images: list[Path],
                 batch_size: int) -> None:
        self.ctx, self.layer, self.targets = ctx, layer, targets
        stems = output_stems(images)
        self.batch_of = {stem: i // batch_size for i, stem in enumerate(stems)}
        pairs = list(zip(images, stems, strict=True))
        self.members = [pairs[i:i + batch_size] for i in range(0, len(images), batch_size)]
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
                xs.append(preprocess(load_image(path), self.ctx.loaded.preprocessing))
                ok.append(stem)
            except VizkitError as err:
                self.done[stem] = err
        if not ok:
            return
        start = time.perf_counter()
        try:
            results = gradcam_inputs(self.ctx, torch.cat(xs).to(self.ctx.device), self.layer, self.targets)
        except Exception as err:  # noqa: BLE001 - re-raised for every image of the batch by result()
            for stem in ok:
                self.done[stem] = err
            return
        seconds = (time.perf_counter() - start) / len(ok)
        for stem, result in zip(ok, results, strict=True):
            self.done[stem] = (result, seconds)


__all__ = ["GradCamConfig", "gradcam_image", "gradcam_inputs", "num_classes", "run_gradcam"]
