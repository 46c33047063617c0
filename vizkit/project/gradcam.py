"""Grad-CAM, guided backpropagation and guided Grad-CAM for a batch of images and several target classes.

Grad-CAM (Selvaraju et al. 2017): with ``A`` the layer's maps (C, h, w) and ``y`` the target's pre-softmax score,
``cam_raw = relu(sum_c mean_hw(dy/dA_c) * A_c)``; ``cam`` is it upsampled bilinearly to the input size
(``align_corners=False``) and divided by its maximum, so 0 keeps meaning "no positive evidence" (a CAM that the
ReLU zeroed everywhere stays 0; ``GradCamOutput.zero_cam`` flags it). Guided backprop (Springenberg et al.) is
the input gradient with every rectifier passing ``relu(its ordinary gradient)`` down; guided Grad-CAM is guided
backprop times ``cam``.

One forward pass serves all images and targets: the images are stacked, and per target index one backward is
seeded with each image's own class (images do not interact in eval mode). The forward runs under a
``GuidedBackpropRules`` mode (``vizkit.project.rules``), which attaches the guided rule to *every* rectifier call
(functional ``F.relu`` in GoogLeNet/Inception, in-place, reused modules) and can be switched off for the Grad-CAM
backward, which needs the ordinary gradient: per target, one backward from the scores to the layer (ordinary),
one to the input (guided). Parameters are frozen, so no weight gradients are computed.

Default layer (``default_gradcam_layer``): the last spatial feature layer, ``default_layers(model, shape)[-1]``:
the outermost module that runs wholly at the network's last spatial resolution before global pooling.

- torchvision: ``resnet50`` -> ``layer4.2`` (the last bottleneck; its output *is* ``layer4``'s output, and
  ``layer4`` itself is not chosen because its first block starts at 14x14), ``resnet18`` -> ``layer4``,
  ``vgg16`` -> ``features.30`` (the last max-pool, 7x7), ``densenet121`` -> ``features.norm5`` (the final
  ``F.relu`` is functional and is applied above the layer), ``googlenet`` -> ``inception5b``,
  ``inception_v3`` -> ``Mixed_7c``, ``mobilenet_v2`` -> ``features.18``, ``efficientnet_b0`` -> ``features.8``,
  ``convnext_tiny`` -> ``features.7``.
- timm: ``tf_efficientnet_lite0`` / ``efficientnet_b0`` -> ``bn2`` (BatchNormAct: after the head activation),
  ``resnet50`` -> ``layer4.2``, ``convnext_tiny`` -> ``stages.3.blocks``, ``vgg16`` -> ``features.30``.
- vizkit zoo: the default ``efficientnet_lite0`` -> ``bn2``; ``lenet5`` -> ``features.pool2`` (5x5);
  ``zfnet`` -> ``features.pool5``; ``mobilenet_v1`` -> ``features.block13``.

Limits: models compiled with ``torch.jit.script`` run outside Python calls, so guided backprop could not be
attached; they are refused.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.hooks import Hooks
from vizkit.capture.recorder import Recorder, resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, UserInputError
from vizkit.project.results import AuditEntry, GradCamResult
from vizkit.project.rules import GuidedBackpropRules, check_interceptable
from vizkit.project.targets import Target, TargetFn, target_objectives

Targets = Sequence[Sequence[Target]] | TargetFn


@dataclass
class GradCamOutput:
    """Numpy arrays for N images x T targets (float32 unless stated).

    targets (N, T) int64 class indices (-1 for a target function); scores (N, T) softmax probabilities of those
    classes (a target function's own score); cam_raw (N, T, h, w)
    at the layer's resolution, before upsampling and scaling; cam (N, T, H, W) upsampled and scaled to [0, 1];
    guided_backprop and guided_gradcam (N, T, C, H, W), raw; audit: the rectifier calls the guided rule hit;
    logits (N, classes): the model's output, for predictions (None where not kept).
    """

    targets: np.ndarray
    scores: np.ndarray
    cam_raw: np.ndarray
    cam: np.ndarray
    guided_backprop: np.ndarray
    guided_gradcam: np.ndarray
    audit: list[AuditEntry] = field(default_factory=list)
    logits: np.ndarray | None = None

    @property
    def zero_cam(self) -> np.ndarray:
        """(N, T) bool: the ReLU removed every location, so ``cam`` was left all zero (not scaled)."""
        return ~np.any(self.cam_raw > 0, axis=(2, 3))


def default_gradcam_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The last spatial feature layer (see the module docstring for what it is per model family)."""
    layers = default_layers(model, input_shape)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no spatial feature layer for input {tuple(input_shape)}; "
                         "pass a layer name (see 'vizkit layers')")
    return layers[-1]


def gradcam(model: nn.Module, x: torch.Tensor, layer: str, targets: Targets | None = None, *,
            guided: bool = True) -> GradCamOutput:
    """Grad-CAM at ``layer``, guided backprop and guided Grad-CAM for every image of ``x`` (N, C, H, W).

    ``targets[n]`` lists the classes to explain for image n (the same count T for every image; ``None`` entries
    mean that image's top-1); ``targets=None`` is the top-1 class of each image. A target may also be a function
    ``f(logits) -> (N,)`` scores (a multi-label sum, a regression output, a region of a segmentation map); a bare
    function is one target for every image, and ``lambda z: z[:, k]`` equals class ``k``. The model is left exactly
    as it was (flags, gradients, hooks), also when the forward raises.

    ``guided=False`` computes the CAMs only: the autograd graph then starts at the layer (nothing below it is
    recorded or back-propagated), and ``guided_backprop``/``guided_gradcam`` are empty (N, T, 0, H, W) arrays.
    """
    if not guided:
        return _cam_only(model, x, layer, targets)
    return _explain(model, x, layer, targets)


def guided_backprop(model: nn.Module, x: torch.Tensor, targets: Targets) -> np.ndarray:
    """Guided backprop of each image's target classes: (N, T, C, H, W) float32, raw."""
    return _explain(model, x, None, targets).guided_backprop


def _explain(model: nn.Module, x: torch.Tensor, layer: str | None, targets: Targets | None) -> GradCamOutput:
    if x.dim() != 4:
        raise UserInputError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    check_interceptable(model, "guided-backprop")
    with preserve_model_state(model), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        with GuidedBackpropRules() as rules, Recorder(model, [layer] if layer else []) as rec:
            logits = _check_logits(rec.run(x), x.shape[0])
        index, objectives = target_objectives(targets, logits)
        scores = _scores(index, objectives, logits)
        maps = _check_maps(rec.outputs[layer], layer) if layer else None
        cams, guided = [], []
        for t, objective in enumerate(objectives):
            seed = torch.ones_like(objective)
            if maps is not None:
                rules.guided = False  # Grad-CAM weights come from the ordinary gradient
                (grad_maps,) = torch.autograd.grad(objective, maps, seed, retain_graph=True, allow_unused=True)
                if grad_maps is None:
                    raise ModelError(f"the class scores do not depend on layer '{layer}'; pick a layer on the path "
                                     "to the classifier")
                weights = grad_maps.mean(dim=(2, 3), keepdim=True)
                cams.append(torch.relu((weights * maps.detach()).sum(dim=1)))
            rules.guided = True
            (grad,) = torch.autograd.grad(objective, x, seed, retain_graph=t + 1 < index.shape[1])
            guided.append(grad)
    gbp = torch.stack(guided, dim=1)  # (N, T, C, H, W)
    if maps is None:
        n, t = index.shape
        empty = np.zeros((n, t, 0, 0), np.float32)
        return GradCamOutput(_np(index), _np(scores), empty, empty, _np(gbp), np.zeros_like(_np(gbp)), rules.audit(),
                             _np(logits))
    cam_raw = torch.stack(cams, dim=1)  # (N, T, h, w)
    cam = scale_cam(upsample_cam(cam_raw, (x.shape[-2], x.shape[-1])))
    return GradCamOutput(_np(index), _np(scores), _np(cam_raw), _np(cam), _np(gbp), _np(gbp * cam.unsqueeze(2)),
                         rules.audit(), _np(logits))


class GraphFrom:
    """Inside the ``with`` block, ``module``'s first output becomes a leaf that requires grad (``.maps``): the
    autograd graph starts there. Downstream gets a copy, so in-place ops after the layer stay legal."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.maps: torch.Tensor | None = None

    def __enter__(self) -> GraphFrom:
        self.hooks = Hooks()
        self.hooks.forward(self.module, self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.remove()

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        if self.maps is not None or not isinstance(output, torch.Tensor):
            return None
        self.maps = output.detach().requires_grad_(True)
        return self.maps.clone()


def _cam_only(model: nn.Module, x: torch.Tensor, layer: str, targets: Targets | None) -> GradCamOutput:
    if x.dim() != 4:
        raise UserInputError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    module = resolve_layers(model, [layer])[layer]
    with preserve_model_state(model), torch.enable_grad():
        with GraphFrom(module) as start:
            logits = _check_logits(model(x.detach()), x.shape[0])
        if start.maps is None:
            raise ModelError(f"layer '{layer}' did not run in the forward pass or returned no tensor; pick a layer "
                             "the model calls (see 'vizkit layers')")
        maps = _check_maps(start.maps, layer)
        index, objectives = target_objectives(targets, logits)
        scores = _scores(index, objectives, logits)
        cams = []
        for t, objective in enumerate(objectives):
            (grad_maps,) = torch.autograd.grad(objective, maps, torch.ones_like(objective),
                                               retain_graph=t + 1 < index.shape[1], allow_unused=True)
            if grad_maps is None:
                raise ModelError(f"the class scores do not depend on layer '{layer}'; pick a layer on the path "
                                 "to the classifier")
            cams.append(torch.relu((grad_maps.mean(dim=(2, 3), keepdim=True) * maps.detach()).sum(dim=1)))
    cam_raw = torch.stack(cams, dim=1)
    cam = scale_cam(upsample_cam(cam_raw, (x.shape[-2], x.shape[-1])))
    empty = np.zeros((*index.shape, 0, *x.shape[-2:]), np.float32)
    return GradCamOutput(_np(index), _np(scores), _np(cam_raw), _np(cam), empty, empty.copy(), [], _np(logits))


def _scores(index: torch.Tensor, objectives: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """(N, T): the softmax probability of a class target, the function's own score for a function target."""
    probs = torch.softmax(logits.detach().double(), dim=1).gather(1, index.clamp(min=0))
    raw = torch.stack([o.detach().double() for o in objectives], dim=1)
    return torch.where(index >= 0, probs, raw)


def upsample_cam(cam_raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, T, h, w) -> (N, T, H, W), bilinear with ``align_corners=False`` (as ``F.interpolate`` / cv2.resize)."""
    return F.interpolate(cam_raw, size=size, mode="bilinear", align_corners=False)


def scale_cam(cam: torch.Tensor) -> torch.Tensor:
    """Divide each (H, W) map by its maximum; an all-zero map stays zero (no division by zero)."""
    peak = cam.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, cam / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(cam))


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.numpy().astype(np.int64) if not t.is_floating_point() else t.float().numpy()


def _check_logits(logits: Any, n: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"the model returns {shape}, not class scores (N, classes); Grad-CAM needs a classifier")
    return logits


def _check_maps(maps: torch.Tensor, layer: str) -> torch.Tensor:
    if maps.dim() != 4:
        raise ModelError(f"layer '{layer}' gives shape {tuple(maps.shape)}, not (N, C, h, w) maps; pick a "
                         "convolutional layer (see 'vizkit layers')")
    if not maps.requires_grad:
        raise ModelError(f"layer '{layer}' does not depend on the input; pick a layer the class scores depend on")
    return maps





__all__ = ["GradCamOutput", "GradCamResult", "default_gradcam_layer", "gradcam", "guided_backprop", "scale_cam",
           "upsample_cam"]
