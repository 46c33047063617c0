"""Receptive fields: hand-derived values, empirical boxes from input gradients, local flags, fallbacks."""
from __future__ import annotations

import copy
import importlib

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vizkit.capture.receptive_field import ReceptiveField, receptive_field, receptive_fields
from vizkit.errors import ModelError
from vizkit.testing.meta import build_on_meta

rf_module = importlib.import_module("vizkit.capture.receptive_field")


def _meta(name: str, **kwargs) -> nn.Module:
    return build_on_meta(torchvision.models.get_model, name, **kwargs)


def _geom(f: ReceptiveField | None) -> tuple:
    assert f is not None
    return f.size[0], f.stride[0], f.start[0], f.local


# ------------------------------------------------------------------------------------------- hand-computed

def test_vgg16_hand_derived():
    # conv3: size 1+2 -> 3 -> 5, pool 2/2 -> 6 (jump 2), conv x2 -> 10, 14, pool -> 16 (jump 4), conv x3 -> 40.
    # Each 2x2 pool moves the centre by jump/2: 0.5 + 1 (+ 2 + 4 for conv5_3).
    fields = receptive_fields(_meta("vgg16"))
    assert _geom(fields["features.0"]) == (3, 1, 0.0, True)
    assert _geom(fields["features.14"]) == (40, 4, 1.5, True)  # conv3_3
    assert _geom(fields["features.15"]) == (40, 4, 1.5, True)  # its ReLU
    assert _geom(fields["features.29"]) == (196, 16, 7.5, True)  # conv5_3 + ReLU
    # pool5: 212 px, jump 32, effective padding 90 = sum of conv paddings x jump (2*1 + 2*2 + 3*4 + 3*8 + 3*16)
    pool5 = fields["features.30"]
    assert _geom(pool5) == (212, 32, 15.5, True)
    assert pool5.start[0] - (pool5.size[0] - 1) / 2 == -90
    assert fields["avgpool"].local is False  # adaptive: the window follows the input size
    assert fields["classifier.0"] is None


def test_alexnet_hand_derived():
    # conv1 11x11 stride 4 pad 2: centre of unit 0 at (11-1)/2 - 2 = 3.
    # pool 3/2 -> 11+2*4 = 19 (jump 8); conv5x5 -> 51; pool -> 67 (16); 3 conv3x3 -> 163; pool5 -> 195 (32).
    fields = receptive_fields(_meta("alexnet"))
    assert _geom(fields["features.0"]) == (11, 4, 3.0, True)
    assert _geom(fields["features.2"])[:2] == (19, 8)
    assert _geom(fields["features.5"])[:2] == (67, 16)
    assert _geom(fields["features.12"])[:2] == (195, 32)


def test_published_sizes():
    # Araujo, Norris, Sim, "Computing Receptive Fields of CNNs", Distill 2019: MobileNet-v2 491, Inception-v3 1311.
    assert _geom(receptive_fields(_meta("mobilenet_v2"))["features.18"])[:2] == (491, 32)
    inc = receptive_fields(_meta("inception_v3", init_weights=False), (1, 3, 299, 299))
    assert _geom(inc["Mixed_7c"])[:2] == (1311, 32)
    assert inc["AuxLogits"] is None  # never runs in eval mode


class ZFNetLike(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 8, 7, stride=2, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(8, 8, 5, stride=2), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
        )


def test_zfnet_like_chain_hand_derived():
    fields = receptive_fields(ZFNetLike())
    # conv7/2 pad1: 7, jump 2, centre 3-1 = 2; pool3/2 pad1: 7+2*2 = 11, jump 4, centre 2+(1-1)*2 = 2
    # conv5/2: 11+4*4 = 27, jump 8, centre 2+2*4 = 10; pool3/2 pad1: 27+2*8 = 43, jump 16, centre 10
    # 3 conv3 pad1: 43+3*2*16 = 139; pool3/2: 139+2*16 = 171, jump 32, centre 10+16 = 26
    assert _geom(fields["0"]) == (7, 2, 2.0, True)
    assert _geom(fields["2"]) == (11, 4, 2.0, True)
    assert _geom(fields["3"]) == (27, 8, 10.0, True)
    assert _geom(fields["5"]) == (43, 16, 10.0, True)
    assert _geom(fields["10"]) == (139, 16, 10.0, True)
    assert _geom(fields["12"]) == (171, 32, 26.0, True)


def test_residual_block_hand_derived():
    block = torchvision.models.resnet.BasicBlock(
        4, 8, stride=2, downsample=nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.BatchNorm2d(8)))
    fields = receptive_fields(nn.Sequential(block), (1, 4, 32, 32))
    # main path: conv3/2 pad1 -> 3 (jump 2), conv3 pad1 -> 3+2*2 = 7; shortcut 1x1/2 -> 1; union 7, centres at 0
    assert _geom(fields["0.conv1"]) == (3, 2, 0.0, True)
    assert _geom(fields["0.downsample"]) == (1, 2, 0.0, True)
    assert _geom(fields["0"]) == (7, 2, 0.0, True)
    assert fields["0.relu"].size == (3, 3)  # first call of the shared ReLU: after bn1


def test_box_clips_to_image():
    f = ReceptiveField(size=(7, 5), stride=(2, 4), start=(0.0, 1.0), local=True)
    assert f.box(0, 0, 20, 20) == (0, 4, 0, 4)  # rows -3..3, cols -1..3
    assert f.box(3, 2, 20, 20) == (3, 10, 7, 12)  # centre (6, 9)
    assert f.box(9, 4, 20, 20) == (15, 20, 15, 20)  # centre (18, 17)
    assert ReceptiveField((2, 2), (1, 1), (0.5, 0.5), True).box(7, 0, 8, 8) == (7, 8, 0, 2)  # even kernel


def test_unknown_layer_is_a_one_line_user_error():
    with pytest.raises(ModelError, match=r"Unknown layer 'feature.2'.*Did you mean: features.2"):
        receptive_field(VGGLike(), "feature.2", (1, 3, 32, 32))


# ----------------------------------------------------------------------------------------------- empirical

def _linearised(model: nn.Module) -> nn.Module:
    """Copy in float64 with positive weights, activations -> Identity and max-pool -> average pool of the same
    windows: every path from a pixel to a unit then carries a positive gradient, so the nonzero input gradient
    is exactly the receptive field (functional ReLUs pass everything since all activations are positive)."""
    m = copy.deepcopy(model).double().eval()
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU)):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    with torch.no_grad():
        for p in m.parameters():
            p.abs_().add_(0.01)
        for b in m.modules():
            if isinstance(b, nn.modules.batchnorm._BatchNorm):
                b.running_mean.zero_()
                b.running_var.fill_(1.0)
    return m


def _check_boxes(model: nn.Module, input_shape: tuple[int, ...], layers: list[str], require_local: bool = True) -> int:
    """Compare ``box`` with the bounding box of the nonzero input gradient for five units per layer."""
    fields = receptive_fields(model, input_shape)
    lin = _linearised(model)
    h, w = input_shape[-2:]
    checked = 0
    for layer in layers:
        f = fields[layer]
        assert f is not None and (f.local or not require_local), layer
        out = {}
        hook = lin.get_submodule(layer).register_forward_hook(lambda m, i, o, out=out: out.setdefault("y", o))
        x = torch.ones(input_shape, dtype=torch.float64, requires_grad=True)
        try:
            lin(x)
        finally:
            hook.remove()
        y = out["y"]
        oh, ow = y.shape[-2:]
        for uy, ux in {(0, 0), (oh - 1, ow - 1), (0, ow - 1), (oh // 2, ow // 3), (oh - 1, ow // 2)}:
            (g,) = torch.autograd.grad(y[0, :, uy, ux].sum(), x, retain_graph=True)
            nz = g[0].abs().sum(0) > 0
            rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
            found = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
            assert found == f.box(uy, ux, h, w), (layer, uy, ux)
            checked += 1
    return checked


class VGGLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.BatchNorm2d(4), nn.ReLU(),
            nn.ZeroPad2d((1, 0, 1, 0)),  # asymmetric static padding
            nn.Conv2d(4, 6, 2),  # even kernel
            nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
            nn.Conv2d(6, 6, 5, stride=2, padding=1), nn.ReLU(),
            nn.AvgPool2d(2, 2, ceil_mode=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class Branchy(nn.Module):
    """Inception-like: four branches concatenated, then an asymmetric F.pad, even kernel and a residual merge."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 5, padding=2))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1))
        self.b4 = nn.Conv2d(8, 4, 3, padding=2, dilation=2)
        self.post = nn.Conv2d(16, 8, 2, stride=2)
        self.tail = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)
        y = self.post(F.pad(y, (1, 0, 0, 1)))
        return self.tail(y) + F.avg_pool2d(y, 3, 1, 1) * 0.5


def test_empirical_vgg_like_chain():
    layers = ["features.2", "features.3", "features.4", "features.8", "features.9", "features.11", "features.12"]
    assert _check_boxes(VGGLike(), (1, 3, 45, 38), layers) >= 4 * len(layers)  # up to 5 distinct units each


def test_empirical_branchy_concat_model():
    model = Branchy()
    fields = receptive_fields(model, (1, 3, 40, 40))
    assert fields["b1"].size == (3, 3) and fields["b2"].size == (11, 11)  # before the concat
    _check_boxes(model, (1, 3, 40, 40), ["stem", "b2", "b3", "b4", "post", "tail"])
    # the whole model's output is not a module: check the root-level add through a wrapper
    wrapped = nn.Sequential(model)
    _check_boxes(wrapped, (1, 3, 40, 40), ["0"])


def test_empirical_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    _check_boxes(model, (1, 3, 112, 112), ["maxpool", "layer1.0", "layer1", "layer2.0.conv1", "layer2", "layer3"])


def test_empirical_timm_tf_efficientnet_lite0_dynamic_padding():
    """TF-'SAME' padding (timm Conv2dSame) puts the odd pixel at the far edge: the geometry follows it."""
    model = timm.create_model("tf_efficientnet_lite0")
    fields = receptive_fields(model, (1, 3, 64, 64))
    assert fields["conv_stem"].start == (1.0, 1.0)  # 3x3/2 on 64 px: pad (0, 1), so unit 0 is centred on pixel 1
    _check_boxes(model, (1, 3, 64, 64), ["conv_stem", "blocks.1", "blocks.2.0"], require_local=False)


# ---------------------------------------------------------------------------------------------- local flags

def test_local_flags_torchvision():
    r18 = receptive_fields(_meta("resnet18"))
    assert r18["layer4"].local is True and r18["layer4"].size == (435, 435)
    assert r18["avgpool"].local is False
    assert r18["fc"] is None

    eff = receptive_fields(_meta("efficientnet_b0"))
    assert eff["features.0"].local is True
    assert eff["features.1.0.block.0"].local is True  # depthwise conv before the first squeeze-excitation
    assert eff["features.1.0.block.1"].local is False  # the SE gate: global pooling
    assert eff["features.1"].local is False and eff["features.1"].size == (7, 7)  # geometry of the conv path
    assert eff["features.2"].local is False

    assert receptive_fields(_meta("mobilenet_v2"))["features.5"].local is True
    cnx = receptive_fields(_meta("convnext_tiny"))
    assert cnx["features.1"].local is True  # channels-last LayerNorm + Linear are pointwise in space
    assert receptive_fields(_meta("swin_t"))["features.1"] is None  # window attention: not derivable
    assert receptive_fields(_meta("vit_b_16"))["encoder"] is None


def test_local_flags_timm_dynamic_same_padding():
    with torch.device("meta"):
        tf_lite = timm.create_model("tf_efficientnet_lite0")
        lite = timm.create_model("efficientnet_lite0")
    assert type(tf_lite.conv_stem).__name__ == "Conv2dSame"
    tf_fields, fields = receptive_fields(tf_lite), receptive_fields(lite)
    # Padding computed from the input size, TF "same": local for crops whose size is congruent modulo the stride.
    assert tf_fields["conv_stem"].local is True and tf_fields["conv_stem"].same_padding is True
    assert tf_fields["blocks.6"].local is True and tf_fields["blocks.6"].same_padding is True
    assert fields["conv_stem"].local is True and fields["blocks.6"].local is True  # static symmetric padding
    assert fields["blocks.6"].same_padding is False
    assert tf_fields["blocks.6"].size == fields["blocks.6"].size == (851, 851)


class Ops(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular" if kind == "circular" else "zeros")
        norms = {"group": nn.GroupNorm(2, 4), "instance": nn.InstanceNorm2d(4)}
        self.norm = norms.get(kind, nn.Identity())
        self.pos = nn.Parameter(torch.zeros(1, 4, 16, 16))
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.kind == "pos":
            x = x + self.pos
        if self.kind == "interp":
            x = F.interpolate(x, scale_factor=2.0)
        if self.kind == "softmax":
            x = x.softmax(-1)  # over the width
        if self.kind == "split":  # MixNet / Res2Net style channel groups
            a, b = torch.split(x, 2, dim=1)
            x = torch.cat([b, a.chunk(2, 1)[0], a.chunk(2, 1)[1]], 1)
        if self.kind == "channels":
            x = x.softmax(1) * x.mean(1, keepdim=True)
        return self.out(x)


@pytest.mark.parametrize("kind,local", [
    ("plain", True), ("channels", True), ("split", True), ("circular", False), ("group", False), ("instance", False),
    ("pos", False), ("softmax", False), ("interp", None),
])
def test_local_flag_per_op(kind: str, local: bool | None):
    f = receptive_fields(Ops(kind), (1, 3, 16, 16))["out"]
    if local is None:
        assert f is None
    else:
        assert f.local is local and f.size == (3, 3)


# ------------------------------------------------------------------------------------- fallbacks and state

class DataDependent(nn.Module):
    """Root forward with data-dependent control flow: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.b = nn.ReLU()
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.b(self.a(x)))
        if y.sum() > 0:
            y = y * 2
        return self.d(y)


def test_untraceable_root_falls_back_to_module_chain():
    fields = receptive_fields(DataDependent(), (1, 3, 16, 16))
    assert _geom(fields["a"]) == (3, 2, 0.0, True)
    assert _geom(fields["c"]) == (7, 2, 0.0, True)
    assert fields["d"] is None  # after an op between modules the chain is not followed


class Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _row in x:  # iterating a Proxy fails in fx
            pass
        return x * 1.0


def test_untraceable_submodule_becomes_opaque():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Untraceable(), nn.Conv2d(4, 4, 3, padding=1))
    fields = receptive_fields(model, (1, 3, 16, 16))
    assert _geom(fields["0"]) == (3, 1, 0.0, True)
    assert fields["1"] is None and fields["2"] is None


def test_torchvision_models_take_the_traced_path(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("fell back to module order")

    monkeypatch.setattr(rf_module, "chain_fallback", fail)
    for name in ("googlenet", "densenet121", "shufflenet_v2_x1_0", "regnet_y_400mf", "mnasnet0_5"):
        fields = receptive_fields(_meta(name, **({"init_weights": False} if name == "googlenet" else {})))
        assert sum(f is not None for f in fields.values()) > 0.9 * len(fields), name


def test_model_state_is_restored():
    model = VGGLike()
    model.train()
    model.features[1].eval()
    before = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    receptive_fields(model, (1, 3, 32, 32))
    assert {n: m.training for n, m in model.named_modules()} == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _unit_on_crop(model: nn.Module, x: torch.Tensor, layer: str, f: ReceptiveField, uy: int, ux: int):
    """(full-image value, value on the unit's box aligned down to the cumulative stride) of unit (uy, ux)."""
    out = {}
    hook = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    try:
        model(x)
        full = out.pop("y")[0, :, uy, ux]
        y0, y1, x0, x1 = f.box(uy, ux, *x.shape[-2:])
        sy, sx = f.stride
        y0, x0 = y0 // sy * sy, x0 // sx * sx
        model(x[:, :, y0:y1, x0:x1])
        return full, out.pop("y")[0, :, uy - y0 // sy, ux - x0 // sx]
    finally:
        hook.remove()


@torch.no_grad()
def test_local_means_the_unit_sees_only_its_box():
    """DESIGN section 3: for local layers the crop to the box gives the same unit; for gated layers it does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96)
    r18 = torchvision.models.resnet18().eval()
    fields = receptive_fields(r18, tuple(x.shape))
    for layer, units in {"layer1": [(0, 0), (10, 17), (23, 23)], "layer2": [(5, 6), (11, 0)]}.items():
        for uy, ux in units:
            full, cropped = _unit_on_crop(r18, x, layer, fields[layer], uy, ux)
            assert torch.allclose(full, cropped, rtol=1e-4, atol=1e-5), (layer, uy, ux)
    eff = torchvision.models.efficientnet_b0().eval().double()
    f = receptive_fields(eff, tuple(x.shape))["features.2"]
    assert f.local is False
    full, cropped = _unit_on_crop(eff, x.double(), "features.2", f, 12, 12)
    assert (full - cropped).abs().max() > 1e-4 * full.abs().max()  # the SE gates saw the whole image


def test_forward_failure_is_a_user_error():
    with pytest.raises(ModelError, match=r"shape \(1, 3, 16\)"):
        receptive_fields(VGGLike(), (1, 3, 16))
