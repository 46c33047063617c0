"""Per-image attribution maps in batches, one (H, W) evidence map per image for its own class.

Methods (``METHODS``):

- ``gradxinput`` (default): ``relu(sum_c x_c * dy/dx_c)``, gradient times input summed over colour channels,
  positive part. Input-level, so a mark of a few pixels stays a few pixels (a Grad-CAM at the last spatial layer of a
  small CNN is 8x8 or coarser and smears it over a cell). Summing over channels keeps a coloured mark from splitting
  into three maps; the positive part keeps the evidence *for* the class, which is what a shortcut supplies. For
  piecewise-linear networks it equals LRP-0 / the zero-baseline Taylor term, with the input's zero (the dataset mean
  colour after normalisation) as reference: a mark whose normalised colour is 0 is invisible to it.
- ``gradcam``: Grad-CAM at ``layer`` (``vizkit.project.gradcam``), upsampled to the input and non-negative.
- ``guided-gradcam``: guided backprop times Grad-CAM (``vizkit.project.gradcam``), absolute value summed over
  channels (guided backprop's sign carries no evidence direction).
- ``guided-backprop``: guided backprop alone, absolute value summed over channels.
- ``lrp-<composite>``: LRP relevance from zennit (``vizkit.project.shortcuts.lrp``, through the one LRP path of
  ``vizkit.project.attribute.lrp``), summed over channels, positive part; ``lrp-epsilon-plus-flat`` is SpRAy's
  original relevance. ``epsilon-gamma-box`` takes each batch's minimum and maximum as its bounds.

Every map is non-negative; its scale is whatever the method gives (SpRAy normalises each map later).
The model is left exactly as it was (``preserve_model_state``), also when the forward raises.
"""
from __future__ import annotations

import torch
from torch import nn

from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError, UserInputError
from vizkit.project.attribute.lrp import DEFAULT_COMPOSITE
from vizkit.project.gradcam import gradcam, guided_backprop
from vizkit.project.shortcuts.lrp import COMPOSITES, lrp_maps

METHODS = ("gradxinput", "gradcam", "guided-gradcam", "guided-backprop", *(f"lrp-{c}" for c in COMPOSITES))
DEFAULT_METHOD = "gradxinput"
NEEDS_LAYER = frozenset({"gradcam", "guided-gradcam"})


ALIASES = {"gradient-x-input": "gradxinput"}  # the attribute command's name for it


def method_name(method: str, composite: str = DEFAULT_COMPOSITE) -> str:
    """The method's name in ``METHODS``: ``gradient-x-input`` is ``gradxinput``, ``lrp`` is ``lrp-<composite>``."""
    return f"lrp-{composite}" if method == "lrp" else ALIASES.get(method, method)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserInputError(f"unknown attribution method '{method}': use one of {', '.join(METHODS)} (or "
                             "gradient-x-input, or lrp with a composite)")
    return method


def attribution_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str = DEFAULT_METHOD,
                     layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (N, H, W) float32 >= 0 of each image of ``x`` (N, C, H, W) for its class ``targets[n]``; a target of
    -1 means that image's top-1 class. Returns (maps on x's device, the class explained per image (N,) long)."""
    check_method(method)
    if method in NEEDS_LAYER and not layer:
        raise UserInputError(f"method '{method}' needs a layer")
    if x.dim() != 4:
        raise UserInputError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    targets = targets.to(x.device).long()
    if method == "gradxinput":
        return _grad_x_input(model, x, targets)
    if method.startswith("lrp-"):
        resolved = _resolve(model, x, targets)
        return lrp_maps(model, x, resolved, method[4:]), resolved
    spec: list[list[int | None]] = [[int(t) if t >= 0 else None] for t in targets.tolist()]
    if method == "guided-backprop":
        resolved = _resolve(model, x, targets)
        gbp = guided_backprop(model, x, [[int(t)] for t in resolved.tolist()])
        return torch.from_numpy(gbp[:, 0]).abs().sum(dim=1).to(x.device), resolved
    out = gradcam(model, x, layer or "", spec, guided=method == "guided-gradcam")
    resolved = torch.from_numpy(out.targets[:, 0]).to(x.device)
    if method == "gradcam":
        return torch.from_numpy(out.cam[:, 0]).to(x.device), resolved
    return torch.from_numpy(out.guided_gradcam[:, 0]).abs().sum(dim=1).to(x.device), resolved


def _resolve(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if bool((targets >= 0).all()):
        return targets
    with preserve_model_state(model), torch.no_grad():
        top1 = _logits(model, x).argmax(dim=1)
    return torch.where(targets >= 0, targets, top1)


def _grad_x_input(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with preserve_model_state(model), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        logits = _logits(model, xg)
        if int(targets.max()) >= logits.shape[1]:
            raise UserInputError(f"class {int(targets.max())} does not exist: the model has {logits.shape[1]} classes")
        resolved = torch.where(targets >= 0, targets, logits.detach().argmax(dim=1))
        score = logits.gather(1, resolved[:, None]).sum()  # images are independent in eval mode
        (grad,) = torch.autograd.grad(score, xg)
    return torch.relu((grad * x.detach()).sum(dim=1)).float(), resolved


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"the model returns {shape}, not class scores (N, classes); shortcuts needs a classifier")
    return logits


__all__ = ["ALIASES", "DEFAULT_METHOD", "METHODS", "NEEDS_LAYER", "attribution_maps", "check_method", "method_name"]
