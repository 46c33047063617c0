"""``vizkit.project.attribute.attribute`` against the libraries that compute each method, called directly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vizkit.errors import ModelError
from vizkit.project.attribute import METHODS, attribute, audit_model
from vizkit.testing.model_state import hook_count, state_fingerprint

REL = 1e-5


def small_cnn(seed: int = 0, inplace: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=inplace), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(32, 5))
    with torch.no_grad():  # non-trivial batch-norm statistics, so canonizers and eval mode matter
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture
def net() -> nn.Module:
    return small_cnn()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def close(a: torch.Tensor, b: torch.Tensor, rel: float = REL) -> bool:
    a, b = a.detach(), b.detach()
    scale = float(b.abs().max())
    return float((a - b).abs().max()) <= rel * scale and scale > 0


def seed_all(seed: int) -> None:
    """Captum's GradientShap draws from numpy's global generator as well as torch's."""
    np.random.seed(seed)
    torch.manual_seed(seed)


def captum_direct(method: str, net: nn.Module, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    from captum.attr import (
        DeepLift,
        GradientShap,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    xr = x.clone().requires_grad_(True)
    zero = torch.zeros_like(x)
    if method == "saliency":
        return Saliency(net).attribute(xr, target=target)
    if method == "gradient-x-input":
        return InputXGradient(net).attribute(xr, target=target)
    if method == "integrated-gradients":
        return IntegratedGradients(net).attribute(xr, zero, target=target, n_steps=50)
    if method == "deeplift":
        return DeepLift(net).attribute(xr, zero, target=target)
    if method == "gradient-shap":
        seed_all(5)
        return GradientShap(net).attribute(xr, zero, target=target, n_samples=20)
    if method == "smoothgrad":
        seed_all(5)
        std = 0.15 * float(x.max() - x.min())
        return NoiseTunnel(Saliency(net)).attribute(xr, nt_type="smoothgrad", nt_samples=25, stdevs=std,
                                                    target=target)
    assert method == "occlusion"
    return Occlusion(net).attribute(x, sliding_window_shapes=(3, 2, 2), strides=(3, 1, 1), baselines=zero,
                                    target=target)


@pytest.mark.parametrize("method", [m for m, info in METHODS.items() if info.library == "captum"])
def test_captum_methods_equal_captum(method: str, net: nn.Module, x: torch.Tensor) -> None:
    target = [1, 4, 0]
    theirs = captum_direct(method, net, x, target)
    seed_all(5)
    ours = attribute(net, x, method, target, window=2, stride=1)
    assert ours.dtype == torch.float32 and ours.shape == x.shape
    assert close(ours, theirs)


def test_integrated_gradients_completeness(net: nn.Module, x: torch.Tensor) -> None:
    """Attributions sum to f(x) - f(baseline); the Riemann error shrinks with the step count."""
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        gap = (net(x) - net(baseline))[:, 2]
    err = {steps: (attribute(net, x, "integrated-gradients", 2, samples=steps).sum(dim=(1, 2, 3)) - gap).abs().max()
           for steps in (4, 256)}
    assert err[256] <= 1e-2 * float(gap.abs().max())
    assert err[256] < err[4]


@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "epsilon-alpha2-beta1", "epsilon-plus"])
def test_lrp_equals_zennit(composite: str, net: nn.Module, x: torch.Tensor) -> None:
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlus, EpsilonPlusFlat

    cls = {"epsilon-plus-flat": EpsilonPlusFlat, "epsilon-alpha2-beta1": EpsilonAlpha2Beta1,
           "epsilon-plus": EpsilonPlus}[composite]
    target = torch.tensor([1, 4, 0])
    reference = small_cnn()
    with Gradient(reference, cls(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        _, theirs = attributor(x.clone(), lambda out: out * F.one_hot(target, out.shape[1]))
    ours = attribute(net, x, "lrp", target.tolist(), composite=composite)
    assert close(ours, theirs)


def test_callable_targets(net: nn.Module, x: torch.Tensor) -> None:
    """A function of the logits equals the class it picks; a sum of two classes is the sum of their maps for the
    methods that are linear in the target."""
    for method in ("saliency", "integrated-gradients", "lrp", "gradcam", "guided-backprop", "deeplift"):
        torch.manual_seed(0)
        by_index = attribute(net, x, method, 3, layer="4")
        by_fn = attribute(net, x, method, lambda z: z[:, 3], layer="4")
        assert close(by_fn, by_index), method
    both = attribute(net, x, "gradient-x-input", lambda z: z[:, 1] + z[:, 3])
    apart = attribute(net, x, "gradient-x-input", 1) + attribute(net, x, "gradient-x-input", 3)
    assert close(both, apart)


def test_batches_do_not_change_results(net: nn.Module, x: torch.Tensor) -> None:
    for method in ("integrated-gradients", "lrp", "gradcam++", "deconvnet"):
        whole = attribute(net, x, method, [0, 1, 2], layer="4", batch_size=8)
        split = attribute(net, x, method, [0, 1, 2], layer="4", batch_size=1)
        assert close(split, whole), method


class Raising(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.parametrize("method", list(METHODS))
def test_model_unchanged_and_no_hooks_left_after_raise(method: str, x: torch.Tensor) -> None:
    net = small_cnn(inplace=True).train()
    net[4].weight.grad = torch.ones_like(net[4].weight)
    before = state_fingerprint(net)
    attribute(net, x, method, 1, layer="4", samples=3)
    assert net.training and net[2].inplace and hook_count(net) == 0
    assert all(torch.equal(before[k], v) for k, v in state_fingerprint(net).items())
    assert torch.equal(net[4].weight.grad, torch.ones_like(net[4].weight)) and net[4].weight.requires_grad
    attrs = {m: set(vars(m)) for m in net.modules()}
    net.append(Raising())
    with pytest.raises(RuntimeError, match="boom"):
        attribute(net, x, method, 1, layer="4", samples=3)
    assert hook_count(net) == 0 and net.training and net[2].inplace
    assert all(set(vars(m)) == attrs[m] for m in list(net.modules())[:-1] if m in attrs and m is not net)


class FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.body(x)).mean(dim=(2, 3)))


class SharedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.b(self.act(self.a(x)))).mean(dim=(2, 3)))


def test_audit_refuses_what_captum_gets_wrong(x: torch.Tensor) -> None:
    with pytest.raises(ModelError, match=r"module 'the model' calls F\.relu"):
        attribute(FunctionalNet(), x, "deeplift", 0)
    with pytest.raises(ModelError, match="module 'act' runs 2 times"):
        attribute(SharedReLU(), x, "deeplift", 0)
    audit = audit_model(SharedReLU(), x)
    assert audit.reused == [("act", 2)] and audit.problem("integrated-gradients") is None
    assert audit.problem("lrp") is None  # a reused parameter-free ReLU is passed by zennit's rules
    assert audit_model(FunctionalNet(), x).problem("lrp") is None  # F.relu is harmless to LRP (see audit.py)
    # guided backprop runs on vizkit's rules, which see the functional call: it differs from the plain gradient
    net = FunctionalNet()
    guided = attribute(net, x, "guided-backprop", 0)
    plain = attribute(net, x, "gradient-x-input", 0) / x
    assert not torch.allclose(guided, plain, atol=1e-6)


def test_inplace_activations_give_the_same_maps(x: torch.Tensor) -> None:
    assert audit_model(small_cnn(inplace=True)).inplace == ["2", "5"]
    for method in ("deeplift", "lrp"):
        assert close(attribute(small_cnn(inplace=True), x, method, 2), attribute(small_cnn(), x, method, 2))
