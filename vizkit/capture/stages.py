"""Pick default layers: the ones a model declares (``vizkit_default_layers``, e.g. ZFNet's layers 1-5 of the
paper), else one per resolution stage."""
from __future__ import annotations

import torch
from torch import nn

from vizkit.capture.hooks import Hooks
from vizkit.capture.probe import probe_input
from vizkit.capture.state import preserve_model_state
from vizkit.errors import ModelError

# Modules that only reshape or pass through: never a stage's representative.
_SKIP = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity, nn.Flatten)


DECLARED = "vizkit_default_layers"


def default_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """The layers the model names in a ``vizkit_default_layers`` attribute (a sequence of ``named_modules()``
    names; the zoo's ZFNet names the paper's layers 1-5, your own model may too), else one layer per spatial
    resolution, in execution order.

    A stage is a run of module calls producing the same spatial size. Its representative is the outermost module
    (fewest dots in its name) that runs wholly inside the stage, and of those the last to finish: ``layer1`` for a
    ResNet stage, ``features.8`` for VGG's second stage. Modules reused across stages (a ResNet block's ReLU) or
    containers that span several stages (``features``) are not eligible.
    """
    declared = getattr(model, DECLARED, None)
    if declared:
        modules = dict(model.named_modules())
        missing = [name for name in declared if name not in modules]
        if missing:
            raise ModelError(f"{type(model).__name__}.{DECLARED} names {', '.join(missing)}, which "
                             "model.named_modules() does not have")
        return list(declared)
    calls: list[tuple[str, tuple[int, int]]] = []
    with Hooks() as hooks:
        for name, module in model.named_modules():
            if name:
                hooks.forward(module, lambda m, i, o, name=name: calls.append((name, (o.shape[-2], o.shape[-1])))
                              if isinstance(o, torch.Tensor) and o.dim() == 4 else None)
        with preserve_model_state(model), torch.no_grad():
            model(probe_input(model, input_shape))
    modules = dict(model.named_modules())
    height, width = input_shape[-2:]
    sizes_of: dict[str, set[tuple[int, int]]] = {}
    order: list[tuple[int, int]] = []
    for name, size in calls:
        if not _spatial(size, height, width):
            continue  # a channels-last view (ConvNeXt permutes) or a pooled vector, not a resolution
        sizes_of.setdefault(name, set()).add(size)
        if size not in order:
            order.append(size)
    chosen = []
    for size in order:
        if size == (1, 1):
            continue
        eligible = [n for n, s in calls if s == size and _within(n, size, sizes_of)
                    and not isinstance(modules[n], _SKIP)]
        if eligible:
            depth = min(n.count(".") for n in eligible)
            chosen.append([n for n in eligible if n.count(".") == depth][-1])
    return list(dict.fromkeys(chosen))


def _spatial(size: tuple[int, int], height: int, width: int) -> bool:
    """True when (h, w) is the input downsampled by one stride in both dimensions (up to rounding)."""
    h, w = size
    return 0 < h <= height and 0 < w <= width and abs(h * width - w * height) <= max(height, width)


def _within(name: str, size: tuple[int, int], sizes_of: dict[str, set[tuple[int, int]]]) -> bool:
    """The module and every submodule that ran produced only this resolution (no container spanning stages)."""
    prefix = name + "."
    return all(sizes == {size} for n, sizes in sizes_of.items() if n == name or n.startswith(prefix))
