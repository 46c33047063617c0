"""Deletion/insertion curves, ROAD, the randomisation check and the ranking, against brute force and an oracle."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vizkit.project.attribute.evaluate import (
    linear_imputation,
    perturbation_curve,
    randomisation_check,
    rank_methods,
    road,
)
from vizkit.testing.model_state import hook_count, state_fingerprint


class Oracle(nn.Module):
    """Class 0 scores the sum of a known region; class 1 a constant. Right by construction: the region is all that
    matters for class 0."""

    def __init__(self, region: tuple[slice, slice]) -> None:
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, :, self.region[0], self.region[1]].sum(dim=(1, 2, 3))
        return torch.stack([inside, torch.full_like(inside, 1.0)], dim=1)


REGION = (slice(2, 7), slice(3, 9))


def positive_images(n: int = 3, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) + 0.5


def test_oracle_deletion_beats_random_ranking() -> None:
    model, x = Oracle(REGION), positive_images()
    oracle = torch.zeros(3, 1, 12, 12)
    oracle[:, :, REGION[0], REGION[1]] = 1.0
    rand = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    kw = {"target": 0, "steps": 12, "score": "logit"}
    assert (perturbation_curve(model, x, oracle, **kw).auc < perturbation_curve(model, x, rand, **kw).auc).all()
    assert (perturbation_curve(model, x, oracle, mode="insertion", **kw).auc
            > perturbation_curve(model, x, rand, mode="insertion", **kw).auc).all()
    # LeRF: the oracle removes the irrelevant pixels first, so the score holds
    assert (perturbation_curve(model, x, oracle, order="lerf", **kw).auc
            > perturbation_curve(model, x, rand, order="lerf", **kw).auc).all()


def brute_force_curve(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: list[int], steps: int,
                      mode: str, order: str) -> np.ndarray:
    n, _, h, w = x.shape
    out = np.zeros((n, steps + 1))
    for i in range(n):
        rel = attr[i].sum(dim=0).flatten().double().numpy()
        sequence = np.argsort(-rel if order == "morf" else rel, kind="stable")
        for k in range(steps + 1):
            img = x[i].clone() if mode == "deletion" else torch.zeros_like(x[i])
            for p in sequence[: h * w * k // steps]:
                img[:, p // w, p % w] = 0.0 if mode == "deletion" else x[i, :, p // w, p % w]
            with torch.no_grad():
                out[i, k] = torch.softmax(model(img[None]).double(), dim=1)[0, target[i]].item()
    return out


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3)).eval()


def test_curves_equal_brute_force() -> None:
    model, x = small_net(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    attr = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    for mode in ("deletion", "insertion"):
        for order in ("morf", "lerf"):
            curve = perturbation_curve(model, x, attr, [0, 2], mode=mode, order=order, steps=5, batch_size=3)
            expected = brute_force_curve(model, x, attr, [0, 2], 5, mode, order)
            np.testing.assert_allclose(curve.scores, expected, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(curve.auc, np.trapezoid(expected, curve.fractions, axis=1), rtol=1e-6)


def dense_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al.'s system, one equation per removed pixel, written out with loops and solved densely."""
    c, h, w = image.shape
    gone = [(y, x) for y in range(h) for x in range(w) if removed[y, x]]
    index = {p: i for i, p in enumerate(gone)}
    a, b = np.zeros((len(gone), len(gone))), np.zeros((len(gone), c))
    for i, (y, x) in enumerate(gone):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy, dx) == (0, 0) or not (0 <= yy < h and 0 <= xx < w):
                    continue
                weight = 1 / 12 if dy and dx else 1 / 6
                a[i, i] += weight
                if (yy, xx) in index:
                    a[i, index[(yy, xx)]] -= weight
                else:
                    b[i] += weight * image[:, yy, xx]
    solved = np.linalg.solve(a, b)
    out = image.copy()
    for i, (y, x) in enumerate(gone):
        out[:, y, x] = solved[i]
    return out


def test_linear_imputation_equals_dense_solve() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 9, 7))
    removed = rng.uniform(size=(9, 7)) < 0.4
    removed[0, 0] = removed[8, 6] = True  # corners: neighbours outside the image are dropped
    np.testing.assert_allclose(linear_imputation(image, removed), dense_imputation(image, removed), atol=1e-10)


def test_road_equals_brute_force() -> None:
    model, x = small_net(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    attr = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    result = road(model, x, attr, [1, 2], percentages=(20, 50, 80), noise=0.0, batch_size=4)
    for i in range(2):
        sequence = np.argsort(-attr[i, 0].flatten().numpy(), kind="stable")
        for j, p in enumerate((20, 50, 80)):
            removed = np.zeros(64, bool)
            removed[sequence[: int(64 * p / 100)]] = True
            img = torch.tensor(dense_imputation(x[i].double().numpy(), removed.reshape(8, 8)), dtype=torch.float32)
            with torch.no_grad():
                logits = model(img[None])[0]
            assert abs(torch.softmax(logits.double(), 0)[[1, 2][i]].item() - result.scores[i, j]) < 1e-6
            assert result.correct[i, j] == (int(logits.argmax()) == [1, 2][i])


def test_randomisation_check_leaves_the_model_alone() -> None:
    model, x = small_net(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    before = state_fingerprint(model)
    corr = randomisation_check(model, x, "saliency", 0)
    assert corr.shape == (2,) and (np.abs(corr) <= 1).all() and (corr < 0.99).all()
    assert hook_count(model) == 0 and all(torch.equal(before[k], v) for k, v in state_fingerprint(model).items())
    # a model without parameters cannot be randomised: its map is unchanged
    np.testing.assert_allclose(randomisation_check(Oracle(REGION), positive_images(2), "saliency", 0), 1.0)


def test_rank_methods_on_the_oracle() -> None:
    """On the oracle, gradient x input equals the region's pixels (exactly what the score sums); occlusion with a
    window off the region's grid blurs it. The ranking must put the exact one first."""
    ranking = rank_methods(Oracle(REGION), positive_images(2), ["occlusion", "gradient-x-input"], 0,
                           metrics=("deletion-morf", "insertion-morf"), steps=8, window=5, stride=5)
    assert ranking.order[0] == "gradient-x-input"
    assert ranking.scores["deletion-morf"].shape == (2,) and ranking.per_image["insertion-morf"].shape == (2, 2)
