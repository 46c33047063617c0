"""Targets beyond a class index: a function of the logits gives exactly the class-index result for z[:, k], and
any other differentiable score (multi-label sums) as the sum of its parts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.gradcam import gradcam


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).double()


@pytest.mark.parametrize("guided", [True, False])
def test_function_target_equals_class_index(guided: bool) -> None:
    model = _net()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    by_index = gradcam(model, x, "4", [[3, 1], [3, 1]], guided=guided)
    by_fn = gradcam(model, x, "4", [[lambda z: z[:, 3], 1], [lambda z: z[:, 3], 1]], guided=guided)
    np.testing.assert_array_equal(by_fn.cam_raw, by_index.cam_raw)
    np.testing.assert_array_equal(by_fn.guided_backprop, by_index.guided_backprop)
    assert by_fn.targets.tolist() == [[-1, 1], [-1, 1]]
    logits = model(x).detach()
    np.testing.assert_allclose(by_fn.scores[:, 0], logits[:, 3].numpy())  # the function's own score
    np.testing.assert_array_equal(by_fn.scores[:, 1], by_index.scores[:, 1])


def test_multilabel_sum_matches_a_hand_computed_gradcam() -> None:
    """Grad-CAM of z0 + z2 by hand: weights = spatial mean of d(z0 + z2)/dA, cam = relu(sum_c w_c A_c)."""
    model = _net()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    out = gradcam(model, x, "4", lambda z: z[:, 0] + z[:, 2], guided=False)
    maps = model[:5](x).detach().requires_grad_(True)
    logits = model[5:](maps)
    (grad,) = torch.autograd.grad((logits[:, 0] + logits[:, 2]).sum(), maps)
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * maps.detach()).sum(dim=1))
    np.testing.assert_allclose(out.cam_raw[:, 0], cam.numpy(), rtol=1e-6, atol=1e-12)  # float32 output
    assert out.targets.tolist() == [[-1]] * 3 and out.cam_raw[:, 0].max() > 0


def test_function_must_return_one_score_per_image() -> None:
    with pytest.raises(UserInputError, match=r"one score per image, shape \(2,\)"):
        gradcam(_net(), torch.randn(2, 3, 16, 16, dtype=torch.float64), "4", lambda z: z.sum())
