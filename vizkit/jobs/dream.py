"""``vizkit dream`` as a function: ``run_dream(DreamConfig(...))`` writes ``OUT/dream/``; ``dream_tensor(ctx, x,
objectives)`` makes the images of a list of objectives on a model already loaded (``x``: preprocessed start
images for feature accentuation, or None), nothing written.

Objectives: ``--layer L --units SPEC`` (channel or centre-neuron objectives) and ``--class C`` (pre-softmax
logits). With ``--data`` the dataset is read through ``vizkit.scan``'s stream: ``top:N`` picks the units as
``vizkit mine`` does (strongest mean activation, one scan), and ``reference`` is each objective's largest value
over the data. Under ``torchrun`` the objectives are shared out in contiguous chunks; each element's generator
depends on its global index only, so N ranks give the images of one process, and rank 0 writes them.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vizkit.capture.probe import num_classes
from vizkit.capture.recorder import Recorder
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.jobs.common import Failure, JobReport, ModelJob, resolve_device
from vizkit.jobs.context import RunContext
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.outputs.atomic import check_writable
from vizkit.project.dream import (
    DreamResult,
    DreamSettings,
    Objective,
    channel,
    class_logit,
    dream,
    neuron,
    reference_values,
    spectrum_from,
)
from vizkit.project.dream.optimise import view_size
from vizkit.project.dream.params import METHODS
from vizkit.project.targets import parse_targets
from vizkit.scan.distributed import Ranks, gather_objects, process_group
from vizkit.scan.stream import DatasetStream

#: ``(objectives done, objectives in this process's share, fraction of the steps done)``.
Progress = Callable[[int, int, float], None]
OnSkip = Callable[[str, str], None]
PROGRESSIVE_NOTE = ("the model does not run on smaller inputs: every step's views are at its full input size (no "
                    "progressive resolution), slower on a CPU")
DEFAULT_UNITS = 8  # units per layer when --units is not given: top:8 with --data, else channels 0-7
UNITS_SPEC = re.compile(r"all|top:\d+|\d+|\d+(\s*,\s*\d+)+\s*,?|\d+\s*,")


@dataclass(kw_only=True)
class DreamConfig(ModelJob):
    """Options of ``vizkit dream``. ``layers``/``units``: unit objectives (``units``: all, top:N (the N most active
    over ``data``, as ``vizkit mine``), or channels, ``5`` or ``3,7,12``); ``targets``: classes (names or
    indices, ``--class``); neither: the deepest spatial layer's units. ``size`` None: the model's input size.
    ``seed`` seeds both the dream and, as in every command, a random-init model."""

    layers: Sequence[str] | None = None
    units: str | None = None
    targets: Sequence[str] = ()
    objective: str = "channel"
    method: str = "maco"
    steps: int = 48
    size: int | None = None
    diversity: int = 1
    from_images: Sequence[str | Path] = ()
    data: str | Path | None = None
    spectrum_from: str | Path | None = None
    batch_size: int = 8
    limit: int | None = None

    def check(self) -> None:
        if self.objective not in ("channel", "neuron"):
            raise UserInputError(f"--objective {self.objective!r}: use channel or neuron (classes: --class)")
        if self.method not in METHODS:
            raise UserInputError(f"--method {self.method!r}: use one of {', '.join(METHODS)}")
        for name, value, low in (("--steps", self.steps, 1), ("--diversity", self.diversity, 1),
                                 ("--batch-size", self.batch_size, 1), ("--size", self.size, 8),
                                 ("--limit", self.limit, 1)):
            if value is not None and value < low:
                raise UserInputError(f"{name} must be at least {low}, got {value}")
        spec = (self.units or "").strip()
        if spec and not UNITS_SPEC.fullmatch(spec):
            raise UserInputError(f"--units {spec!r}: use all, top:N, or channels: one number or a comma list like "
                                 "3,7,12")
        if spec.startswith("top:") and self.data is None:
            raise UserInputError(f"--units {spec} ranks units by their activation over data: give --data DATA, or "
                                 "list channels (3,7,12)")
        if self.spectrum_from is not None and self.method != "maco":
            raise UserInputError("--spectrum-from sets MACO's magnitude spectrum: use it with --method maco")

    def dream_settings(self, input_size: int) -> DreamSettings:
        return DreamSettings(method=self.method, steps=self.steps, size=self.size or input_size,
                             input_size=input_size, batch_size=self.batch_size, seed=self.seed,
                             diversity=self.diversity)


def dream_tensor(ctx: RunContext, x: torch.Tensor | None, objectives: Sequence[Objective],
                 settings: DreamSettings | None = None, *, spectrum: object = None,
                 progress: Callable[[int, int], None] | None = None, first_index: int = 0) -> DreamResult:
    """The dreams of ``objectives`` on ``ctx``'s model: ``x`` (1 or len(objectives), C, H, W) preprocessed start
    images (feature accentuation) or None; views are made at the model's input size; labels carry class names."""
    s = settings or DreamSettings(size=ctx.input_shape[-1])
    if s.input_size is None:
        s = replace(s, input_size=ctx.input_shape[-1])
    notes = []
    if s.progressive is not None and not accepts_size(ctx, view_size(s, s.input_size or s.size, 0)):
        s = replace(s, progressive=None)
        notes.append(PROGRESSIVE_NOTE)
    prep = ctx.loaded.preprocessing
    start = None
    if x is not None:  # back to display space [0, 1], where the dream is optimised
        mean = torch.tensor(prep.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(prep.std, device=x.device).view(1, -1, 1, 1)
        start = (x.detach().float() * std + mean).clamp(0, 1).expand(-1, 3, -1, -1).cpu()
    result = dream(ctx.model, objectives, mean=prep.mean, std=prep.std, settings=s, from_images=start,
                   spectrum=spectrum, progress=progress, first_index=first_index)
    names = ctx.loaded.class_names or []
    result.labels = [_label(name, names) for name in result.objectives]
    result.notes += notes
    return result


def accepts_size(ctx: RunContext, size: int) -> bool:
    """Whether the model runs on a ``size`` px input (a Linear layer after a flatten fixes the input size)."""
    if size == ctx.input_shape[-1]:
        return True
    x = torch.zeros((*ctx.input_shape[:2], size, size), device=ctx.device)
    try:
        with preserve_model_state(ctx.model), torch.no_grad():
            ctx.model(x)
    except (RuntimeError, ValueError):
        return False
    return True


def _label(name: str, class_names: Sequence[str]) -> str:
    """``class:281`` -> ``class:281 tabby`` (names the model has); units as they are."""
    head, _, tail = name.partition(":")
    if head == "class" and tail.isdigit() and int(tail) < len(class_names):
        return f"{name} {class_names[int(tail)]}"
    return name


def run_dream(config: DreamConfig, *, progress: Progress | None = None,
              on_skip: OnSkip | None = None) -> JobReport:
    """Run ``vizkit dream``: ``OUT/dream/`` (dream.npz, dream.pdf, html/, dream.manifest.json). Option, output
    folder, model, layer, class and data problems raise before any optimisation."""
    from vizkit.render.writer import write_outputs

    config.check()
    check_writable(config.out)
    timings: dict[str, float] = {}
    with process_group(resolve_device(config.device)) as (ranks, device):
        ctx = RunContext.from_job(replace(config, device=str(device)))
        timings["load_model"] = ctx.load_seconds
        t0 = time.perf_counter()
        stream = _stream(config, ctx, on_skip)
        objectives, units = _objectives(config, ctx, stream)
        start = ctx.inputs(config.from_images) if config.from_images else None
        if start is not None and start.shape[0] not in (1, len(objectives)):
            raise UserInputError(f"--from gave {start.shape[0]} images for {len(objectives)} objectives: give one "
                                 "image, or one per objective")
        spectrum = spectrum_from(list_images(config.spectrum_from).paths) if config.spectrum_from else None
        ref = None
        if stream is not None and ranks.main:
            ref = reference_values(ctx.model, objectives, (b.x for b in stream))
        timings["data"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        settings = config.dream_settings(ctx.input_shape[-1])
        parts = gather_objects(_share(ctx, objectives, start, settings, spectrum, ranks, progress), ranks)
        timings["dream"] = time.perf_counter() - t0
    if not ranks.main:
        return JobReport()
    result = _merge(parts)
    if ref is not None:
        result.reference = np.repeat(ref, config.diversity).astype(np.float32)
    info = ctx.info(None, _settings(config, ctx, result, units, ranks, stream))
    failures = [Failure(stream.path(i), message, 2) for i, message in stream.skipped] if stream is not None else []
    return JobReport(written=[write_outputs(result, info, config.out, timings=timings)], failures=failures)


def _stream(config: DreamConfig, ctx: RunContext, on_skip: OnSkip | None) -> DatasetStream | None:
    """DATA through the scan's stream (cached in memory when it fits: the unit ranking and the reference read it)."""
    if config.data is None:
        return None
    dataset = ImageDataset(list_images(config.data, config.limit), ctx.loaded.preprocessing)
    return DatasetStream(dataset, batch_size=max(config.batch_size, 16), device=ctx.device, on_skip=on_skip,
                         cache_bytes=1 << 30)


def _objectives(config: DreamConfig, ctx: RunContext, stream: DatasetStream | None
                ) -> tuple[list[Objective], dict[str, list[int]]]:
    """Unit objectives per layer (in layer order), then class objectives; and the units chosen per layer."""
    layers = ctx.layers(config.layers) if config.layers else ([] if config.targets else [ctx.deepest_layer()])
    units = _units(config, ctx, layers, stream) if layers else {}
    make = channel if config.objective == "channel" else neuron
    objectives = [make(layer, u) for layer in layers for u in units[layer]]
    if config.targets:
        parsed = parse_targets(config.targets, ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))
        if any(t is None for t in parsed):
            raise UserInputError("--class auto has no image to take the top class from: give class names or indices")
        objectives += [class_logit(int(t)) for t in dict.fromkeys(parsed)]  # type: ignore[arg-type]
    return objectives, units


def _units(config: DreamConfig, ctx: RunContext, layers: list[str], stream: DatasetStream | None
           ) -> dict[str, list[int]]:
    spec = (config.units or (f"top:{DEFAULT_UNITS}" if stream is not None else "")).strip()
    channels = _channels(ctx, layers)
    if not spec:
        return {layer: list(range(min(DEFAULT_UNITS, channels[layer]))) for layer in layers}
    if spec.startswith("top:") or (spec == "all" and stream is not None):
        if stream is None:
            raise UserInputError(f"--units {spec} needs --data")
        from vizkit.project.mine_projection import select_units
        from vizkit.scan.state import ScanState, scan_batches

        state = ScanState(layers, 1, device=ctx.device)  # mine's ranking: the same scan, the same order
        scan_batches(ctx.model, stream, state)
        result = state.result([stream.path(i) for i in range(len(stream.dataset))])
        return {layer: select_units(result, layer, spec) for layer in layers}
    if spec == "all":
        return {layer: list(range(channels[layer])) for layer in layers}
    listed = [int(p) for p in spec.split(",") if p.strip()]
    for layer in layers:
        bad = [u for u in listed if u >= channels[layer]]
        if bad:
            raise UserInputError(f"--units {spec}: layer '{layer}' has channels 0..{channels[layer] - 1}")
    return {layer: list(dict.fromkeys(listed)) for layer in layers}


def _channels(ctx: RunContext, layers: list[str]) -> dict[str, int]:
    """Each layer's channel count (one forward on a blank input, stopped at the deepest layer)."""
    blank = torch.zeros(ctx.input_shape, device=ctx.device)
    with preserve_model_state(ctx.model), torch.no_grad(), Recorder(ctx.model, layers, stop=True) as rec:
        rec.run(blank)
        shapes = {name: tuple(rec.outputs[name].shape) for name in layers}
    return {name: int(shape[1]) if len(shape) > 1 else 1 for name, shape in shapes.items()}


def _share(ctx: RunContext, objectives: list[Objective], start: torch.Tensor | None, settings: DreamSettings,
           spectrum: object, ranks: Ranks, progress: Progress | None) -> DreamResult | None:
    """This rank's contiguous chunk of the objectives (all of them on one process), dreamt."""
    bounds = np.linspace(0, len(objectives), ranks.world + 1).round().astype(int)
    lo, hi = int(bounds[ranks.rank]), int(bounds[ranks.rank + 1])
    if lo == hi:
        return None
    mine = objectives[lo:hi]
    if start is not None and start.shape[0] > 1:
        start = start[lo:hi]
    per_batch = max(settings.diversity, settings.batch_size // settings.diversity * settings.diversity)
    elements = len(mine) * settings.diversity

    def tick(done: int, total: int) -> None:
        if progress is not None:
            finished = min(elements, done // settings.steps * per_batch) // settings.diversity
            progress(finished, len(mine), done / total)

    return dream_tensor(ctx, start, mine, settings, spectrum=spectrum, progress=tick, first_index=lo)


def _merge(parts: Sequence[DreamResult | None]) -> DreamResult:
    """The ranks' results in rank order: one result, as one process would have made it."""
    done = [p for p in parts if p is not None]
    if len(done) == 1:
        return done[0]
    first = done[0]
    alpha = None if first.alpha is None else np.concatenate([p.alpha for p in done if p.alpha is not None])
    history = None
    if all(p.history is not None for p in done):
        history = np.concatenate([p.history for p in done if p.history is not None], axis=1)
    return DreamResult(objectives=[o for p in done for o in p.objectives],
                       images=np.concatenate([p.images for p in done]),
                       scores=np.concatenate([p.scores for p in done]),
                       reference=np.concatenate([p.reference for p in done]), alpha=alpha,
                       settings=first.settings, history=history, labels=[lab for p in done for lab in p.labels],
                       notes=first.notes)


def _settings(config: DreamConfig, ctx: RunContext, result: DreamResult, units: dict[str, list[int]],
              ranks: Ranks, stream: DatasetStream | None) -> dict:
    """The manifest's settings: every optimisation setting (method, seed, each transform), then the run's."""
    return {**result.settings, "objective": config.objective, "layers": list(units), "units": units,
            "classes": [str(t) for t in config.targets], "objectives": len(set(result.objectives)),
            "from": [str(p) for p in config.from_images], "data": None if config.data is None else str(config.data),
            "images_read": None if stream is None else stream.total - len(stream.skipped),
            "spectrum": str(config.spectrum_from) if config.spectrum_from else (
                "shipped" if config.method == "maco" else None),
            "device": str(ctx.device), "ranks": ranks.world}


__all__ = ["DreamConfig", "DreamResult", "accepts_size", "dream_tensor", "run_dream"]
