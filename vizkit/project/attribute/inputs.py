"""What every attribution method shares: targets, baselines, batches, and a model left exactly as it was.

Targets: ``None`` (each image's top-1 class), an ``int`` (that class for every image), a sequence with one class
(or ``None``) per image, or a function ``f(logits) -> (N,)`` scores, as vizkit's Grad-CAM accepts
(``vizkit.project.targets``). A function must act row by row: Captum's path methods call it on a batch of
interpolated inputs.

Baselines (integrated gradients, DeepLift, GradientSHAP, occlusion's fill): ``"black"`` the zero of the model's
input (for normalised inputs pass the normalised black image as a tensor), ``"blur"`` the image under a Gaussian
blur of sigma = size / 16 (Sturmfels et al. 2020), ``"mean"`` each image's per-channel mean, a tensor of shape
(C, H, W), (1, C, H, W) or (N, C, H, W), or a ``.pt``/``.npy`` file holding one.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, UserInputError
from vizkit.project.targets import TargetFn

AttrTarget = int | Sequence[int | None] | TargetFn | None
Baseline = str | Path | torch.Tensor
BASELINES = ("black", "blur", "mean")

_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserInputError(f"expected a batch of images (N, C, H, W), got {shape}")


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's (N, classes) output, batch by batch, without a graph."""
    with torch.no_grad():
        out = [model(x[s]) for s in chunks(x.shape[0], batch_size)]
    if not all(isinstance(o, torch.Tensor) and o.dim() == 2 for o in out):
        raise ModelError("the model does not return class scores (N, classes); attribution needs a classifier or "
                         "a target function")
    return torch.cat(out)


def resolve_target(model: nn.Module, x: torch.Tensor, target: AttrTarget, batch_size: int) -> list[int] | TargetFn:
    """One class index per image, or the target function itself."""
    if callable(target):
        return target
    n = x.shape[0]
    if isinstance(target, (int, np.integer)):
        picked: list[int | None] = [int(target)] * n
    elif target is None:
        picked = [None] * n
    else:
        picked = [None if t is None else int(t) for t in target]
        if len(picked) != n:
            raise UserInputError(f"got {len(picked)} targets for {n} images; give one class per image")
    if any(t is None for t in picked):
        top1 = logits_of(model, x, batch_size).argmax(dim=1).tolist()
        picked = [top1[i] if t is None else t for i, t in enumerate(picked)]
    return [int(t) for t in picked if t is not None]


def target_slice(target: list[int] | TargetFn, s: slice) -> list[int] | TargetFn:
    return target if callable(target) else target[s]


def objective(logits: torch.Tensor, target: list[int] | TargetFn) -> torch.Tensor:
    """(N,) differentiable scores: the class logits, or the target function's values."""
    if callable(target):
        values = target(logits)
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != (logits.shape[0],):
            raise UserInputError(f"a target function must return one score per image, shape ({logits.shape[0]},)")
        return values
    index = torch.as_tensor(target, device=logits.device, dtype=torch.long)
    if int(index.max()) >= logits.shape[1] or int(index.min()) < 0:
        raise UserInputError(f"target class out of range: the model has {logits.shape[1]} classes")
    return logits.gather(1, index[:, None]).squeeze(1)


def make_baseline(spec: Baseline, x: torch.Tensor) -> torch.Tensor:
    """The baseline for each image of ``x``, shape of ``x`` (see the module docstring)."""
    if isinstance(spec, torch.Tensor):
        return _broadcast(spec.to(x), x, "the baseline tensor")
    if isinstance(spec, str) and spec in BASELINES:
        if spec == "black":
            return torch.zeros_like(x)
        if spec == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
        sigma = max(x.shape[-2:]) / 16
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)
        return TF.gaussian_blur(x, [max(size, 1)] * 2, [sigma, sigma])
    path = Path(spec)
    if not path.is_file():
        raise UserInputError(f"baseline '{spec}' is neither {', '.join(BASELINES)} nor a .pt/.npy file")
    if path.suffix == ".npy":
        loaded = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix in (".pt", ".pth"):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise UserInputError(f"baseline file '{spec}': use a .pt or .npy file holding a (C, H, W) tensor")
    if not isinstance(loaded, torch.Tensor):
        raise UserInputError(f"baseline file '{spec}' holds {type(loaded).__name__}, not a tensor")
    return _broadcast(loaded.to(x), x, f"baseline file '{spec}'")


def _broadcast(b: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    if b.dim() == 3:
        b = b[None]
    if b.dim() != 4 or b.shape[1:] != x.shape[1:] or b.shape[0] not in (1, x.shape[0]):
        raise UserInputError(f"{what} has shape {tuple(b.shape)}; the images are {tuple(x.shape)}: give (C, H, W) "
                             "or one per image")
    return b.expand_as(x).clone()


@contextmanager
def guarded(model: nn.Module, *, inplace_off: bool = False, snapshot: bool = True) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the block, then the model exactly as it was: flags, gradients, and every
    hook and attribute a wrapped library (Captum's DeepLift stores ``module.input``; zennit registers hooks) added,
    also when the block raises. ``inplace_off`` runs in-place activations out of place for the block (forward values
    are identical; Captum's and zennit's module hooks break on in-place outputs). ``snapshot=False`` skips the
    attribute and hook snapshot (about 20 us per module) for code that only calls the model's forward."""
    saved = {m: (dict(m.__dict__), {k: dict(getattr(m, k)) for k in _HOOK_DICTS if hasattr(m, k)})
             for m in model.modules()} if snapshot else {}
    try:
        with preserve_model_state(model):
            if inplace_off:
                for m in model.modules():
                    if getattr(m, "inplace", False) is True:
                        setattr(m, "inplace", False)  # noqa: B010 - any module with the flag, not one type
            yield model
    finally:
        for m, (attrs, hooks) in saved.items():
            for key in [k for k in m.__dict__ if k not in attrs]:
                del m.__dict__[key]
            for key, value in attrs.items():
                if key not in _HOOK_DICTS and m.__dict__.get(key) is not value:
                    m.__dict__[key] = value
            for key, content in hooks.items():
                live = getattr(m, key)
                if dict(live) != content:
                    live.clear()
                    live.update(content)


def as_float32(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parts as one float32 tensor; a single part is not copied."""
    if len(parts) == 1:
        return parts[0].detach().float()
    return torch.cat([p.detach().float() for p in parts])



def run_batched(x: torch.Tensor, target: list[int] | TargetFn, baseline: torch.Tensor, batch_size: int,
                run: Callable[..., Any]) -> torch.Tensor:
    """``run(x_batch, target_batch, baseline_batch)`` over batches of ``batch_size`` images, concatenated."""
    return as_float32([run(x[s], target_slice(target, s), baseline[s]) for s in chunks(x.shape[0], batch_size)])


__all__ = ["BASELINES", "AttrTarget", "Baseline", "chunks", "guarded", "logits_of", "make_baseline", "objective",
           "resolve_target", "run_batched"]
