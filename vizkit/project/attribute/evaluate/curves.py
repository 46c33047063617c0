"""Deletion and insertion curves (Petsiuk et al. 2018; Samek et al. 2017's pixel flipping), MoRF and LeRF.

Pixels are ranked by their relevance summed over channels (a CAM's single channel as is): MoRF takes the most
relevant first, LeRF the least (ties keep pixel order: a stable sort). At step k of ``steps``, the first
``floor(k * P / steps)`` pixels of the ranking (all channels) are *deleted* (replaced by the baseline) or
*inserted* (copied from the image into the baseline). The curve is the target's score at every step, step 0
included; its area is the trapezoid rule over the removed fraction in [0, 1]. A faithful map gives a low MoRF
deletion area (the score falls at once), a high MoRF insertion area and a high LeRF deletion area.

Scores: ``"probability"`` (softmax of the class; default) or ``"logit"``; a target function gives its own value.
All (step, image) pairs are scored in batches of ``batch_size``; no Python loop over pixels.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.attribute.inputs import (
    AttrTarget,
    Baseline,
    check_images,
    chunks,
    guarded,
    make_baseline,
    objective,
    resolve_target,
)
from vizkit.project.targets import TargetFn

ORDERS = ("morf", "lerf")
MODES = ("deletion", "insertion")


@dataclass
class Curve:
    """fractions (K+1,) of pixels removed or inserted; scores (N, K+1) of the target after each step."""

    mode: str
    order: str
    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """(N,) area under each image's curve over the fraction axis [0, 1]."""
        return np.trapezoid(self.scores, self.fractions, axis=1)


def pixel_ranks(attribution: torch.Tensor, order: str) -> torch.Tensor:
    """(N, H*W) rank of every pixel (0 = first to go) by relevance summed over channels."""
    if order not in ORDERS:
        raise UserInputError(f"unknown order '{order}'; choose morf (most relevant first) or lerf")
    relevance = attribution.detach().double().sum(dim=1).flatten(1)
    sequence = torch.argsort(-relevance if order == "morf" else relevance, dim=1, stable=True)
    ranks = torch.empty_like(sequence)
    ranks.scatter_(1, sequence, torch.arange(sequence.shape[1], device=sequence.device).expand_as(sequence))
    return ranks


def score_of(logits: torch.Tensor, target: list[int] | TargetFn, score: str) -> torch.Tensor:
    if score not in ("probability", "logit"):
        raise UserInputError(f"unknown score '{score}'; choose probability or logit")
    if score == "probability" and not callable(target):
        return objective(torch.softmax(logits.double(), dim=1), target)
    return objective(logits, target).double()


def scored_batches(model: nn.Module, images: Iterator[tuple[torch.Tensor, list[int] | TargetFn]],
                   score: str) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([score_of(model(xb), tb, score) for xb, tb in images])


def perturbation_curve(model: nn.Module, x: torch.Tensor, attribution: torch.Tensor, target: AttrTarget = None, *,
                       mode: str = "deletion", order: str = "morf", steps: int = 20, baseline: Baseline = "black",
                       batch_size: int = 16, score: str = "probability") -> Curve:
    """The deletion or insertion curve of ``attribution`` (N, C or 1, H, W) on ``x`` (see the module docstring)."""
    check_images(x)
    if mode not in MODES:
        raise UserInputError(f"unknown curve '{mode}'; choose deletion or insertion")
    if attribution.shape[0] != x.shape[0] or attribution.shape[-2:] != x.shape[-2:]:
        raise UserInputError(f"attribution {tuple(attribution.shape)} does not match the images {tuple(x.shape)}")
    if steps < 1:
        raise UserInputError(f"steps must be at least 1, got {steps}")
    n, _, h, w = x.shape
    pixels = h * w
    ranks = pixel_ranks(attribution.to(x.device), order).view(n, 1, h, w)
    counts = [pixels * k // steps for k in range(steps + 1)]
    with guarded(model):
        resolved = resolve_target(model, x, target, batch_size)
        fill = make_baseline(baseline, x)
        start, end = (x, fill) if mode == "deletion" else (fill, x)

        def images() -> Iterator[tuple[torch.Tensor, list[int] | TargetFn]]:
            pairs = [(k, i) for k in range(steps + 1) for i in range(n)]
            for s in chunks(len(pairs), batch_size):
                ks = torch.tensor([counts[k] for k, _ in pairs[s]], device=x.device)
                idx = torch.tensor([i for _, i in pairs[s]], device=x.device)
                changed = ranks[idx] < ks.view(-1, 1, 1, 1)
                batch = torch.where(changed, end[idx], start[idx])
                yield batch, (resolved if callable(resolved) else [resolved[i] for i in idx.tolist()])

        scores = scored_batches(model, images(), score)
    fractions = np.array(counts, dtype=np.float64) / pixels
    return Curve(mode, order, fractions, scores.view(steps + 1, n).T.cpu().numpy())


__all__ = ["MODES", "ORDERS", "Curve", "perturbation_curve", "pixel_ranks", "score_of"]
