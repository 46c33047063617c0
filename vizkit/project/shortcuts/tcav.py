"""Concept confirmation with Captum's TCAV (Kim et al. 2018) for a flagged cluster.

The concept is the cluster's region content: each member's pixels inside the region on a neutral canvas (0, the
mean colour of the normalisation), so nothing but the region's pattern is in it. Each random concept is the same
region filled from randomly drawn other images (the counterexamples: same place, ordinary content). The class's
images are the inputs; ``captum.concept.TCAV`` fits the CAVs (its ``DefaultClassifier``) at ``layer`` and gives the
share of inputs whose class score rises along the CAV (``sign_count``).

Significance (Kim et al. 2018, section 3.2): the concept is tested against ``repeats`` random concepts
(C vs R_i) and a random concept against the same ones (R_0 vs R_i); a two-sided t-test of the two sets of TCAV
scores; significant when ``p < alpha`` and the concept's mean score is the higher one (a concept that *lowers*
the class score is no evidence for it). Python's, numpy's and torch's global generators are seeded before
Captum runs, so a run repeats exactly; Captum's activation cache lives in a temporary folder removed afterwards.
"""
from __future__ import annotations

import random
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from captum.concept import TCAV, Concept
from captum.concept._utils.classifier import DefaultClassifier
from scipy.stats import ttest_ind
from torch import nn

from vizkit.capture.state import preserve_model_state


@dataclass
class TcavResult:
    layer: str
    scores: np.ndarray         # TCAV score of the concept against each random concept
    random_scores: np.ndarray  # random concept R_0 against the same
    p_value: float
    significant: bool

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))


def region_concepts(members: torch.Tensor, pool: torch.Tensor, mask: torch.Tensor, repeats: int, seed: int = 0,
                    batch: int = 16) -> tuple[Concept, list[Concept]]:
    """(the cluster's concept, ``repeats + 1`` random concepts drawn from ``pool``), ids 0, 1, 2, ..."""
    m = mask[None, None].to(members.device)
    g = torch.Generator().manual_seed(seed)

    def concept(i: int, name: str, x: torch.Tensor) -> Concept:
        canvas = torch.where(m, x, torch.zeros_like(x))
        return Concept(i, name, [canvas[j:j + batch] for j in range(0, len(canvas), batch)])

    randoms = [concept(i + 1, f"random_{i}", pool[torch.randint(len(pool), (len(members),), generator=g)])
               for i in range(repeats + 1)]
    return concept(0, "region", members), randoms


def tcav_sets(concept: Concept, randoms: list[Concept]) -> list[list[Concept]]:
    """[[C, R_1], ..., [C, R_n], [R_0, R_1], ..., [R_0, R_n]]."""
    return [[concept, r] for r in randoms[1:]] + [[randoms[0], r] for r in randoms[1:]]


def tcav_scores(model: nn.Module, layer: str, inputs: torch.Tensor, sets: list[list[Concept]], cls: int,
                seed: int = 0) -> np.ndarray:
    """sign_count TCAV score of each set's first concept, Captum with seeded generators."""
    with tempfile.TemporaryDirectory() as tmp, preserve_model_state(model):
        random.seed(seed)  # Captum shuffles with random, its SGD classifier draws from numpy's global state
        np.random.seed(seed)
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # Captum's note on the default classifier keeping data in memory
            warnings.simplefilter("ignore", UserWarning)
            tcav = TCAV(model, [layer], classifier=DefaultClassifier(), save_path=tmp)
            out = tcav.interpret(inputs, experimental_sets=sets, target=cls)
    keys = ["-".join(str(c.id) for c in s) for s in sets]
    return np.array([float(out[k][layer]["sign_count"][0]) for k in keys])


def concept_test(model: nn.Module, layer: str, inputs: torch.Tensor, members: torch.Tensor, pool: torch.Tensor,
                 mask: torch.Tensor, cls: int, repeats: int = 5, alpha: float = 0.05, seed: int = 0) -> TcavResult:
    """TCAV of the region concept for class ``cls`` at ``layer`` with the significance test (module docstring)."""
    concept, randoms = region_concepts(members, pool, mask, repeats, seed)
    s = tcav_scores(model, layer, inputs, tcav_sets(concept, randoms), cls, seed)
    scores, rand = s[:repeats], s[repeats:]
    p = float(ttest_ind(scores, rand).pvalue) if np.std(np.r_[scores, rand]) > 0 else 1.0
    return TcavResult(layer, scores, rand, p, bool(p < alpha and scores.mean() > rand.mean()))


__all__ = ["TcavResult", "concept_test", "region_concepts", "tcav_scores", "tcav_sets"]
