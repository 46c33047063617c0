"""``vizkit attribute`` as a function: ``run_attribute(AttributeConfig(...))``; ``attribute_tensor`` works on a batch
of preprocessed images (for notebooks: no files written), ``attribute_image`` loads one file first.

Per run, before any image is read: the model, the methods, the target, the CAM layer and the baseline are checked.
Images are then loaded one by one (a bad file is reported and skipped, exit 2 at the end); one forward gives every
image's predictions and target; each method runs once over all images, ``batch_size`` images per call, on the
library that computes it (``vizkit.project.attribute.METHODS``). The model is audited once for the methods a
wrapped library would get silently wrong. All maps of a run go into one folder, ``OUT/attribute/``, so that
``--evaluate`` can rank the methods on all the images together.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vizkit.capture.probe import num_classes
from vizkit.capture.recorder import resolve_layers
from vizkit.errors import ModelError, UserInputError, VizkitError
from vizkit.jobs.common import Failure, ImageJob, JobReport
from vizkit.jobs.context import RunContext
from vizkit.load import LoadedModel
from vizkit.project.attribute import METHODS, ModelAudit, attribute, audit_model
from vizkit.project.attribute.evaluate.suite import evaluate_maps
from vizkit.project.attribute.inputs import BASELINES, AttrTarget, Baseline, chunks, guarded
from vizkit.project.attribute.methods import MethodSpec, parse_methods
from vizkit.project.attribute.result import AttributeResult, MethodMaps
from vizkit.project.targets import TargetFn, parse_targets

DEFAULT_METHODS = ("saliency", "integrated-gradients", "gradcam")
FOLDER = "attribute"


@dataclass
class AttributeConfig(ImageJob):
    """Options of ``vizkit attribute``. ``methods``: ``METHODS`` names, ``lrp:COMPOSITE``, ``smoothgrad:BASE`` or
    ``all``; ``target``: ``auto``, a class index or a class name; ``layer`` None: the last spatial feature layer
    (CAMs only); ``baseline``: black | blur | mean | a .pt/.npy file; ``samples``: IG steps, GradientSHAP and
    noise-tunnel samples (None: each method's default); ``evaluate``: also rank the methods (``steps`` deletion
    and insertion steps)."""

    methods: Sequence[str] = DEFAULT_METHODS
    target: str = "auto"
    layer: str | None = None
    baseline: str = "black"
    samples: int | None = None
    batch_size: int = 8
    evaluate: bool = False
    steps: int = 20

    def check(self) -> None:
        for name, value in (("--batch-size", self.batch_size), ("--samples", self.samples), ("--steps", self.steps)):
            if value is not None and value < 1:
                raise UserInputError(f"{name} must be at least 1, got {value}")
        parse_methods(self.methods)
        if self.baseline not in BASELINES and not Path(self.baseline).is_file():
            raise UserInputError(f"--baseline '{self.baseline}' is neither {', '.join(BASELINES)} nor a .pt/.npy "
                                 "file holding a (C, H, W) tensor")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's and numpy's global generators seeded for the block (Captum's GradientSHAP draws from numpy's),
    then restored: a method's random draws do not depend on what ran before, nor change the caller's stream."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def usable_methods(specs: Sequence[MethodSpec], audit: ModelAudit) -> tuple[list[MethodSpec], list[str]]:
    """The methods that are right on this model, and a note per method of ``all`` skipped; a method asked for by
    name that would be silently wrong raises ``ModelError`` with the audit's line."""
    kept, notes = [], []
    for spec in specs:
        problem = next((line for line in map(audit.problem, spec.audited) if line is not None), None)
        if problem is None:
            kept.append(spec)
        elif spec.optional:
            notes.append(f"skipped {problem}")
        else:
            raise ModelError(problem)
    return kept, notes


def _targets(target: AttrTarget, logits: torch.Tensor) -> tuple[list[int] | TargetFn, torch.Tensor]:
    """The targets as ``attribute`` takes them, and each image's score: the target's softmax probability, or a
    target function's own value."""
    if callable(target):
        with torch.no_grad():
            values = target(logits)
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != (logits.shape[0],):
            raise UserInputError(f"a target function must return one score per image, shape ({logits.shape[0]},)")
        return target, values.detach().float()
    if logits.dim() != 2:
        raise ModelError(f"the model returns shape {tuple(logits.shape)}, not class scores (N, classes); give a "
                         "target function f(output) -> (N,) scores")
    n, k = logits.shape
    picks = [target] * n if target is None or isinstance(target, (int, np.integer)) else list(target)
    if len(picks) != n:
        raise UserInputError(f"got {len(picks)} targets for {n} images; give one class per image")
    top1 = logits.argmax(dim=1).tolist()
    resolved = [top1[i] if t is None else int(t) for i, t in enumerate(picks)]
    if any(not 0 <= t < k for t in resolved):
        raise UserInputError(f"target class out of range: the model has {k} classes")
    index = torch.tensor(resolved, device=logits.device)[:, None]
    return resolved, torch.softmax(logits.double(), dim=1).gather(1, index)[:, 0].float()


def attribute_tensor(ctx: RunContext, x: torch.Tensor, methods: Sequence[str] = DEFAULT_METHODS,
                     target: AttrTarget = None, *, layer: str | None = None, baseline: Baseline = "black",
                     samples: int | None = None, batch_size: int = 8, evaluate: bool = False, steps: int = 20,
                     names: Sequence[str] | None = None, seed: int = 0) -> AttributeResult:
    """Every method's map of the preprocessed batch ``x`` (N, C, H, W) for ``target`` (None: each image's top-1; a
    class; one class per image; or ``f(logits) -> (N,)`` for multi-label and regression outputs); with
    ``evaluate`` also the curves, ROAD, the randomisation check and the ranking. Random methods are seeded with
    ``seed`` (the caller's generators are left as they were)."""
    model = ctx.model
    specs = parse_methods(methods)
    audit = audit_model(model, x[:1]) if any(s.audited for s in specs) else ModelAudit()
    specs, notes = usable_methods(specs, audit)
    if any(METHODS[s.method].cam for s in specs):
        layer = layer or ctx.deepest_layer()
        resolve_layers(model, [layer])
    else:
        layer = None
    with guarded(model), torch.no_grad():
        logits = torch.cat([model(x[s]) for s in chunks(x.shape[0], batch_size)])
    resolved, scores = _targets(target, logits)

    def explain(net: torch.nn.Module, spec: MethodSpec) -> torch.Tensor:
        with seeded(seed):
            return attribute(net, x, spec.method, resolved, layer=layer, baseline=baseline, samples=samples,
                             batch_size=batch_size, audit=audit, **spec.options)

    maps, computed = [], {}
    for spec in specs:
        start = time.perf_counter()
        computed[spec.label] = explain(model, spec)
        maps.append(MethodMaps(spec.label, spec.method, METHODS[spec.method].library, spec.signed,
                               computed[spec.label].cpu().numpy(), time.perf_counter() - start))
    evaluation = None
    if evaluate and maps:
        by_label = {s.label: s for s in specs}
        evaluation = evaluate_maps(model, x, computed, resolved, lambda net, label: explain(net, by_label[label]),
                                   steps=steps, baseline=baseline, batch_size=batch_size, seed=seed)
    n = x.shape[0]
    class_names = ctx.loaded.class_names or []
    index = [-1] * n if callable(resolved) else list(resolved)
    predict = logits.dim() == 2 and logits.shape[1] > 1
    return AttributeResult(
        names=list(names) if names is not None else [f"image {i + 1}" for i in range(n)],
        input=x.detach().float().cpu().numpy(),
        images=np.stack([ctx.display(x[i:i + 1]) for i in range(n)]),
        targets=np.asarray(index, dtype=np.int64),
        target_names=["target function" if t < 0 else class_names[t] if t < len(class_names) else f"class {t}"
                      for t in index],
        scores=scores.cpu().numpy(), maps=maps, layer=layer,
        baseline=baseline if isinstance(baseline, str) else "tensor",
        predictions=[ctx.predictions(logits[i:i + 1].cpu()) if predict else [] for i in range(n)],
        evaluation=evaluation, notes=notes)


def attribute_image(loaded: LoadedModel | RunContext, image: str | Path, methods: Sequence[str] = DEFAULT_METHODS,
                    target: str = "auto", **options: object) -> AttributeResult:
    """Load, preprocess and explain one image: everything ``vizkit attribute`` renders, as an ``AttributeResult``;
    ``options`` as ``attribute_tensor``'s."""
    ctx = loaded if isinstance(loaded, RunContext) else RunContext.from_loaded(loaded)
    parsed = parse_targets([target], ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))[0]
    return attribute_tensor(ctx, ctx.input(image), methods, parsed, names=[Path(image).name],
                            **options)  # type: ignore[arg-type]


def run_attribute(config: AttributeConfig, *, progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``vizkit attribute``: ``OUT/attribute/attribute.pdf``, ``attribute.npz`` and the manifest for all the
    images that could be read; a bad image is reported in the returned report and the others are still written.
    Model, method, layer, target and baseline problems raise before any image is read."""
    from vizkit.render.writer import write_outputs

    config.check()
    ctx = RunContext.from_job(config)
    specs = parse_methods(config.methods)
    layer = config.layer
    if any(METHODS[s.method].cam for s in specs):
        layer = layer or ctx.deepest_layer()
        resolve_layers(ctx.model, [layer])
    target = parse_targets([config.target], ctx.loaded.class_names, num_classes(ctx.model, ctx.input_shape))[0]
    report = JobReport()
    xs, kept = [], []
    for path in config.image_paths():
        try:
            xs.append(ctx.input(path))
            kept.append(path)
        except VizkitError as err:
            report.failures.append(Failure(str(path), str(err), err.exit_code))
        if progress:
            progress(str(path))
    if not xs:
        return report
    settings = {"methods": [s.label for s in specs], "target": config.target, "layer": layer,
                "baseline": config.baseline, "samples": config.samples, "batch_size": config.batch_size,
                "evaluate": config.evaluate, "device": str(ctx.device), "images": len(kept)}
    if config.evaluate:
        settings["steps"] = config.steps
    start = time.perf_counter()
    result = attribute_tensor(ctx, torch.cat(xs), config.methods, target, layer=layer, baseline=config.baseline,
                              samples=config.samples, batch_size=config.batch_size, evaluate=config.evaluate,
                              steps=config.steps, names=[p.name for p in kept], seed=config.seed)
    timings = {"load_model": ctx.load_seconds, "attribute": time.perf_counter() - start}
    report.written.append(write_outputs(result, ctx.info(None, settings), config.out, None, timings))
    return report


__all__ = ["DEFAULT_METHODS", "AttributeConfig", "attribute_image", "attribute_tensor", "run_attribute"]
