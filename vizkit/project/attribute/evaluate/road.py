"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML 2022).

Deleting pixels by a constant leaks the deleted *shape* to the model: the mask's outline alone can carry the
class. ROAD fills removed pixels by noisy linear imputation instead: every removed pixel becomes the weighted mean
of its 8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonals; neighbours outside the image are
dropped), solved jointly for all removed pixels of an image as one sparse linear system (one right-hand side per
channel), plus Gaussian noise of standard deviation ``noise``. The pixel ranking is the one of ``curves.py``.

Result: the target's score, and whether the model's top class is still the target (the accuracy Rong et al. and
Quantus report), after removing each percentage of the pixels, MoRF or LeRF.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.attribute.evaluate.curves import pixel_ranks, score_of
from vizkit.project.attribute.inputs import AttrTarget, check_images, chunks, guarded, resolve_target

_NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6), (-1, -1, 1 / 12),
               (1, 0, 1 / 6), (-1, 0, 1 / 6))
PERCENTAGES = tuple(range(10, 100, 10))


@dataclass
class RoadCurve:
    """percentages (K,) removed; scores (N, K) of the target; correct (N, K): top-1 is still the target (all
    False for a target function, which has no class)."""

    order: str
    percentages: np.ndarray
    scores: np.ndarray
    correct: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """(N,) area under the score curve over the removed fraction."""
        return np.trapezoid(self.scores, self.percentages / 100.0, axis=1) if len(self.percentages) > 1 else \
            self.scores[:, 0].copy()


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image`` (C, H, W) with the pixels where ``removed`` (H, W) is True replaced by the solution of the
    neighbour-mean system (no noise)."""
    c, h, w = image.shape
    flat = image.reshape(c, -1).astype(np.float64)
    gone = np.flatnonzero(removed.ravel())
    if gone.size == 0:
        return image.copy()
    var = np.full(h * w, -1)
    var[gone] = np.arange(gone.size)
    rows_y, rows_x = np.divmod(gone, w)
    diag = np.zeros(gone.size)
    rhs = np.zeros((gone.size, c))
    ii, jj, vv = [], [], []
    for dy, dx, weight in _NEIGHBOURS:
        y, x = rows_y + dy, rows_x + dx
        ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        diag[ok] += weight
        rows, neighbour = np.flatnonzero(ok), (y * w + x)[ok]
        unknown = var[neighbour] >= 0
        ii.append(rows[unknown])
        jj.append(var[neighbour[unknown]])
        vv.append(np.full(int(unknown.sum()), weight))
        np.add.at(rhs, rows[~unknown], weight * flat[:, neighbour[~unknown]].T)
    ii.append(np.arange(gone.size))
    jj.append(np.arange(gone.size))
    vv.append(-diag)
    a = coo_matrix((np.concatenate(vv), (np.concatenate(ii), np.concatenate(jj))), shape=(gone.size,) * 2).tocsc()
    solved = spsolve(a, -rhs)
    out = flat.copy()
    out[:, gone] = np.asarray(solved).reshape(gone.size, c).T
    return out.reshape(c, h, w).astype(image.dtype)


def road(model: nn.Module, x: torch.Tensor, attribution: torch.Tensor, target: AttrTarget = None, *,
         order: str = "morf", percentages: Sequence[int] = PERCENTAGES, noise: float = 0.01, seed: int = 0,
         batch_size: int = 16, score: str = "probability") -> RoadCurve:
    """ROAD curve of ``attribution`` on ``x``: remove ``floor(p * H * W / 100)`` pixels per percentage ``p``."""
    check_images(x)
    if attribution.shape[0] != x.shape[0] or attribution.shape[-2:] != x.shape[-2:]:
        raise UserInputError(f"attribution {tuple(attribution.shape)} does not match the images {tuple(x.shape)}")
    n, _, h, w = x.shape
    ranks = pixel_ranks(attribution.to(x.device), order).view(n, h, w).cpu().numpy()
    rng = np.random.default_rng(seed)
    images = x.detach().cpu().numpy()
    with guarded(model):
        resolved = resolve_target(model, x, target, batch_size)
        perturbed = []
        for p in percentages:
            k = int(h * w * p / 100)
            for i in range(n):
                filled = linear_imputation(images[i], ranks[i] < k)
                if noise > 0:
                    filled = np.where(ranks[i] < k, filled + noise * rng.standard_normal(filled.shape), filled)
                perturbed.append(filled.astype(images.dtype))
        stack = torch.from_numpy(np.stack(perturbed)).to(x)
        scores, correct = [], []
        with torch.no_grad():
            for s in chunks(stack.shape[0], batch_size):
                logits = model(stack[s])
                tb = resolved if callable(resolved) else [resolved[j % n] for j in range(s.start, s.stop)]
                scores.append(score_of(logits, tb, score))
                hit = (logits.argmax(dim=1) == torch.as_tensor(tb, device=logits.device)) if not callable(tb) \
                    else torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
                correct.append(hit)
    k_steps = len(percentages)
    return RoadCurve(order, np.asarray(percentages, dtype=np.float64),
                     torch.cat(scores).view(k_steps, n).T.cpu().numpy(), torch.cat(correct).view(k_steps, n).T.cpu()
                     .numpy())


__all__ = ["PERCENTAGES", "RoadCurve", "linear_imputation", "road"]
