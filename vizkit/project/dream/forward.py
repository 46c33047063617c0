"""One forward pass for a batch of views whose elements each have their own objective, and Lucid's diversity
term. Hooks (``Recorder``) exist only inside the call; the forward stops at the deepest recorded layer when no
objective reads the model's output."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.errors import ModelError
from vizkit.project.dream.objectives import OUTPUT, Objective

__all__ = ["default_diversity_layer", "diversity_penalty", "forward_values", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def default_diversity_layer(model: nn.Module) -> str:
    """The last ``Conv2d`` in module order: diversity of class objectives is judged on its Gram matrices."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer for the diversity term: pass diversity_layer")
    return convs[-1]


def forward_values(model: nn.Module, x: torch.Tensor, objs: Sequence[Objective], views: int,
                   diversity_layer: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x`` holds ``views`` consecutive views per objective: each objective's mean over its views (len(objs),)
    and, when asked, ``diversity_layer``'s activations."""
    layers = list(dict.fromkeys(layer for o in objs for layer in o.layers if layer != OUTPUT))
    if diversity_layer is not None and diversity_layer not in layers:
        layers.append(diversity_layer)
    needs_output = any(OUTPUT in o.layers for o in objs)
    with Recorder(model, layers, stop=not needs_output) as rec:
        out = rec.run(x)
        acts: dict[str, torch.Tensor] = dict(rec.outputs)
    if needs_output:
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"{type(model).__name__} returns {type(out).__name__}, not a logits tensor: class "
                             "objectives need a model whose output is (N, classes)")
        acts[OUTPUT] = out
    values = []
    for i, o in enumerate(objs):
        part = {k: acts[k][i * views:(i + 1) * views] for k in o.layers}
        values.append(o(part).float().mean())
    feats = acts[diversity_layer] if diversity_layer is not None else None
    return torch.stack(values), feats


def diversity_penalty(feats: torch.Tensor, views: int, copies: int) -> torch.Tensor:
    """Lucid's ``diversity``: for each objective's ``copies`` images, the summed cosine similarity of their Gram
    matrices over all pairs, divided by ``copies``; each image's Gram matrix is averaged over its views."""
    f = feats.float()
    f = f.flatten(2) if f.dim() == 4 else f.unsqueeze(-1)  # (n, C, HW)
    grams = (f @ f.transpose(1, 2)).view(-1, views, f.shape[1], f.shape[1]).mean(1)  # (elements, C, C)
    grams = F.normalize(grams.flatten(1), dim=1).view(-1, copies, grams.shape[1] * grams.shape[2])
    sim = grams @ grams.transpose(1, 2)  # (objectives, copies, copies)
    off_diagonal = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    return (off_diagonal / copies).sum()
