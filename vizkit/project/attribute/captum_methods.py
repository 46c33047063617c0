"""The gradient and perturbation methods, computed by Captum: vizkit only builds the call.

A target function is wrapped into the forward (``fn(model(x))``, Captum target ``None``), so every method accepts
multi-label and regression targets. Options: ``samples`` is IG's step count, GradientSHAP's and the noise tunnel's
sample count; ``noise`` the noise tunnel's standard deviation as a fraction of the batch's value range (0.15 in
Smilkov et al.); ``window``/``stride`` occlusion's square window and step in pixels (default size // 8 and half of
it); ``batch_size`` is also the number of occlusion windows evaluated per forward.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.attribute.methods import SMOOTHABLE
from vizkit.project.targets import TargetFn


@dataclass(frozen=True)
class CaptumOptions:
    samples: int | None = None
    noise: float = 0.15
    window: int | None = None
    stride: int | None = None
    base: str = "saliency"  # the noise tunnel's base method
    batch_size: int = 16


class _Scored(nn.Module):
    """``fn(model(x))``: a target function turned into a forward that Captum sees as one output per example."""

    def __init__(self, model: nn.Module, fn: TargetFn) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model(x))


def _forward(model: nn.Module, target: list[int] | TargetFn) -> tuple[nn.Module, list[int] | None]:
    return (_Scored(model, target), None) if callable(target) else (model, list(target))


def _algorithm(method: str, forward: nn.Module) -> Any:
    from captum.attr import DeepLift, GradientShap, InputXGradient, IntegratedGradients, Occlusion, Saliency

    classes = {"saliency": Saliency, "gradient-x-input": InputXGradient, "integrated-gradients": IntegratedGradients,
               "deeplift": DeepLift, "gradient-shap": GradientShap, "occlusion": Occlusion}
    return classes[method](forward)


def _kwargs(method: str, x: torch.Tensor, baseline: torch.Tensor, o: CaptumOptions) -> dict[str, Any]:
    if method == "integrated-gradients":
        return {"baselines": baseline, "n_steps": o.samples or 50}
    if method == "deeplift":
        return {"baselines": baseline}
    if method == "gradient-shap":
        return {"baselines": baseline, "n_samples": o.samples or 20}
    if method == "occlusion":
        window = o.window or max(1, min(x.shape[-2:]) // 8)
        stride = o.stride or max(1, window // 2)
        return {"sliding_window_shapes": (x.shape[1], window, window), "strides": (x.shape[1], stride, stride),
                "baselines": baseline, "perturbations_per_eval": max(1, o.batch_size)}
    return {}


def captum_attribute(method: str, model: nn.Module, x: torch.Tensor, target: list[int] | TargetFn,
                     baseline: torch.Tensor, options: CaptumOptions, noise_std: float = 0.0) -> torch.Tensor:
    """One batch through Captum. ``noise_std`` (absolute) is the noise tunnel's, fixed by the caller for the whole
    input so that batching does not change it."""
    with warnings.catch_warnings():
        # DeepLift announces the hooks it sets on activations and removes afterwards; vizkit's audit has already
        # checked that this model's activations are ones those hooks handle, so the warning only adds noise
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
        return _captum(method, model, x, target, baseline, options, noise_std)


def _captum(method: str, model: nn.Module, x: torch.Tensor, target: list[int] | TargetFn, baseline: torch.Tensor,
            options: CaptumOptions, noise_std: float) -> torch.Tensor:
    forward, captum_target = _forward(model, target)
    # a detached alias (no copy) carries the flag: the caller's tensor is untouched; Captum warns if it sets it
    x = x.detach().requires_grad_(method != "occlusion")
    if method != "smoothgrad":
        return _algorithm(method, forward).attribute(x, target=captum_target, **_kwargs(method, x, baseline, options))
    from captum.attr import NoiseTunnel

    if options.base not in SMOOTHABLE:
        raise UserInputError(f"smoothgrad cannot wrap '{options.base}'; choose a base from {', '.join(SMOOTHABLE)}")
    tunnel = NoiseTunnel(_algorithm(options.base, forward))
    base_kwargs = _kwargs(options.base, x, baseline, CaptumOptions(batch_size=options.batch_size))
    samples = options.samples or 25
    return tunnel.attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=noise_std, target=captum_target,
                            **base_kwargs)


__all__ = ["CaptumOptions", "captum_attribute"]
