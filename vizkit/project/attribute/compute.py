"""``attribute``: one entry point for every method of ``METHODS``, batched, on a model left exactly as it was."""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vizkit.project.attribute.audit import ModelAudit, audit_model, check_method
from vizkit.project.attribute.cam import cam_batch
from vizkit.project.attribute.captum_methods import CaptumOptions, captum_attribute
from vizkit.project.attribute.inputs import (
    AttrTarget,
    Baseline,
    check_images,
    guarded,
    make_baseline,
    objective,
    resolve_target,
    run_batched,
)
from vizkit.project.attribute.lrp import DEFAULT_COMPOSITE, lrp_batch, make_composite
from vizkit.project.attribute.methods import METHODS, method_info
from vizkit.project.gradcam import default_gradcam_layer, guided_backprop
from vizkit.project.rules import DeconvRules, check_interceptable
from vizkit.project.targets import TargetFn


def attribute(model: nn.Module, x: torch.Tensor, method: str, target: AttrTarget = None, *,
              layer: str | None = None, baseline: Baseline | Path = "black", samples: int | None = None,
              batch_size: int = 16, composite: str = DEFAULT_COMPOSITE, base: str = "saliency", noise: float = 0.15,
              window: int | None = None, stride: int | None = None, audit: ModelAudit | None = None) -> torch.Tensor:
    """The ``method``'s attribution of ``target`` for every image of ``x`` (N, C, H, W): float32 (N, C, H, W) on
    ``x``'s device, or (N, 1, H, W) for the CAM methods (the layer's map upsampled, unscaled).

    ``target``: None (top-1), a class, one class per image, or ``f(logits) -> (N,)``. ``layer``: the CAM layer
    (default: the last spatial feature layer, as ``vizkit gradcam``). ``baseline``: black | blur | mean | tensor |
    .pt/.npy file (``inputs.py``). ``samples``: IG steps (50), GradientSHAP samples (20), noise-tunnel samples (25).
    ``composite``: the LRP composite (``lrp.py``). ``base``/``noise``: the noise tunnel's base method and standard
    deviation as a fraction of the input's range. ``window``/``stride``: occlusion's. Images are processed
    ``batch_size`` at a time. Methods that draw random numbers (``METHODS[m].random``) follow torch's seed (GradientSHAP
    also numpy's global one, as Captum draws from it).

    Models on which the wrapped library would be silently wrong (``audit.py``) are refused with a one-line error
    naming the module; ``audit``: the model's ``audit_model`` when the caller has it already (one forward saved per
    call). The model is left exactly as it was, also when something raises.
    """
    info = method_info(method)
    check_images(x)
    hooked = [m for m in (method, base if method == "smoothgrad" else "") if m and method_info(m).audited]
    for name in hooked:  # a noise tunnel over DeepLift has DeepLift's traps
        check_method(audit or cached_audit(model, x), name)
    if info.library == "vizkit" and not info.cam:
        check_interceptable(model, method)
    if info.cam and layer is None:
        layer = default_gradcam_layer(model, (1, *x.shape[1:]))
    # In-place activations break the module hooks of DeepLift and zennit (the audited methods); Captum's other
    # methods hook nothing and only call the forward: neither out-of-place copies nor a snapshot of hooks for them.
    with guarded(model, inplace_off=bool(hooked), snapshot=info.library != "captum" or bool(hooked)):
        resolved = resolve_target(model, x, target, batch_size)
        needs_baseline = info.baseline or (method == "smoothgrad" and METHODS[base].baseline)
        base_tensor = make_baseline(baseline, x) if needs_baseline else torch.zeros_like(x)
        if info.library == "captum":
            options = CaptumOptions(samples=samples, noise=noise, window=window, stride=stride, base=base,
                                    batch_size=batch_size)
            std = noise * float(x.max() - x.min())
            return run_batched(x, resolved, base_tensor, batch_size,
                               lambda xb, tb, bb: captum_attribute(method, model, xb, tb, bb, options, std))
        if method == "lrp":
            bounds = (float(x.min()), float(x.max()))
            return run_batched(x, resolved, base_tensor, batch_size,
                               lambda xb, tb, bb: lrp_batch(model, xb, tb, make_composite(composite, model, bounds)))
        if info.cam:
            assert layer is not None
            cam_layer = layer
            return run_batched(x, resolved, base_tensor, batch_size,
                               lambda xb, tb, bb: cam_batch(method, model, xb, cam_layer, tb, batch_size))
        rule = guided_batch if method == "guided-backprop" else deconvnet_batch
        return run_batched(x, resolved, base_tensor, batch_size, lambda xb, tb, bb: rule(model, xb, tb))


_AUDITS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], ModelAudit]] = weakref.WeakKeyDictionary()


def cached_audit(model: nn.Module, x: torch.Tensor) -> ModelAudit:
    """``audit_model`` once per model, input size and module structure (each module's type, its own ``forward``
    if patched, its in-place flag): the audit costs a forward, which repeated calls would otherwise pay each time."""
    key = (tuple(x.shape[1:]), x.dtype, tuple((name, type(m), m.__dict__.get("forward"), getattr(m, "inplace", None))
                                              for name, m in model.named_modules()))
    hit = _AUDITS.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    audit = audit_model(model, x[:1])
    _AUDITS[model] = (key, audit)
    return audit


def guided_batch(model: nn.Module, x: torch.Tensor, target: list[int] | TargetFn) -> torch.Tensor:
    targets = target if callable(target) else [[t] for t in target]
    return torch.from_numpy(guided_backprop(model, x, targets)[:, 0]).to(x.device)


def deconvnet_batch(model: nn.Module, x: torch.Tensor, target: list[int] | TargetFn) -> torch.Tensor:
    """The target's score projected to the input with the deconvnet rule on every rectifier call."""
    x = x.detach().requires_grad_(True)  # an alias: the caller's tensor keeps its flag, nothing is copied
    with torch.enable_grad():
        with DeconvRules():
            score = objective(model(x), target)
        (grad,) = torch.autograd.grad(score, x, torch.ones_like(score))
    return grad


__all__ = ["attribute"]
