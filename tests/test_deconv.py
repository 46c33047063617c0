"""The deconvnet against independent references: explicit operators, Captum, hand-computed tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vizkit.project.deconv import Unit, deconv, forward_capture, project_full, top_units
from vizkit.project.explicit import explicit_deconv
from vizkit.testing import explicit_seeds


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with nonzero biases and BN statistics, so that rule mistakes show (DESIGN §2 pitfalls)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _zoo(name: str) -> nn.Module:
    from vizkit.load import load_model

    return load_model(name, "none").model


CHAINS = {
    "vgg11": (lambda: torchvision.models.vgg11(), (1, 3, 64, 64), ["features.2", "features.10", "features.19"]),
    "alexnet": (lambda: torchvision.models.alexnet(), (1, 3, 127, 127), ["features.2", "features.7", "features.12"]),
    "zfnet": (lambda: _zoo("zfnet"), (1, 3, 224, 224), None),
    "lenet5": (lambda: _zoo("lenet5"), (1, 1, 32, 32), None),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_autograd_rules_equal_explicit_deconvnet(name: str) -> None:
    """Both formulations of the deconvnet agree on chain models: every conv, pool (incl. overlapping), LRN, BN."""
    build, shape, layers = CHAINS[name]
    torch.manual_seed(0)
    model = _perturb(build()).double()
    x = torch.randn(shape, dtype=torch.float64)
    leaves = [n for n, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm))
              and n.startswith("features")]
    layers = layers or leaves[1::2]
    for layer in layers:
        cap = forward_capture(model, x, [layer])
        out = cap.outputs[layer]
        picked = top_units(out, 3)
        units = [(u.channel, *u.position) for u, _ in picked]
        ours = project_full(cap, layer, [u for u, _ in picked])
        ref = explicit_deconv(model, x, layer, explicit_seeds(out.detach(), units))
        assert ref.abs().max() > 0, layer
        assert _rel(ours, ref) < 1e-10, (name, layer, _rel(ours, ref))


def test_float32_matches_explicit_to_float_tolerance() -> None:
    torch.manual_seed(1)
    model = _perturb(torchvision.models.vgg11_bn())
    x = torch.randn(1, 3, 64, 64)
    cap = forward_capture(model, x, ["features.20"])
    picked = top_units(cap.outputs["features.20"], 4)
    ours = project_full(cap, "features.20", [u for u, _ in picked])
    ref = explicit_deconv(model, x, "features.20",
                          explicit_seeds(cap.outputs["features.20"].detach(),
                                         [(u.channel, *u.position) for u, _ in picked]))
    assert _rel(ours, ref) < 1e-5


@pytest.mark.parametrize("builder", [torchvision.models.vgg11_bn, torchvision.models.alexnet])
def test_equals_captum_neuron_deconvolution_where_captum_is_right(builder) -> None:
    """Nets whose ReLUs are all modules: Captum's NeuronDeconvolution is a valid reference."""
    from captum.attr import NeuronDeconvolution

    torch.manual_seed(2)
    model = _perturb(builder()).double()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)
    layer = "features.8"
    cap = forward_capture(model, x, [layer])
    for unit, value in top_units(cap.outputs[layer], 2):
        ours = project_full(cap, layer, [unit])[0] / value
        ref = NeuronDeconvolution(model, dict(model.named_modules())[layer]).attribute(
            x, neuron_selector=(unit.channel, *unit.position))[0]
        assert _rel(ours, ref) < 1e-10


def test_googlenet_functional_relus_are_not_the_plain_gradient() -> None:
    """GoogLeNet has no ReLU modules (57 F.relu calls): Captum returns the plain gradient there; vizkit does not."""
    from captum.attr import NeuronDeconvolution

    torch.manual_seed(3)
    model = _perturb(torchvision.models.googlenet(aux_logits=False, init_weights=True)).double()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)
    layer = "inception4a"
    cap = forward_capture(model, x, [layer])
    audit = {a.op: a.count for a in cap.rules.audit()}
    assert audit["relu"] == 3 + 3 * 6  # stem conv1..3, then six BasicConv2d in each of 3a, 3b, 4a
    (unit, value), = top_units(cap.outputs[layer], 1)
    ours = project_full(cap, layer, [unit])[0] / value
    xr = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(_layer_value(model, xr, layer, unit), xr)[0][0]
    captum = NeuronDeconvolution(model, dict(model.named_modules())[layer]).attribute(
        x, neuron_selector=(unit.channel, *unit.position))[0]
    assert _rel(captum, plain) < 1e-10  # Captum silently falls back to the gradient
    assert _rel(ours, plain) > 0.1
    # ...and vizkit equals the gradient of a copy where every ReLU call uses the deconv rule by construction
    assert _rel(ours, _deconv_by_patched_relu(model, x, layer, unit)) < 1e-10


class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        return g.clamp(min=0)


def _layer_value(model: nn.Module, x: torch.Tensor, layer: str, unit: Unit) -> torch.Tensor:
    box: dict[str, torch.Tensor] = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: box.setdefault("o", o))
    try:
        model(x)
    finally:
        handle.remove()
    return box["o"][0, unit.channel, unit.position[0], unit.position[1]]


def _deconv_by_patched_relu(model: nn.Module, x: torch.Tensor, layer: str, unit: Unit) -> torch.Tensor:
    """Independent reference: monkeypatch F.relu itself with a hand-written deconv ReLU."""
    original = F.relu
    F.relu = lambda t, inplace=False: _DeconvReLU.apply(t)  # type: ignore[assignment]
    try:
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(_layer_value(model, xr, layer, unit), xr)[0][0]
    finally:
        F.relu = original


def test_overlapping_pool_switches_sum_hand_computed() -> None:
    """Two windows choose the same maximum: the unpooled location receives the sum (max_unpool2d overwrites)."""
    model = nn.Sequential(nn.MaxPool2d((1, 2), stride=1))
    x = torch.tensor([[[[0.0, 5.0, 1.0]]]])
    cap = forward_capture(model, x, ["0"])
    assert cap.outputs["0"].tolist() == [[[[5.0, 5.0]]]]
    out = project_full(cap, "0", [Unit(0, None)], mode="map")
    assert out.tolist() == [[[[0.0, 10.0, 0.0]]]]
    overwritten = F.max_unpool2d(torch.tensor([[[[5.0, 5.0]]]]), torch.tensor([[[[1, 1]]]]), (1, 2), 1,
                                 output_size=(1, 3))
    assert overwritten[0, 0, 0, 1] == 5.0  # the documented trap vizkit avoids


class _Odd(nn.Module):
    """Every awkward activation form: functional, torch.relu_, Tensor.relu_, a reused in-place module, residual
    add, concat, depthwise conv, ReLU6 via hardtanh, and a sigmoid gate."""

    def __init__(self, functional_relu=F.relu) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.relu = functional_relu
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = nn.Conv2d(16, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.c4 = nn.Conv2d(8, 4, 3, stride=2)
        self.gate = nn.Conv2d(8, 8, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        a = self.act(self.c1(x))
        b = torch.relu_(self.c2(a))
        c = self.c3(torch.cat([a, b], 1)).relu_()
        d = self.act(self.bn(c) + a)
        d = d * torch.sigmoid(self.gate(d.mean((2, 3), keepdim=True)))
        return F.relu6(self.c4(self.relu(d)))


def test_awkward_graph_equals_hand_patched_reference() -> None:
    torch.manual_seed(4)
    model = _perturb(_Odd()).double()
    x = torch.randn(1, 3, 17, 17, dtype=torch.float64)
    cap = forward_capture(model, x, ["c4"])
    audit = {a.op: a.count for a in cap.rules.audit()}
    assert audit == {"relu": 5, "sigmoid gate": 1, "batch_norm": 1}
    (unit, value), = top_units(cap.outputs["c4"], 1)
    ours = project_full(cap, "c4", [unit])[0] / value

    class Ref(_Odd):  # same weights; every ReLU is the hand-written deconv ReLU, the gate is detached
        def forward(self, x):  # type: ignore[no-untyped-def]
            r = _DeconvReLU.apply
            a = r(self.c1(x))
            b = r(self.c2(a))
            c = r(self.c3(torch.cat([a, b], 1)))
            d = r(self.bn(c) + a)
            d = d * torch.sigmoid(self.gate(d.mean((2, 3), keepdim=True))).detach()
            return self.c4(r(d))

    ref_model = Ref().double().eval()
    ref_model.load_state_dict(model.state_dict())
    xr = x.clone().requires_grad_(True)
    ref = torch.autograd.grad(ref_model(xr)[0, unit.channel, unit.position[0], unit.position[1]], xr)[0][0]
    assert _rel(ours, ref) < 1e-12


def test_forward_output_is_bit_identical_under_the_rules() -> None:
    torch.manual_seed(5)
    model = _perturb(torchvision.models.resnet18())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    cap = forward_capture(model, x, ["layer2"], stop=False)
    assert torch.equal(cap.logits, expected)
    assert {a.op: a.count for a in cap.rules.audit()}["relu"] == 17  # one reused module per block: 1 + 8 * 2


def test_mode_map_equals_explicit_whole_map_seed_and_is_not_additive() -> None:
    """Mode map seeds the whole channel. The rectified backward is positively homogeneous but not additive, so the
    map's projection is not the sum of its units' (a test that assumed linearity would pass a linear bug)."""
    torch.manual_seed(6)
    model = _perturb(torchvision.models.vgg11()).double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    cap = forward_capture(model, x, ["features.5"])
    out = cap.outputs["features.5"].detach()
    whole = project_full(cap, "features.5", [Unit(7)], mode="map")[0]
    seed = torch.zeros_like(out)
    seed[0, 7] = out[0, 7]
    assert _rel(whole, explicit_deconv(model, x, "features.5", seed)[0]) < 1e-10
    (unit, value), = top_units(out, 1)
    single = project_full(cap, "features.5", [unit])[0]
    assert _rel(single / value, explicit_deconv(model, x, "features.5", seed.new_zeros(seed.shape).index_put_(
        (torch.tensor([0]), torch.tensor([unit.channel]), torch.tensor([unit.position[0]]),
         torch.tensor([unit.position[1]])), torch.tensor([1.0], dtype=seed.dtype)))[0]) < 1e-10
    parts = sum(project_full(cap, "features.5", [Unit(7, (y, x_))])[0]
                for y in range(out.shape[2]) for x_ in range(out.shape[3]) if out[0, 7, y, x_] != 0)
    assert _rel(whole, parts) > 1e-3


def test_no_max_pool_means_image_independent_projection() -> None:
    """MobileNetV2 has no max-pool: two unrelated images give the same reconstruction for the same unit."""
    torch.manual_seed(7)
    model = _perturb(torchvision.models.mobilenet_v2()).double()
    layer = "features.4"
    xs = [torch.randn(1, 3, 64, 64, dtype=torch.float64) for _ in range(2)]
    projections = []
    for x in xs:
        cap = forward_capture(model, x, [layer])
        assert not cap.image_dependent(layer)
        projections.append(project_full(cap, layer, [Unit(3, (4, 4))], mode="max")[0] /
                           cap.outputs[layer][0, 3, 4, 4])
    assert projections[0].abs().max() > 0
    assert _rel(projections[0], projections[1]) < 1e-12
    resnet = _perturb(torchvision.models.resnet18()).double()
    cap = forward_capture(resnet, xs[0], ["layer1"])
    assert cap.image_dependent("layer1")  # the stem max-pool's switches


def test_deconv_api_top_k_order_and_shapes() -> None:
    torch.manual_seed(8)
    model = _perturb(torchvision.models.vgg11())
    x = torch.randn(1, 3, 64, 64)
    out = deconv(model, x, ["features.5", "features.12"], top_k=4, crop=False)
    assert [lp.layer for lp in out.layers] == ["features.5", "features.12"]
    for lp in out.layers:
        acts = [u.activation for u in lp.units]
        assert acts == sorted(acts, reverse=True) and len(acts) == 4
        assert lp.activation_maps.shape[0] == 4
        assert all(u.projection.shape == (3, 64, 64) for u in lp.units)
        for u, amap in zip(lp.units, lp.activation_maps, strict=True):
            assert amap[u.position] == pytest.approx(u.activation)
    assert out.logits is None  # stopped at the deepest layer


def test_bad_mode_and_layer_are_user_errors() -> None:
    from vizkit.errors import ModelError, UserInputError

    model = torchvision.models.vgg11()
    with pytest.raises(UserInputError, match="mode"):
        deconv(model, torch.randn(1, 3, 32, 32), ["features.5"], mode="mean")
    with pytest.raises(ModelError, match=r"features.5"):
        deconv(model, torch.randn(1, 3, 32, 32), ["feature.5"])


@pytest.mark.parametrize(("builder", "layer", "size"), [
    (torchvision.models.vgg11_bn, "features.10", 96),   # conv3 of a local chain with overlapping-free pools
    (torchvision.models.alexnet, "features.5", 127),    # overlapping 3x3/2 pools
    (torchvision.models.resnet18, "layer2", 112),       # residual adds, stem max-pool
])
def test_receptive_field_crop_equals_full_image(builder, layer: str, size: int) -> None:
    """The crop path computes each unit only over its receptive-field cone: same numbers, less arithmetic."""
    from vizkit.capture.receptive_field import receptive_fields
    from vizkit.project.deconv import project_cropped

    torch.manual_seed(9)
    model = _perturb(builder()).double()
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    rf = receptive_fields(model, tuple(x.shape))[layer]
    assert rf is not None and rf.local
    cap = forward_capture(model, x, [layer])
    picked = top_units(cap.outputs[layer], 6)
    grid = cap.outputs[layer].shape[-1]
    picked += [(Unit(0, (0, 0)), float(cap.outputs[layer][0, 0, 0, 0])),            # border units too
               (Unit(1, (grid - 1, grid - 1)), float(cap.outputs[layer][0, 1, -1, -1]))]
    units, values = [u for u, _ in picked], [v for _, v in picked]
    full = project_full(cap, layer, units)
    cropped = project_cropped(model, x, layer, units, rf, values)
    for i in range(len(units)):
        assert _rel(cropped[i], full[i]) < 1e-10 or full[i].abs().max() == cropped[i].abs().max() == 0, units[i]


def test_deconv_mixing_cropped_and_full_units_equals_all_full() -> None:
    """Per unit, deconv() picks the crop (border units, small clipped boxes) or the full backward: same numbers."""
    torch.manual_seed(10)
    model = _perturb(torchvision.models.resnet18()).double()
    x = torch.randn(1, 3, 112, 112, dtype=torch.float64)
    fast = deconv(model, x, ["layer2"], top_k=16, crop=True).layers[0]
    slow = deconv(model, x, ["layer2"], top_k=16, crop=False).layers[0]
    for a, b in zip(fast.units, slow.units, strict=True):
        assert (a.channel, a.position) == (b.channel, b.position)
        assert np.abs(a.projection - b.projection).max() <= 1e-10 * max(np.abs(b.projection).max(), 1e-300)


class _ViewNet(nn.Module):
    """Old-style code: ``x.view(n, -1)`` raises on a channels-last tensor; vizkit must fall back, not fail."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


def test_models_that_cannot_take_channels_last_fall_back() -> None:
    torch.manual_seed(11)
    model = _ViewNet().eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError):
        model(x.contiguous(memory_format=torch.channels_last))  # the premise
    out = deconv(model, x, ["conv"], top_k=2, logits=True, channels_last=True)
    assert out.logits is not None and torch.allclose(out.logits, model(x))
    assert all(np.abs(u.projection).max() > 0 for u in out.layers[0].units)


def test_channels_last_layout_gives_the_same_projections_to_float_rounding() -> None:
    """Without max-pool near-ties (BN network, few units) the opt-in layout matches to float rounding."""
    torch.manual_seed(12)
    model = _perturb(torchvision.models.vgg11_bn())
    x = torch.randn(1, 3, 64, 64)
    fast = deconv(model, x, ["features.14"], top_k=4, channels_last=True, logits=True)
    plain = deconv(model, x, ["features.14"], top_k=4, channels_last=False, logits=True)
    assert torch.allclose(fast.logits, plain.logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(fast.layers[0].units, plain.layers[0].units, strict=True):
        assert (a.channel, a.position) == (b.channel, b.position)
        assert np.abs(a.projection - b.projection).max() <= 1e-4 * np.abs(b.projection).max()


def test_scripted_models_are_refused_not_silently_wrong() -> None:
    """Inside TorchScript no rule can be attached: the plain gradient would come back; vizkit refuses instead."""
    from vizkit.errors import ModelError

    model = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval())
    with pytest.raises(ModelError, match="TorchScript"):
        deconv(model, torch.randn(1, 3, 16, 16), ["2"])
