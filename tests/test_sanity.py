"""Sanity checks (Adebayo et al. 2018): rank correlation by hand, randomisation schedule, the known results
(guided backprop survives randomising the top layers, Grad-CAM does not; the deconvnet is image-independent
without max-pooling and image-dependent with it), and the user's model left untouched."""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.load import load_image, load_model, preprocess
from vizkit.project.deconv import Unit
from vizkit.project.sanity import (
    IMAGE_THRESHOLD,
    TOP_THRESHOLD,
    execution_order,
    randomisation_steps,
    randomise_,
    rank_correlation,
    sanity_checks,
)
from vizkit.render.sanity import sanity_json, sanity_pages
from vizkit.testing.model_state import hook_count, state_fingerprint


def test_rank_correlation_by_hand() -> None:
    # ranks of b with a tie: 5 6 7 8 7 -> 1 2 3.5 5 3.5; centred ranks a (-2 -1 0 1 2), b (-2 -1 .5 2 .5):
    # 8 / sqrt(10 * 9.5)
    assert rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / np.sqrt(95), abs=1e-12)
    assert rank_correlation([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert rank_correlation(np.arange(6.0), -np.exp(np.arange(6.0))) == pytest.approx(-1.0)
    assert rank_correlation([[1, 2], [3, 4]], [1, 2, 3, 4]) == pytest.approx(1.0)  # flattened
    assert rank_correlation([3, 3, 3], [3, 3, 3]) == 1.0 and rank_correlation([3, 3, 3], [1, 2, 3]) == 0.0
    # support: shared zeros are ignored (the rest is perfectly anti-correlated)
    a, b = [0, 0, 0, 0, 1, 2, 3], [0, 0, 0, 0, 3, 2, 1]
    assert rank_correlation(a, b) > 0.5 and rank_correlation(a, b, support=True) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        rank_correlation([1, 2], [1, 2, 3])


def test_rank_correlation_equals_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 7, 200).astype(float), rng.normal(size=200)  # many ties in a
    b[:50] = a[:50]
    assert rank_correlation(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_schedule_top_down_in_equal_steps() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    order = execution_order(model, x)
    assert order == ["0", "1", "3", "6"]
    steps = randomisation_steps(order, 3)
    assert [names for _, names in steps] == [["6", "3"], ["1"], ["0"]]
    assert [name for name, _ in steps] == ["6 \u2026 3", "1", "0"]
    assert len(randomisation_steps(order, 10)) == 4


def test_randomise_keeps_mean_and_std() -> None:
    conv = nn.Conv2d(64, 64, 3)
    with torch.no_grad():
        conv.weight.mul_(3).add_(0.5)
    before = conv.weight.detach().clone()
    randomise_(conv, torch.Generator().manual_seed(0))
    after = conv.weight.detach()
    assert not torch.allclose(before, after)
    assert float(after.mean()) == pytest.approx(float(before.mean()), abs=0.01)
    assert float(after.std()) == pytest.approx(float(before.std()), rel=0.01)
    assert abs(float(torch.corrcoef(torch.stack([before.flatten(), after.flatten()]))[0, 1])) < 0.02


@pytest.fixture(scope="module")
def photos(sample_paths):
    return [load_image(p) for p in sample_paths]


def _inputs(loaded, photos, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    prep = replace(loaded.preprocessing, resize=size, crop=size)
    return preprocess(photos[0], prep), preprocess(photos[1], prep)


def test_guided_backprop_survives_top_layer_randomisation_gradcam_does_not(default_model, photos) -> None:
    """Adebayo et al.'s finding on the pretrained default model: randomising the classifier and the last blocks
    leaves guided backprop's picture in place (flagged) but destroys Grad-CAM's."""
    x, other = _inputs(default_model, photos, 128)
    results = {r.method: r for r in sanity_checks(default_model.model, x, other, layer="bn2",
                                                  methods=("guided_backprop", "gradcam"))}
    gbp, cam = results["guided_backprop"], results["gradcam"]
    assert len(gbp.randomisation) == len(cam.randomisation) == 5
    assert gbp.randomisation[0][0].startswith("classifier")
    assert gbp.randomisation[0][1] > TOP_THRESHOLD and cam.randomisation[0][1] < 0.5
    assert np.mean([c for _, c in gbp.randomisation]) > np.mean([abs(c) for _, c in cam.randomisation]) + 0.3
    assert any("top layers" in f for f in gbp.flags) and not cam.flags
    assert gbp.randomisation[-1][1] < gbp.randomisation[0][1]  # the lower layers do move it in the end


def test_guided_backprop_also_insensitive_on_random_weights(photos) -> None:
    """The finding holds on a random-init network too: guided backprop mostly reflects the image and the
    architecture, so redrawing the top weights barely moves it, while Grad-CAM's class weights change."""
    torch.manual_seed(0)
    loaded = load_model("resnet18", "none")
    x, other = _inputs(loaded, photos, 64)
    results = {r.method: r for r in sanity_checks(loaded.model, x, other, layer="layer4", steps=3,
                                                  methods=("guided_backprop", "gradcam"))}
    assert results["guided_backprop"].randomisation[0][1] > TOP_THRESHOLD
    assert results["gradcam"].randomisation[0][1] < 0.5


def test_deconv_image_independent_without_max_pool(default_model, photos) -> None:
    x, other = _inputs(default_model, photos, 96)
    (res,) = sanity_checks(default_model.model, x, other, layer="blocks.4", methods=("deconv",), steps=0)
    assert res.image_corr > 0.9999 and res.randomisation == []
    assert any("does not depend on the image" in f for f in res.flags)


def test_deconv_image_dependent_with_max_pool(photos) -> None:
    torch.manual_seed(0)
    loaded = load_model("vgg11", "none")
    x, other = _inputs(loaded, photos, 64)
    (res,) = sanity_checks(loaded.model, x, other, layer="features.15", methods=("deconv",), steps=0)
    assert res.image_corr < IMAGE_THRESHOLD - 0.2 and not res.flags


def test_mobilenet_v2_deconv_image_independent_on_random_weights(photos) -> None:
    torch.manual_seed(0)
    loaded = load_model("mobilenet_v2", "none")
    x, other = _inputs(loaded, photos, 64)
    unit = Unit(3, (1, 1))
    (res,) = sanity_checks(loaded.model, x, other, layer="features.10", deconv_unit=unit, methods=("deconv",),
                           steps=0)
    assert res.image_corr == pytest.approx(1.0)


def test_deconv_curve_flat_until_its_layer_is_randomised(default_model, photos) -> None:
    x, other = _inputs(default_model, photos, 64)
    (res,) = sanity_checks(default_model.model, x, other, layer="blocks.2", methods=("deconv",), steps=5)
    assert res.unaffected_steps >= 2
    assert all(c == pytest.approx(1.0, abs=1e-12) for _, c in res.randomisation[: res.unaffected_steps])
    assert res.randomisation[-1][1] < 0.9


def test_users_model_untouched() -> None:
    torch.manual_seed(0)
    model = load_model("resnet18", "none").model
    model.train()
    model.layer1.eval()
    model.fc.weight.requires_grad_(False)
    before = state_fingerprint(model)
    flags = [m.training for m in model.modules()]
    requires_grad = [p.requires_grad for p in model.parameters()]
    x, other = torch.randn(1, 3, 48, 48), torch.randn(1, 3, 64, 64)  # the second image is resized
    results = sanity_checks(model, x, other, layer="layer3", steps=2)
    assert [r.method for r in results] == ["deconv", "guided_backprop", "gradcam"]
    with pytest.raises(UserInputError):
        sanity_checks(model, x, other, layer="layer3", methods=("lime",))
    with pytest.raises(UserInputError):
        sanity_checks(model, x, other[:, :1], layer="layer3")
    after = state_fingerprint(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hook_count(model) == 0
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_results_reproducible_with_seed() -> None:
    torch.manual_seed(0)
    model = load_model("lenet5", "none").model
    x, other = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    first = sanity_checks(model, x, other, layer="features.conv2", steps=3, seed=7)
    second = sanity_checks(copy.deepcopy(model), x, other, layer="features.conv2", steps=3, seed=7)
    assert sanity_json(first) == sanity_json(second)


def test_sanity_page() -> None:
    torch.manual_seed(0)
    model = load_model("lenet5", "none").model
    x, other = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    results = sanity_checks(model, x, other, layer="features.conv2", steps=3)
    pages = sanity_pages(results)
    assert len(pages) == 1 and len(pages[0].axes) == 1
    lines = pages[0].axes[0].get_lines()
    assert sum(len(line.get_xdata()) == 4 for line in lines) == 3  # original + 3 steps, one line per method
