"""The CAM variants against their formulas on a fixed-weight net whose maps and gradients are known by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.project.attribute import attribute

CONV = np.array([[1.0, 0.5], [-0.5, 1.0], [0.25, -1.0]])  # 1x1 convolution: 2 input channels -> 3 maps
HEAD = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])  # logits = HEAD @ mean_hw(maps)


def fixed_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(CONV)[:, :, None, None])
        net[3].weight.copy_(torch.tensor(HEAD))
    return net.eval()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 1.0, (2, 4, 4))


def maps_of(img: np.ndarray) -> np.ndarray:
    return np.einsum("kc,chw->khw", CONV, img)


def logits_of(img: np.ndarray) -> np.ndarray:
    return HEAD @ maps_of(img).mean(axis=(1, 2))


def ours(method: str, img: np.ndarray, target: int) -> np.ndarray:
    x = torch.tensor(img, dtype=torch.float32)[None]
    return attribute(fixed_net(), x, method, target, layer="0")[0, 0].double().numpy()


@pytest.mark.parametrize("target", [0, 1])
def test_gradcam_and_gradcam_plus_plus(image: np.ndarray, target: int) -> None:
    a = maps_of(image)
    g = HEAD[target] / 16.0  # d logit / d A_c at every position: the head averages 16 positions
    expected = np.maximum(np.einsum("c,chw->hw", g, a), 0)
    np.testing.assert_allclose(ours("gradcam", image, target), expected, rtol=1e-5, atol=1e-7)
    alpha = np.where(g != 0, g**2 / (2 * g**2 + a.sum(axis=(1, 2)) * g**3 + 1e-6), 0)
    weights = 16 * np.maximum(g, 0) * alpha
    expected = np.maximum(np.einsum("c,chw->hw", weights, a), 0)
    np.testing.assert_allclose(ours("gradcam++", image, target), expected, rtol=1e-5, atol=1e-7)


def test_score_cam(image: np.ndarray) -> None:
    a = maps_of(image)
    scores = []
    for c in range(3):  # the layer already has the input's size: upsampling is the identity
        mask = (a[c] - a[c].min()) / (a[c].max() - a[c].min() + 1e-8)
        scores.append(logits_of(image * mask)[1])
    w = np.exp(scores) / np.exp(scores).sum()
    expected = np.maximum(np.einsum("c,chw->hw", w, a), 0)
    np.testing.assert_allclose(ours("score-cam", image, 1), expected, rtol=1e-5, atol=1e-7)


def test_eigen_cam(image: np.ndarray) -> None:
    flat = maps_of(image).reshape(3, -1).T
    centred = flat - flat.mean(axis=0)
    first = np.linalg.svd(centred)[2][0]
    first = first if first.sum() >= 0 else -first
    expected = np.maximum(centred @ first, 0).reshape(4, 4)
    got = ours("eigen-cam", image, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, ours("eigen-cam", image, 1))  # Eigen-CAM ignores the target


def test_cam_upsampled_to_the_input() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 16, 16)
    for method in ("gradcam", "gradcam++", "score-cam", "eigen-cam"):
        out = attribute(net, x, method, 0, layer="0")
        assert out.shape == (2, 1, 16, 16) and bool((out >= 0).all()), method
