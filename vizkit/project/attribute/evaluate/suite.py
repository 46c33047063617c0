"""Every measure of ``--evaluate`` on maps already computed: the four perturbation curves, ROAD (MoRF), the
model-randomisation correlation, and the ranking over methods (``ranking.py``'s default metrics).

The maps are not recomputed for the curves; only the randomisation check runs each method again, once, on one
randomised copy of the model shared by all methods (``explain(twin, label)``). Targets are fixed by the caller, so
every curve and the randomised model explain the same class.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vizkit.project.attribute.evaluate.curves import perturbation_curve
from vizkit.project.attribute.evaluate.randomisation import map_correlation, randomised_copy
from vizkit.project.attribute.evaluate.ranking import DEFAULT_METRICS, MethodRanking, rank_scores
from vizkit.project.attribute.evaluate.road import PERCENTAGES, road
from vizkit.project.attribute.inputs import Baseline
from vizkit.project.targets import TargetFn

CURVES = ("deletion-morf", "deletion-lerf", "insertion-morf", "insertion-lerf")


@dataclass
class AttributeEvaluation:
    """Per method label: ``curves[label][curve]`` (N, K+1) target scores over ``fractions`` (K+1,) of the pixels
    deleted or inserted (``CURVES``); ``road[label]`` (N, P) ROAD MoRF scores over ``road_percentages`` (P,);
    ``randomisation[label]`` (N,) rank correlation with the randomised model's map; ``ranking``: the methods ranked
    on these images by ``ranking.DEFAULT_METRICS``."""

    fractions: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]
    road_percentages: np.ndarray
    road: dict[str, np.ndarray]
    randomisation: dict[str, np.ndarray]
    ranking: MethodRanking

    def auc(self, label: str, metric: str) -> np.ndarray:
        """(N,) area of ``metric`` (a curve name, ``road-morf``) for one method; ``randomisation``: the correlation."""
        if metric == "randomisation":
            return self.randomisation[label]
        if metric == "road-morf":
            return _area(self.road[label], self.road_percentages / 100.0)
        return _area(self.curves[label][metric], self.fractions)


def _area(scores: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.trapezoid(scores, xs, axis=1) if len(xs) > 1 else scores[:, 0].copy()


def evaluate_maps(model: nn.Module, x: torch.Tensor, maps: Mapping[str, torch.Tensor],
                  target: list[int] | TargetFn, explain: Callable[[nn.Module, str], torch.Tensor], *,
                  steps: int = 20, baseline: Baseline = "black", percentages: Sequence[int] = PERCENTAGES,
                  batch_size: int = 16, seed: int = 0) -> AttributeEvaluation:
    """Measure every map of ``maps`` (label -> (N, C or 1, H, W)) on ``x`` for ``target`` (one class per image or
    a function); ``explain(model, label)`` recomputes a label's map on another model (the randomised copy)."""
    curves: dict[str, dict[str, np.ndarray]] = {}
    road_scores: dict[str, np.ndarray] = {}
    correlation: dict[str, np.ndarray] = {}
    fractions = np.zeros(0)
    twin = randomised_copy(model, seed)
    for label, attr in maps.items():
        curves[label] = {}
        for name in CURVES:
            mode, order = name.split("-")
            curve = perturbation_curve(model, x, attr, target, mode=mode, order=order, steps=steps,
                                       baseline=baseline, batch_size=batch_size)
            curves[label][name], fractions = curve.scores, curve.fractions
        road_scores[label] = road(model, x, attr, target, percentages=percentages, seed=seed,
                                  batch_size=batch_size).scores
        correlation[label] = map_correlation(attr, explain(twin, label))
    result = AttributeEvaluation(fractions, curves, np.asarray(percentages, dtype=np.float64), road_scores,
                                 correlation, MethodRanking([], {}, np.zeros(0), []))
    labels = list(maps)
    result.ranking = rank_scores(labels, {metric: np.stack([result.auc(label, metric) for label in labels])
                                          for metric in DEFAULT_METRICS})
    return result


__all__ = ["CURVES", "AttributeEvaluation", "evaluate_maps"]
