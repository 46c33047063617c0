"""Sanity checks for saliency maps: does the map depend on the model's weights, and on the image?

Adebayo et al. (2018), "Sanity checks for saliency maps", showed that some popular maps barely change when the
network's weights are replaced by random ones: such a map shows the image (edges) or the architecture, not what
the model learned. Two checks, run on any model:

(a) **Cascading model randomisation.** On a deep copy of the model (the user's model is never touched), the weights
    are replaced by random ones from the top layer down, block by block: the modules with parameters, in reverse
    order of execution, split into ``steps`` groups of about equal size. After each step every method's map is
    recomputed and compared with the original map by Spearman rank correlation. Random weights are drawn from a
    normal distribution with each tensor's own mean and standard deviation (not the module's initialiser), so
    activations keep their scale and gradients do not vanish into rounding noise (docs/DESIGN.md, "Traps"); buffers
    (BatchNorm running statistics) are kept.
(b) **Image dependence.** The same unit (deconv: same channel, same position) or the same target class
    (guided backprop, Grad-CAM) on a second, unrelated image; the rank correlation of the two maps.

Maps compared: pixel-space methods (deconv, guided backprop) by ``|map|`` summed over colour channels; Grad-CAM by
its upsampled ``cam``. A deconv projection is zero outside the unit's receptive field whatever the weights, so
deconv maps are compared over the pixels where either map is nonzero (the shared zeros would make any two
projections of a unit agree). Rank correlation of a constant map is undefined; it is taken as 1 when both maps are
constant and 0 when only one is (a map that collapsed to nothing has changed).

Flags (thresholds chosen from the default model on the sample photos: guided backprop keeps 0.97 after the top
step, Grad-CAM drops below 0.1; see tests/test_sanity.py):
- ``TOP_THRESHOLD`` (0.9): still correlated at least this much after the first randomisation step that reaches
  the method (the classifier and last blocks; for deconv the first step at or below its unit's layer). Adebayo et
  al.'s finding for guided backprop: the map does not reflect the weights that decide the class.
- ``ALL_THRESHOLD`` (0.5): still correlated above it after *every* parameter is random: the map shows the image
  or the architecture, not anything learned.
- ``IMAGE_THRESHOLD`` (0.99): two unrelated images give the same map up to rank. The deconvnet on a network
  without max-pooling does this exactly (its backward path never looks at the image).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.hooks import Hooks
from vizkit.capture.probe import model_device
from vizkit.capture.recorder import Recorder, resolve_layers
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.project.deconv import Unit, _as_grid, forward_capture, top_units

METHODS = ("deconv", "guided_backprop", "gradcam")
TOP_THRESHOLD = 0.9
ALL_THRESHOLD = 0.5
IMAGE_THRESHOLD = 0.99
DEFAULT_STEPS = 5


@dataclass
class SanityResult:
    """One method's checks. randomisation: (step name, rank correlation with the original map) after each cascading
    step, top layers first; image_corr: rank correlation with the map of the second image; flags: plain sentences;
    unaffected_steps: leading steps that cannot change the map (deconv: layers above its unit)."""

    method: str
    randomisation: list[tuple[str, float]]
    image_corr: float
    flags: list[str] = field(default_factory=list)
    unaffected_steps: int = 0


def rank_correlation(a: np.ndarray, b: np.ndarray, *, support: bool = False) -> float:
    """Spearman's rank correlation of two equally sized arrays (flattened), ties given their average rank.

    ``support=True``: only over the entries where a or b is nonzero. Constant inputs: 1.0 when both are
    constant, 0.0 when one is (see the module docstring)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"rank correlation needs equal sizes, got {a.size} and {b.size}")
    if support:
        keep = (a != 0) | (b != 0)
        a, b = a[keep], b[keep]
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    na, nb = float(np.sqrt(ra @ ra)), float(np.sqrt(rb @ rb))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(ra @ rb / (na * nb), -1.0, 1.0))


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


# --- the maps -------------------------------------------------------------------------------------------------------

def deconv_map(model: nn.Module, x: torch.Tensor, layer: str, unit: Unit) -> np.ndarray:
    """(H, W): |deconvnet projection| of one unit, summed over colour channels (seed 1: only the shape counts)."""
    cap = forward_capture(model, x, [layer], stop=True)
    anchor = cap.outputs[layer]
    seed = torch.zeros_like(_as_grid(anchor.detach()))
    y, xx = unit.position or (0, 0)
    seed[0, unit.channel, y, xx] = 1.0
    (grad,) = torch.autograd.grad(anchor, cap.x, seed.view_as(anchor))
    return grad[0].abs().sum(dim=0).double().cpu().numpy()


def gradient_maps(model: nn.Module, x: torch.Tensor, layer: str, target: int, methods: Sequence[str]
                  ) -> dict[str, np.ndarray]:
    """(H, W) maps of guided backprop (|map| summed over channels) and Grad-CAM (``cam``) for one target class,
    from one forward pass."""
    from vizkit.project.gradcam import gradcam, guided_backprop  # imported late: the Grad-CAM room owns the module

    out: dict[str, np.ndarray] = {}
    if "gradcam" in methods:
        res = gradcam(model, x, layer, [[target]])
        out["gradcam"] = res.cam[0, 0].astype(np.float64)
        gbp = res.guided_backprop
    elif "guided_backprop" in methods:
        gbp = guided_backprop(model, x, [[target]])
    if "guided_backprop" in methods:
        out["guided_backprop"] = np.abs(gbp[0, 0]).sum(axis=0).astype(np.float64)
    return out


def method_maps(model: nn.Module, x: torch.Tensor, layer: str, unit: Unit, target: int, methods: Sequence[str]
                ) -> dict[str, np.ndarray]:
    maps = gradient_maps(model, x, layer, target, methods) if {"gradcam", "guided_backprop"} & set(methods) else {}
    if "deconv" in methods:
        maps["deconv"] = deconv_map(model, x, layer, unit)
    return maps


# --- cascading randomisation ----------------------------------------------------------------------------------------

def execution_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules that own parameters, in the order of their first call during a forward of ``x``."""
    order: list[str] = []
    with Hooks() as hooks:
        for name, module in model.named_modules():
            if next(module.parameters(recurse=False), None) is not None:
                hooks.forward(module, lambda m, i, o, name=name: order.append(name) if name not in order else None)
        with preserve_model_state(model), torch.no_grad():
            model(x)
    return order


def randomisation_steps(order: Sequence[str], steps: int = DEFAULT_STEPS) -> list[tuple[str, list[str]]]:
    """Split the parameter-owning modules, top (last executed) first, into ``steps`` groups of about equal size.

    Each step is named ``top … bottom`` after its first and last module (one name when it holds one module)."""
    top_down = list(reversed(order))
    groups = [list(g) for g in np.array_split(np.array(top_down, dtype=object), min(steps, len(top_down)))]
    return [(g[0] if len(g) == 1 else f"{g[0]} \u2026 {g[-1]}", [str(n) for n in g]) for g in groups if g]


@torch.no_grad()
def randomise_(module: nn.Module, generator: torch.Generator) -> None:
    """Replace the module's own parameters with normal draws of the same mean and standard deviation, in place."""
    for p in module.parameters(recurse=False):
        flat = p.detach().double().flatten()
        std = float(flat.std()) if flat.numel() > 1 else 0.0
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        p.copy_((float(flat.mean()) + std * noise).to(p.dtype))


def _modules_before(model: nn.Module, x: torch.Tensor, layer: str, order: Sequence[str]) -> set[str]:
    """Parameter-owning modules that run before ``layer`` has produced its output (what a deconv map depends on)."""
    seen: list[str] = []
    modules = dict(model.named_modules())
    with Hooks() as hooks:
        for n in order:
            hooks.forward(modules[n], lambda m, i, o, n=n: seen.append(n))
        with preserve_model_state(model), torch.no_grad(), Recorder(model, [layer], stop=True) as rec:
            rec.run(x)
    prefix = layer + "."
    return set(seen) | {n for n in order if n == layer or n.startswith(prefix)}


# --- the checks -----------------------------------------------------------------------------------------------------

def sanity_checks(model: nn.Module, x: torch.Tensor, x_other: torch.Tensor, *, layer: str,
                  deconv_unit: Unit | None = None, target: int | None = None,
                  methods: Sequence[str] = METHODS, steps: int = DEFAULT_STEPS, seed: int = 0) -> list[SanityResult]:
    """Run both checks for ``methods`` on one image ``x`` (1, C, H, W) and a second image ``x_other`` (resized to
    x's size when it differs).

    ``layer``: the deconv unit's layer and Grad-CAM's layer. ``deconv_unit``: default the layer's strongest unit on
    ``x`` (channel and position). ``target``: default the top class on ``x``. ``steps``: cascading randomisation
    steps (0 skips the check). The model is left exactly as it was: the randomisation runs on a deep copy.
    """
    methods = tuple(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserInputError(f"unknown sanity-check method(s) {unknown or 'none given'}; use {', '.join(METHODS)}")
    if x.dim() != 4 or x.shape[0] != 1 or x_other.dim() != 4 or x_other.shape[:2] != x.shape[:2]:
        raise UserInputError(f"sanity checks take two images (1, C, H, W) with the same C, got {tuple(x.shape)} "
                             f"and {tuple(x_other.shape)}")
    if steps < 0:
        raise UserInputError(f"randomisation steps must be 0 or more, got {steps}")
    resolve_layers(model, [layer])
    device = model_device(model) if next(model.parameters(), None) is not None else x.device
    x, x_other = x.detach().to(device), x_other.detach().to(device)
    if x_other.shape[-2:] != x.shape[-2:]:
        x_other = F.interpolate(x_other, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False,
                                antialias=True)
    if deconv_unit is None and "deconv" in methods:
        cap = forward_capture(model, x, [layer], stop=True)
        deconv_unit = top_units(cap.outputs[layer], 1)[0][0]
        del cap
    if target is None and {"gradcam", "guided_backprop"} & set(methods):
        with preserve_model_state(model), torch.no_grad():
            target = int(model(x).reshape(1, -1).argmax())
    unit = deconv_unit or Unit(0, (0, 0))
    target = int(target or 0)

    original = method_maps(model, x, layer, unit, target, methods)
    other = method_maps(model, x_other, layer, unit, target, methods)
    curves: dict[str, list[tuple[str, float]]] = {m: [] for m in methods}
    unaffected = _cascade(model, x, layer, unit, target, methods, steps, seed, original, curves) if steps else 0
    results = []
    for m in methods:
        image_corr = _compare(m, original[m], other[m])
        skip = unaffected if m == "deconv" else 0
        results.append(SanityResult(m, curves[m], image_corr, _flags(curves[m], skip, image_corr), skip))
    return results


def _compare(method: str, a: np.ndarray, b: np.ndarray) -> float:
    return rank_correlation(a, b, support=method == "deconv")


def _cascade(model: nn.Module, x: torch.Tensor, layer: str, unit: Unit, target: int, methods: Sequence[str],
             steps: int, seed: int, original: dict[str, np.ndarray], curves: dict[str, list[tuple[str, float]]]
             ) -> int:
    """Fill ``curves``; return how many leading steps left the deconv unit's layers untouched."""
    work = copy.deepcopy(model)
    order = execution_order(work, x)
    deconv_depends = _modules_before(work, x, layer, order) if "deconv" in methods else set()
    modules = dict(work.named_modules())
    generator = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}
    unaffected = 0
    for index, (name, group) in enumerate(randomisation_steps(order, steps)):
        for module_name in group:
            randomise_(modules[module_name], generator)
        touched = bool(deconv_depends & set(group))
        if not touched and unaffected == index:
            unaffected += 1
        todo = [m for m in methods if m != "deconv" or "deconv" not in last or touched]
        maps = method_maps(work, x, layer, unit, target, todo)
        for m in methods:
            if m in maps:
                last[m] = _compare(m, original[m], maps[m])
            curves[m].append((name, last[m]))  # deconv: unchanged while only layers above its unit were randomised
    del work
    return unaffected


def _flags(curve: list[tuple[str, float]], unaffected: int, image_corr: float) -> list[str]:
    flags = []
    if len(curve) > unaffected and curve[unaffected][1] >= TOP_THRESHOLD:
        flags.append(f"insensitive to the top layers: rank correlation {curve[unaffected][1]:.2f} with the original "
                     f"map after randomising {curve[unaffected][0]} (>= {TOP_THRESHOLD})")
    if curve and curve[-1][1] > ALL_THRESHOLD:
        flags.append(f"barely depends on the weights: rank correlation {curve[-1][1]:.2f} with the original map "
                     f"after randomising every layer (> {ALL_THRESHOLD})")
    if image_corr > IMAGE_THRESHOLD:
        flags.append(f"does not depend on the image: rank correlation {image_corr:.3f} between two unrelated images "
                     f"(> {IMAGE_THRESHOLD})")
    return flags


__all__ = ["ALL_THRESHOLD", "IMAGE_THRESHOLD", "METHODS", "TOP_THRESHOLD", "SanityResult", "deconv_map",
           "execution_order", "gradient_maps", "method_maps", "randomisation_steps", "randomise_", "rank_correlation",
           "sanity_checks"]
