"""The user's model is left exactly as it was: hooks, training flags, requires_grad, .grad, state dict."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.errors import ModelError
from vizkit.project.deconv import deconv, forward_capture
from vizkit.project.rules import DeconvRules
from vizkit.testing.model_state import hook_count, state_fingerprint


def _odd_state_model() -> nn.Module:
    model = torchvision.models.resnet18()
    model.train()
    model.layer2.eval()  # mixed per-module modes must survive, not be flattened by model.train(prev)
    model.fc.weight.requires_grad_(False)
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    return model


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()},
        "grad_ids": {n: id(p.grad) for n, p in model.named_parameters()},
        "hooks": hook_count(model),
    }


def _assert_same(model: nn.Module, before: dict[str, object], state: dict[str, torch.Tensor]) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grad_ids"] == before["grad_ids"]
    for n, g in before["grads"].items():  # type: ignore[union-attr]
        assert (g is None and after["grads"][n] is None) or torch.equal(g, after["grads"][n])  # type: ignore[index]
    assert after["hooks"] == before["hooks"] == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_deconv_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    model = _odd_state_model()
    before, state = _snapshot(model), state_fingerprint(model)
    deconv(model, torch.randn(1, 3, 64, 64), ["layer1", "layer3"], top_k=2, logits=True)
    _assert_same(model, before, state)


class _Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom inside the forward")


def test_exception_inside_forward_restores_everything() -> None:
    torch.manual_seed(1)
    model = _odd_state_model()
    model.layer3 = nn.Sequential(model.layer3, _Boom())
    before, state = _snapshot(model), state_fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        deconv(model, torch.randn(1, 3, 64, 64), ["layer1", "layer4"], top_k=2)
    _assert_same(model, before, state)
    assert not torch.overrides._get_current_function_mode_stack()  # the rule mode is gone too


def test_unknown_layer_names_close_matches_and_registers_nothing() -> None:
    model = torchvision.models.resnet18()
    with pytest.raises(ModelError) as err, Recorder(model, ["layer1", "layer9"]):
        pass
    assert "layer9" in str(err.value) and "layer1" in str(err.value) and "\n" not in str(err.value)
    assert hook_count(model) == 0


def test_recorded_output_survives_downstream_inplace_relu() -> None:
    """vgg's conv is followed by ReLU(inplace=True): the recorded conv output must keep its negative values."""
    torch.manual_seed(2)
    model = torchvision.models.vgg11().eval()
    x = torch.randn(1, 3, 32, 32)
    cap = forward_capture(model, x, ["features.0", "features.1"])
    with torch.no_grad():
        conv = model.features[0](x)
    assert torch.equal(cap.outputs["features.0"], conv) and (conv < 0).any()
    assert torch.equal(cap.outputs["features.1"], conv.clamp(min=0))


def test_switches_are_recorded_for_max_pools() -> None:
    model = torchvision.models.alexnet().eval()
    x = torch.randn(1, 3, 127, 127)
    with Recorder(model, ["features.2"], switches=True) as rec:
        rec.run(x)
    _out, idx = torch.nn.functional.max_pool2d(model.features[1](model.features[0](x)), 3, 2, return_indices=True)
    assert torch.equal(rec.switches["features.2"], idx)
    assert hook_count(model) == 0


def test_rules_lrn_and_layernorm_scales_match_the_forward() -> None:
    """Linearised rules: LRN backward divides by the forward denominator; LayerNorm by the forward std."""
    torch.manual_seed(3)
    x = (torch.rand(1, 6, 5, 5, dtype=torch.float64) + 0.1).requires_grad_(True)
    lrn = nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0)
    with DeconvRules() as rules:
        y = lrn(x)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(gx, g * y.detach() / x.detach())  # y = x / d  =>  1/d = y/x
    assert rules.counts["local_response_norm"] == 1
    ln = nn.LayerNorm(5).double()
    with torch.no_grad():
        ln.weight.copy_(torch.arange(1, 6, dtype=torch.float64))
    x2 = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    with DeconvRules():
        y2 = ln(x2)
    g2 = torch.randn_like(y2)
    (gx2,) = torch.autograd.grad(y2, x2, g2)
    std = torch.sqrt(x2.detach().var(-1, unbiased=False, keepdim=True) + ln.eps)
    assert torch.allclose(gx2, g2 * ln.weight.detach() / std)
