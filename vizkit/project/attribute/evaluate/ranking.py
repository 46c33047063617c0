"""Which attribution method to trust on this model and these images: each method scored on faithfulness
(deletion, insertion, ROAD) and on the randomisation check, then ranked.

Metrics, each a mean over images, and the direction that is better:

| metric | better | meaning |
| --- | --- | --- |
| ``deletion-morf`` | lower | the score falls as soon as the most relevant pixels go |
| ``deletion-lerf`` | higher | removing the least relevant pixels first keeps the score |
| ``insertion-morf`` | higher | inserting the most relevant pixels first restores the score |
| ``insertion-lerf`` | lower | inserting the least relevant pixels first leaves the score low |
| ``road-morf`` | lower | as deletion-morf, with ROAD's imputation (no shape leak) |
| ``randomisation`` | lower | the map changes when the weights are random |

``deletion-lerf`` mirrors ``insertion-morf`` (keeping the top k pixels is inserting them) and ``insertion-lerf``
mirrors ``deletion-morf``, so they are not in the default set. The overall order is by mean rank over the metrics
(rank 1 = best on that metric; ties share the mean rank).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vizkit.project.attribute.compute import attribute
from vizkit.project.attribute.evaluate.curves import perturbation_curve
from vizkit.project.attribute.evaluate.randomisation import randomisation_check
from vizkit.project.attribute.evaluate.road import PERCENTAGES, road
from vizkit.project.attribute.inputs import AttrTarget, Baseline, guarded, resolve_target

LOWER_IS_BETTER = {"deletion-morf": True, "deletion-lerf": False, "insertion-morf": False, "insertion-lerf": True,
                   "road-morf": True, "randomisation": True}

DEFAULT_METRICS = ("deletion-morf", "insertion-morf", "road-morf", "randomisation")


@dataclass
class MethodRanking:
    """methods in the order asked; scores[metric] (M,) mean over images; mean_rank (M,); order: method names,
    best first; per_image[metric] (M, N)."""

    methods: list[str]
    scores: dict[str, np.ndarray]
    mean_rank: np.ndarray
    order: list[str]
    per_image: dict[str, np.ndarray] = field(default_factory=dict)


def _ranks(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values if lower_is_better else -values, method="average")


def rank_methods(model: nn.Module, x: torch.Tensor, methods: Sequence[str], target: AttrTarget = None, *,
                 metrics: Sequence[str] = DEFAULT_METRICS, steps: int = 20, baseline: Baseline = "black",
                 percentages: Sequence[int] = PERCENTAGES, batch_size: int = 16, seed: int = 0,
                 **options: Any) -> MethodRanking:
    """Score and rank ``methods`` on ``x`` (see the module docstring); ``options`` go to ``attribute``."""
    with guarded(model):
        resolved = resolve_target(model, x, target, batch_size)
    per_image: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for method in methods:
        torch.manual_seed(seed)
        attr = attribute(model, x, method, resolved, batch_size=batch_size, baseline=baseline, **options)
        for metric in metrics:
            if metric in ("deletion-morf", "deletion-lerf", "insertion-morf", "insertion-lerf"):
                mode, order = metric.split("-")
                curve = perturbation_curve(model, x, attr, resolved, mode=mode, order=order, steps=steps,
                                           baseline=baseline, batch_size=batch_size)
                per_image[metric].append(curve.auc)
            elif metric == "road-morf":
                per_image[metric].append(road(model, x, attr, resolved, percentages=percentages, seed=seed,
                                              batch_size=batch_size).auc)
            elif metric == "randomisation":
                per_image[metric].append(randomisation_check(model, x, method, resolved, seed=seed, attribution=attr,
                                                             batch_size=batch_size, baseline=baseline, **options))
            else:
                raise ValueError(f"unknown metric '{metric}'; choose from {', '.join(LOWER_IS_BETTER)}")
    return rank_scores(methods, {m: np.stack(v) for m, v in per_image.items()})


def rank_scores(methods: Sequence[str], per_image: dict[str, np.ndarray]) -> MethodRanking:
    """Rank ``methods`` from already measured ``per_image[metric]`` (M, N) values (see the module docstring).
    A value that could not be measured (NaN: a constant map has no rank correlation) ranks last on its metric."""
    scores = {m: _nan_mean(v) for m, v in per_image.items()}
    ranks = []
    for metric, values in scores.items():
        worst = np.inf if LOWER_IS_BETTER[metric] else -np.inf
        ranks.append(_ranks(np.where(np.isnan(values), worst, values), LOWER_IS_BETTER[metric]))
    mean_rank = np.mean(ranks, axis=0)
    best_first = [methods[int(i)] for i in np.argsort(mean_rank, kind="stable")]
    return MethodRanking(list(methods), scores, mean_rank, best_first, dict(per_image))


def _nan_mean(values: np.ndarray) -> np.ndarray:
    """Row means over the finite entries; NaN for a row without any (no warning)."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


__all__ = ["LOWER_IS_BETTER", "MethodRanking", "rank_methods", "rank_scores"]
