"""vizkit.project.dream: optimisation oracles on tiny nets (linear optimum = filter, seeds, batching, model state)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.dream import (
    DreamSettings,
    TransformSettings,
    batches_needed,
    channel,
    class_logit,
    dream,
    neuron,
    objective,
    reference,
)
from vizkit.project.dream.forward import diversity_penalty
from vizkit.testing.model_state import hook_count, state_fingerprint

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IDENTITY = TransformSettings(crops=1, pad=0, jitter=0, scale=(1.0, 1.0), angle=0.0, crop_box=(1.0, 1.0),
                             crop_spread=0.0, noise=0.0)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                        nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    with torch.no_grad():
        net[2].running_mean.uniform_(-0.1, 0.1)
        net[2].running_var.uniform_(0.5, 1.5)
    return net.eval()


def quick(**kw: object) -> DreamSettings:
    base: dict = {"steps": 6, "size": 32, "batch_size": 4, "seed": 3}
    base.update(kw)
    return DreamSettings(**base)


def test_linear_unit_optimum_is_its_filter() -> None:
    """One conv whose kernel covers the image: channel c is <w_c, x> + b, so under ||x - 0.5|| = r the optimum
    is x - 0.5 = r w_c / |w_c|."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, kernel_size=16)
    settings = DreamSettings(method="pixel", steps=150, size=16, norm=1.0, lr=0.05, transforms=IDENTITY)
    out = dream(nn.Sequential(conv), [channel("0", c) for c in range(4)], mean=(0, 0, 0), std=(1, 1, 1),
                settings=settings)
    for c in range(4):
        w = conv.weight[c].detach().flatten()
        assert float(w.abs().max()) / float(w.norm()) < 0.5  # the [0, 1] box is never active at r = 1
        x = torch.from_numpy(out.images[c]).flatten() - 0.5
        assert float(torch.nn.functional.cosine_similarity(x, w, dim=0)) >= 0.99


@pytest.mark.parametrize("method", ["pixel", "fourier", "maco"])
def test_same_seed_same_images_and_scores_rise(method: str) -> None:
    net = tiny_net()
    objs = [channel("3", 1), class_logit(2)]
    a = dream(net, objs, mean=MEAN, std=STD, settings=quick(method=method, steps=12, lr=0.1))
    b = dream(net, objs, mean=MEAN, std=STD, settings=quick(method=method, steps=12, lr=0.1))
    c = dream(net, objs, mean=MEAN, std=STD, settings=quick(method=method, steps=12, lr=0.1, seed=4))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)
    assert a.images.shape == (2, 3, 32, 32) and a.images.dtype == np.float32
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert a.history is not None and (a.history[-3:].mean(0) > a.history[:3].mean(0)).all()
    assert a.objectives == ["3:1", "class:2"]
    assert (a.alpha is not None) == (method == "maco")


@pytest.mark.parametrize("method", ["fourier", "maco"])
def test_batched_equals_one_at_a_time(method: str) -> None:
    net = tiny_net()
    objs = [channel("3", 0), channel("0", 5), class_logit(1)]
    batched = dream(net, objs, mean=MEAN, std=STD, settings=quick(method=method, batch_size=3))
    single = dream(net, objs, mean=MEAN, std=STD, settings=quick(method=method, batch_size=1))
    np.testing.assert_allclose(batched.images, single.images, atol=1e-4)
    np.testing.assert_allclose(batched.scores, single.scores, rtol=1e-4, atol=1e-4)
    assert batches_needed(3, 3) == 1 and batches_needed(3, 1) == 3


def test_scores_are_objectives_on_final_untransformed_image() -> None:
    net = tiny_net()
    objs = [channel("3", 2), class_logit(4)]
    out = dream(net, objs, mean=MEAN, std=STD, settings=quick())
    x = (torch.from_numpy(out.images) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = [float(net[:4](x[:1])[0, 2].mean()), float(net(x[1:])[0, 4])]
    np.testing.assert_allclose(out.scores, expected, rtol=1e-5, atol=1e-6)


def test_model_left_exactly_as_it_was_also_after_an_error() -> None:
    net = tiny_net().train()
    net[2].eval()
    net[0].weight.requires_grad_(False)
    net[7].weight.grad = torch.ones_like(net[7].weight)
    before, flags = state_fingerprint(net), {n: m.training for n, m in net.named_modules()}

    def check() -> None:
        assert hook_count(net) == 0
        assert {n: m.training for n, m in net.named_modules()} == flags
        assert [p.requires_grad for p in net.parameters()] == [False] + [True] * 7
        assert torch.equal(net[7].weight.grad, torch.ones_like(net[7].weight))
        assert net[3].weight.grad is None
        for k, v in state_fingerprint(net).items():
            assert torch.equal(v, before[k]), k

    dream(net, [channel("3", 1), class_logit(0)], mean=MEAN, std=STD, settings=quick(diversity=2))
    check()

    def boom(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("objective failed")

    with pytest.raises(RuntimeError, match="objective failed"):
        dream(net, [objective(boom, "3", "boom")], mean=MEAN, std=STD, settings=quick())
    check()


def test_weighted_and_callable_objectives_match_hand_computed_values() -> None:
    net = tiny_net()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        act = net[:4](x)
    acts = {"3": act}
    combo = channel("3", 1) - 0.5 * channel("3", 4) + 2 * neuron("3", 0)
    expected = act[:, 1].mean((1, 2)) - 0.5 * act[:, 4].mean((1, 2)) + 2 * act[:, 0, 4, 4]
    torch.testing.assert_close(combo(acts), expected)
    assert combo.name == "3:1-0.5*3:4+2*3:0@centre"
    custom = objective(lambda t: t[:, 2:4].amax((1, 2, 3)), "3", "max of 2-3")
    torch.testing.assert_close(custom(acts), act[:, 2:4].amax((1, 2, 3)))
    out = dream(net, [custom, combo], mean=MEAN, std=STD, settings=quick(steps=12, lr=0.1))
    assert out.history is not None and (out.history[-1] > out.history[0]).all()


def test_diversity_gives_distinct_images_and_the_gram_penalty_is_lucids() -> None:
    f = torch.rand(2, 4, 3, 3)
    assert float(diversity_penalty(torch.cat([f[:1], f[:1]]), 1, 2)) == pytest.approx(1.0, rel=1e-5)
    ortho = torch.zeros(2, 2, 1, 1)
    ortho[0, 0], ortho[1, 1] = 1.0, 1.0
    assert float(diversity_penalty(ortho, 1, 2)) == pytest.approx(0.0, abs=1e-7)
    out = dream(tiny_net(), [channel("3", 1), channel("3", 2)], mean=MEAN, std=STD,
                settings=quick(diversity=2, batch_size=3, diversity_weight=10.0, diversity_layer="3"))
    assert out.objectives == ["3:1", "3:1", "3:2", "3:2"] and out.images.shape[0] == 4
    assert np.abs(out.images[0] - out.images[1]).mean() > 1e-3


def test_feature_accentuation_starts_from_the_image() -> None:
    start = torch.rand(1, 3, 32, 32) * 0.8 + 0.1
    for method in ("pixel", "fourier"):
        out = dream(tiny_net(), [channel("3", 1)], mean=MEAN, std=STD, from_images=start,
                    settings=quick(method=method, steps=1, lr=1e-6))
        np.testing.assert_allclose(out.images[0], start[0].numpy(), atol=1e-3)
    with pytest.raises(UserInputError, match="start images"):
        dream(tiny_net(), [channel("3", 1)] * 2, mean=MEAN, std=STD, from_images=torch.rand(3, 3, 32, 32))


def test_progress_reaches_total_and_reference_is_the_brute_force_maximum() -> None:
    calls: list[tuple[int, int]] = []
    dream(tiny_net(), [channel("3", u) for u in range(3)], mean=MEAN, std=STD,
          settings=quick(batch_size=2, steps=3), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (6, 6) and len(calls) == 6
    net, x = tiny_net(), torch.randn(5, 3, 32, 32)
    ref = reference(net, "3", [0, 3, 5], [x[:2], x[2:]])
    with torch.no_grad():
        brute = net[:4](x).mean((2, 3)).amax(0)[[0, 3, 5]]
    np.testing.assert_allclose(ref, brute.numpy(), rtol=1e-6)


def test_user_mistakes_are_one_line_errors() -> None:
    net = tiny_net()
    with pytest.raises(UserInputError, match="unit 9 of 3 does not exist"):
        dream(net, [channel("3", 9)], mean=MEAN, std=STD, settings=quick(steps=1))
    with pytest.raises(UserInputError, match="unknown method"):
        DreamSettings(method="deepdream")
    with pytest.raises(UserInputError, match="at least one objective"):
        dream(net, [], mean=MEAN, std=STD)
