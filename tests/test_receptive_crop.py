"""Receptive-field crops under TensorFlow-"same" padding (timm ``Conv2dSame``, the default model) are exact, and the
analysis runs on meta tensors without touching the model."""
from __future__ import annotations

import pytest
import torch
from timm.layers import Conv2dSame
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

from vizkit.capture.receptive_field import receptive_fields
from vizkit.project.deconv import (
    Unit,
    _cropped_units,
    deconv,
    forward_capture,
    project_cropped,
    project_full,
    top_units,
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _tf_chain() -> nn.Sequential:
    return nn.Sequential(
        Conv2dSame(3, 6, 3, stride=2), nn.ReLU(),
        Conv2dSame(6, 6, 5, stride=2, groups=6), nn.ReLU(),
        MaxPool2dSame(3, stride=2), nn.Conv2d(6, 8, 1), nn.ReLU(),
        Conv2dSame(8, 8, 3, stride=2), nn.ReLU(),
    )


@pytest.mark.parametrize("size", [(61, 61), (64, 57), (77, 90)])
def test_tf_same_crops_equal_full_projections(size: tuple[int, int]) -> None:
    """Asymmetric TF padding depends on the size modulo the stride: every unit, border ones included, equals its
    full-image projection when the crop's size is congruent to the image's."""
    torch.manual_seed(0)
    model = _tf_chain().double().eval()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    rf = receptive_fields(model, tuple(x.shape))["8"]
    assert rf is not None and rf.local and rf.same_padding and rf.stride == (16, 16)
    cap = forward_capture(model, x, ["8"])
    out = cap.outputs["8"]
    h, w = out.shape[-2:]
    picked = top_units(out, 4) + [(Unit(c, (y, xx)), float(out[0, c, y, xx].detach()))
                                  for c, y, xx in ((0, 0, 0), (1, h - 1, w - 1), (2, 0, w - 1), (3, h // 2, 1))]
    units, values = [u for u, _ in picked], [v for _, v in picked]
    full = project_full(cap, "8", units)
    cropped = project_cropped(model, x, "8", units, rf, values)
    for i, unit in enumerate(units):
        y0, y1, _x0, _x1 = rf.crop_box(*unit.position, *size)
        assert (y1 - y0 - size[0]) % 16 == 0 or y1 == size[0]
        assert full[i].abs().max() == 0 or _rel(cropped[i], full[i]) < 1e-12, unit


def test_default_model_middle_layer_crops_equal_full(default_model, sample_paths) -> None:
    """The offline default (tf_efficientnet_lite0, Conv2dSame throughout) now crops, with the same projections."""
    from vizkit.load import load_image, preprocess

    model = default_model.model
    x = preprocess(load_image(sample_paths[0]), default_model.preprocessing)
    layer = "blocks.2.1"
    rf = receptive_fields(model, tuple(x.shape))[layer]
    assert rf is not None and rf.local and rf.same_padding
    fast = deconv(model, x, [layer], top_k=4, crop=True).layers[0]
    slow = deconv(model, x, [layer], top_k=4, crop=False).layers[0]
    units = [Unit(u.channel, u.position) for u in fast.units]
    assert any(_cropped_units(rf, "max", units, 224, 224))  # the crop path really ran
    for a, b in zip(fast.units, slow.units, strict=True):
        assert (a.channel, a.position) == (b.channel, b.position)
        scale = float(abs(b.projection).max())
        assert scale > 0 and float(abs(a.projection - b.projection).max()) <= 1e-4 * scale


def test_analysis_runs_on_meta_and_leaves_model_untouched() -> None:
    """The graph runs on meta copies of the parameters: no arithmetic, and the model keeps its own tensors."""
    torch.manual_seed(1)
    model = _tf_chain().train()
    params = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    before = {k: v.detach().clone() for k, v in params.items()}
    seen: list[torch.device] = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.device))
    fields = receptive_fields(model, (1, 3, 64, 64))
    assert fields["8"] is not None and seen == [torch.device("meta")]
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict(keep_vars=True)
    assert all(after[k] is params[k] and torch.equal(after[k].detach(), before[k]) for k in params)
