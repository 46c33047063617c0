"""``vizkit invariance`` as a function: ``run_invariance(InvarianceConfig(...))``; ``invariance_image`` is the
per-image step for notebooks (no files written), ``invariance_tensor`` the same on a preprocessed tensor.

Per image and transform, the original and its transformed copies go through the model in one batched forward
(``vizkit.project.invariance``); the PDF shows Zeiler & Fergus Fig. 5 for the image.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vizkit.capture.probe import num_classes
from vizkit.errors import ModelError, UserInputError
from vizkit.jobs.common import ImageJob, JobReport, for_each_image
from vizkit.jobs.context import RunContext
from vizkit.load import LoadedModel
from vizkit.project.invariance import PADDINGS, TRANSFORMS, Sweep, make_sweep, sweep
from vizkit.project.results import InvarianceResult
from vizkit.project.targets import parse_targets

THUMBNAILS = 9  # transformed images shown along each transform's axis


@dataclass
class InvarianceConfig(ImageJob):
    """Options of ``vizkit invariance``. ``images`` empty: the sample photos. ``transforms``: any of translate,
    scale, rotate. ``steps``: amounts per transform. ``ranges``: transform -> (lo, hi) replacing the paper's range
    (translation in pixels of the model's input). ``padding``: ``mean`` or ``circular`` (translation only).
    ``layers`` None: the first and the last resolution stage. ``target`` None: the original's top class, else an
    index or class name. ``batch``: images per forward (the original and S copies fit one forward by default)."""

    transforms: Sequence[str] = TRANSFORMS
    steps: int = 25
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    padding: str = "mean"
    layers: Sequence[str] | None = None
    target: str | None = None
    batch: int = 64

    def check(self) -> None:
        if not self.transforms:
            raise UserInputError("no transform given; use --transform translate, scale or rotate")
        for name in [*self.transforms, *self.ranges]:
            if name not in TRANSFORMS:
                raise UserInputError(f"unknown transform {name!r}: use one of {', '.join(TRANSFORMS)}")
        for name, (lo, hi) in self.ranges.items():
            if name not in self.transforms:  # silently unused otherwise
                raise UserInputError(f"--range {name}={lo:g}:{hi:g} is for a transform not swept here (--transform "
                                     f"{' '.join(self.transforms)}); add --transform {name} or drop the range")
        if self.padding not in PADDINGS:
            raise UserInputError(f"--padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if self.steps < 2:
            raise UserInputError(f"--steps must be at least 2, got {self.steps}")
        if self.batch < 2:
            raise UserInputError(f"--batch must be at least 2, got {self.batch}")


def parse_range(spec: str) -> tuple[str, tuple[float, float]]:
    """``--range NAME=LO:HI`` (e.g. ``rotate=-45:45``, ``translate=-30:30``) -> (name, (lo, hi))."""
    name, sep, span = spec.partition("=")
    lo, sep2, hi = span.partition(":")
    try:
        bounds = (float(lo), float(hi))
    except ValueError:
        bounds = (math.nan, math.nan)
    if not sep or not sep2 or not all(math.isfinite(b) for b in bounds) or bounds[0] >= bounds[1]:
        raise UserInputError(f"--range {spec!r}: write NAME=LO:HI with LO < HI, e.g. rotate=-45:45")
    if name.strip() not in TRANSFORMS:
        raise UserInputError(f"--range {spec!r}: unknown transform {name!r}; use one of {', '.join(TRANSFORMS)}")
    return name.strip(), bounds


def invariance_layers(ctx: RunContext, layers: Sequence[str] | None) -> list[str]:
    """The requested layers (checked), or the first and the last resolution stage of the model."""
    if layers:
        return ctx.layers(layers)
    stages = ctx.default_layers()
    if not stages:
        raise ModelError(f"{type(ctx.model).__name__} has no spatial feature layer; pass --layer")
    return list(dict.fromkeys([stages[0], stages[-1]]))


def build_sweeps(ctx: RunContext, transforms: Sequence[str] = TRANSFORMS, steps: int = 25,
                 ranges: Mapping[str, tuple[float, float]] | None = None, padding: str = "mean") -> list[Sweep]:
    """The built-in sweeps for this model's input size (fill 0 in normalised space: the model's mean pixel)."""
    size = ctx.input_shape[-1]
    return [make_sweep(name, size, steps, (ranges or {}).get(name), padding=padding)
            for name in dict.fromkeys(transforms)]


def invariance_tensor(ctx: RunContext, x: torch.Tensor, sweeps: Sequence[Sweep], layers: Sequence[str], *,
                      target: int | None = None, batch: int = 64) -> InvarianceResult:
    """Sweep a preprocessed (1, C, H, W) input: the tensor-level step (nothing loaded, nothing written)."""
    result = sweep(ctx.model, x, sweeps, layers, target=target, batch=batch)
    thumbs: dict[str, list[tuple[float, np.ndarray]]] = {}
    for sw in sweeps:
        count = min(THUMBNAILS, len(sw.amounts))
        idx = sorted({round(float(i)) for i in np.linspace(0, len(sw.amounts) - 1, count)})
        amounts = [sw.amounts[i] for i in idx]
        with torch.no_grad():
            moved = sw.apply(x, amounts)
        thumbs[sw.name] = [(a, ctx.display(moved[j:j + 1])) for j, a in enumerate(amounts)]
    return InvarianceResult(result, ctx.display(x), thumbs, ctx.predictions(torch.from_numpy(result.logits)), [],
                            ctx.loaded.class_names)


def invariance_image(loaded: LoadedModel | RunContext, image: str | Path, *, transforms: Sequence[str] = TRANSFORMS,
                     steps: int = 25, ranges: Mapping[str, tuple[float, float]] | None = None,
                     padding: str = "mean", layers: Sequence[str] | None = None, target: str | int | None = None,
                     batch: int = 64) -> InvarianceResult:
    """Load, preprocess and sweep one image: everything ``vizkit invariance`` renders, as an ``InvarianceResult``.
    ``target``: a class index or name; None for the original's top class."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    return invariance_tensor(ctx, ctx.input(image), build_sweeps(ctx, transforms, steps, ranges, padding),
                             invariance_layers(ctx, layers), target=_target(ctx, target), batch=batch)


def _target(ctx: RunContext, target: str | int | None) -> int | None:
    if target is None:
        return None
    return parse_targets([str(target)], ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))[0]


def run_invariance(config: InvarianceConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit invariance``: per image ``out/<stem>/invariance.pdf``, ``invariance.npz``, ``invariance.csv``
    and ``invariance.manifest.json``; bad images are reported and skipped. Model, layer, range and target problems
    raise before any image is read."""
    from vizkit.render.writer import write_outputs

    config.check()
    ctx = RunContext.from_job(config)
    layers = invariance_layers(ctx, config.layers)
    sweeps = build_sweeps(ctx, config.transforms, config.steps, config.ranges, config.padding)
    target = _target(ctx, config.target)
    settings = {"transforms": [s.name for s in sweeps], "steps": config.steps, "padding": config.padding,
                "ranges": {s.name: [min(s.amounts), max(s.amounts)] for s in sweeps}, "fill": 0.0,
                "layers": layers, "target": config.target or "auto", "batch": config.batch,
                "device": str(ctx.device), "distance": "||f(T x) - f(x)|| / ||f(x)||"}

    def work(path: Path, stem: str) -> Path:
        t0 = time.perf_counter()
        result = invariance_tensor(ctx, ctx.input(path), sweeps, layers, target=target, batch=config.batch)
        timings = {"load_model": ctx.load_seconds, "sweep": time.perf_counter() - t0}
        return write_outputs(result, ctx.info(path, settings), config.out, stem, timings)

    return for_each_image(config.image_paths(), work, progress)


__all__ = ["InvarianceConfig", "InvarianceResult", "build_sweeps", "invariance_image", "invariance_layers",
           "invariance_tensor", "parse_range", "run_invariance"]
