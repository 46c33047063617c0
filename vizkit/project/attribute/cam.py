"""Class activation maps: one shared base (the layer's maps and, when needed, their gradients), each variant only
its weighting (as pytorch-grad-cam's ``BaseCAM``).

With ``A`` the layer's maps (N, C, h, w) and ``g = d target / d A``:

- ``gradcam``: ``w_c = mean_hw g_c``;
- ``gradcam++``: ``a = g^2 / (2 g^2 + sum_hw(A_c) g^3 + 1e-6)`` (0 where ``g = 0``), ``w_c = sum_hw relu(g_c) a_c``
  (Chattopadhay et al. 2018, in pytorch-grad-cam's form);
- ``score-cam``: each channel upsampled to the input (bilinear, ``align_corners=True`` as pytorch-grad-cam),
  min-max scaled to [0, 1], multiplied into the image; ``w = softmax_c(target on each masked image)``
  (Wang et al. 2020; C extra forwards per image, in batches of ``batch_size``);
- ``eigen-cam``: no weights and no target: the projection of the centred maps (hw, C) on their first right
  singular vector, signed so that the vector's loadings sum to >= 0 (an SVD's sign is arbitrary).

The map is ``relu(sum_c w_c A_c)`` (Eigen-CAM: ``relu(projection)``), upsampled bilinearly to the input
(``align_corners=False``) and returned *unscaled* as (N, 1, H, W): renderers normalise each method on its own.
The layer's output reaches the rest of the network as a copy, so an in-place activation after the layer cannot
change the recorded maps (docs/DESIGN.md, "Traps").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.recorder import resolve_layers
from vizkit.errors import ModelError
from vizkit.project.attribute.inputs import chunks, objective
from vizkit.project.gradcam import GraphFrom, upsample_cam
from vizkit.project.targets import TargetFn


@dataclass
class CamContext:
    model: nn.Module
    x: torch.Tensor
    target: list[int] | TargetFn
    maps: torch.Tensor  # (N, C, h, w), detached
    grads: torch.Tensor | None  # d target / d maps, when the variant needs them
    batch_size: int


class BaseCam:
    """A CAM variant: ``weights`` per channel, or a whole ``raw_cam`` (N, h, w) where it is not a weighted sum."""

    needs_gradient = True

    def weights(self, c: CamContext) -> torch.Tensor:
        raise NotImplementedError

    def raw_cam(self, c: CamContext) -> torch.Tensor:
        return torch.relu((self.weights(c)[:, :, None, None] * c.maps).sum(dim=1))


class GradCam(BaseCam):
    def weights(self, c: CamContext) -> torch.Tensor:
        assert c.grads is not None
        return c.grads.mean(dim=(2, 3))


class GradCamPlusPlus(BaseCam):
    def weights(self, c: CamContext) -> torch.Tensor:
        g = c.grads
        assert g is not None
        g2 = g * g
        a = g2 / (2 * g2 + c.maps.sum(dim=(2, 3), keepdim=True) * g2 * g + 1e-6)
        a = torch.where(g != 0, a, torch.zeros_like(a))
        return (torch.relu(g) * a).sum(dim=(2, 3))


class ScoreCam(BaseCam):
    needs_gradient = False

    def weights(self, c: CamContext) -> torch.Tensor:
        n, ch = c.maps.shape[:2]
        masks = F.interpolate(c.maps, size=c.x.shape[-2:], mode="bilinear", align_corners=True)
        flat = masks.flatten(2)
        lo, hi = flat.amin(dim=2)[..., None, None], flat.amax(dim=2)[..., None, None]
        masks = (masks - lo) / (hi - lo + 1e-8)
        scores = torch.empty(n, ch, dtype=c.x.dtype, device=c.x.device)
        with torch.no_grad():
            for i in range(n):
                target = c.target if callable(c.target) else [c.target[i]] * ch
                for s in chunks(ch, c.batch_size):
                    masked = c.x[i : i + 1] * masks[i, s, None]
                    tgt = target if callable(target) else target[s]
                    scores[i, s] = objective(c.model(masked), tgt)
        return torch.softmax(scores, dim=1)


class EigenCam(BaseCam):
    needs_gradient = False

    def raw_cam(self, c: CamContext) -> torch.Tensor:
        n, _, h, w = c.maps.shape
        flat = c.maps.flatten(2).transpose(1, 2).double()  # (N, hw, C)
        centred = flat - flat.mean(dim=1, keepdim=True)
        _, _, vt = torch.linalg.svd(centred, full_matrices=False)
        first = vt[:, 0, :]
        first = first * torch.where(first.sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
        return torch.relu(centred @ first[:, :, None]).reshape(n, h, w).to(c.maps.dtype)


CAMS: dict[str, BaseCam] = {"gradcam": GradCam(), "gradcam++": GradCamPlusPlus(), "score-cam": ScoreCam(),
                            "eigen-cam": EigenCam()}


def layer_maps(model: nn.Module, x: torch.Tensor, layer: str, target: list[int] | TargetFn,
               gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's maps for ``x`` and (``gradient=True``) the target's gradient with respect to them; the autograd
    graph starts at the layer, so nothing below it is back-propagated."""
    module = resolve_layers(model, [layer])[layer]
    with torch.set_grad_enabled(gradient), GraphFrom(module) as start:
        logits = model(x.detach())
    if start.maps is None or start.maps.dim() != 4:
        raise ModelError(f"layer '{layer}' gave no (N, C, h, w) maps in the forward pass; pick a convolutional layer "
                         "the model calls (see 'vizkit layers')")
    if not gradient:
        return start.maps.detach(), None
    score = objective(logits, target)
    (grads,) = torch.autograd.grad(score, start.maps, torch.ones_like(score), allow_unused=True)
    if grads is None:
        raise ModelError(f"the target does not depend on layer '{layer}'; pick a layer on the path to the output")
    return start.maps.detach(), grads


def cam_batch(method: str, model: nn.Module, x: torch.Tensor, layer: str, target: list[int] | TargetFn,
              batch_size: int) -> torch.Tensor:
    """(N, 1, H, W) upsampled, unscaled map of one batch."""
    variant = CAMS[method]
    maps, grads = layer_maps(model, x, layer, target, variant.needs_gradient)
    raw = variant.raw_cam(CamContext(model, x.detach(), target, maps, grads, batch_size))
    return upsample_cam(raw[:, None], (x.shape[-2], x.shape[-1]))


__all__ = ["CAMS", "BaseCam", "CamContext", "cam_batch", "layer_maps"]
