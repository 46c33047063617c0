"""`vizkit mine` pass 2: batched projections equal `vizkit deconv` on each image alone; unit selection; state."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mine_helpers import TensorImages, brute_force_result, random_images, small_vgg
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.cone import ConeConv
from vizkit.project.cone_chain import chain_shapes
from vizkit.project.deconv import Unit, _cropped_units, analyse_receptive_fields, deconv
from vizkit.project.mine_projection import Request, _share_forwards, project_requests, project_units, select_units
from vizkit.testing.model_state import hook_count


class SqueezeExcite(nn.Module):
    """A global operation before the layer: crops are not allowed, every element uses its full image."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


def se_model() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), SqueezeExcite(8), nn.MaxPool2d(2),
                         nn.Conv2d(8, 10, 3, padding=1), nn.ReLU()).eval()


CASES = {"vgg-like": (small_vgg, ["2", "5", "10"]), "squeeze-excitation": (se_model, ["5"])}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("cone", [True, False])
def test_batched_projections_equal_deconv_on_each_image_alone(case: str, cone: bool) -> None:
    build, layers = CASES[case]
    model = build()
    images = random_images(5)
    result = brute_force_result(model, images, layers, k=3)  # 5 images, k=3: several units share an image
    source = TensorImages(images)
    paths_seen = set()
    rfs = analyse_receptive_fields(model, (1, 3, 32, 32))
    for layer in layers:
        channels = list(range(result.layers[layer].values.shape[0]))
        units = project_units(model, result, source, layer, channels, batch_size=4, cone=cone)
        assert [u.channel for u in units] == channels
        for unit in units:
            assert len(unit.entries) == 3
            for entry in unit.entries:
                x = images[entry.image_index][None]
                ref = deconv(model, x, [layer], channels={layer: [unit.channel]}, crop=False).layers[0].units[0]
                assert ref.position == entry.position
                y0, y1, x0, x1 = entry.box
                full = np.abs(ref.projection).sum()
                inside = ref.projection[:, y0:y1, x0:x1]
                assert np.abs(inside).sum() == pytest.approx(full, rel=1e-6)  # nothing lies outside the box
                scale = max(float(np.abs(inside).max()), 1e-30)
                assert np.abs(entry.projection - inside).max() / scale < 1e-4, (layer, unit.channel, entry)
                assert entry.patch.shape == (y1 - y0, x1 - x0, 3) and entry.patch.dtype == np.uint8
            on_crop = _cropped_units(rfs.get(layer), "max", [Unit(unit.channel, e.position) for e in unit.entries],
                                     32, 32)
            paths_seen.update(on_crop)
    # the vgg-like model exercises both the crop batches and the shared full-image forward; SE only the latter
    assert paths_seen == ({True, False} if case == "vgg-like" else {False})


def test_projections_are_nonzero_and_values_come_from_the_scan() -> None:
    model = small_vgg()
    images = random_images(4)
    result = brute_force_result(model, images, ["10"], k=2)
    channels = select_units(result, "10", "top:3")
    units = project_units(model, result, TensorImages(images), "10", channels)
    for unit in units:
        for r, entry in enumerate(unit.entries):
            assert entry.value == pytest.approx(float(result.layers["10"].values[unit.channel, r]))
            assert entry.path == result.paths[entry.image_index]
            assert np.abs(entry.projection).max() > 0


def test_cone_conv_backward_equals_autograd() -> None:
    torch.manual_seed(0)
    for k, s, p, d, g in [(3, 1, 1, 1, 1), (3, 1, 2, 2, 1), (5, 2, 2, 1, 1), (3, 2, 0, 2, 1), (3, 1, 1, 1, 4),
                          (11, 4, 2, 1, 1), (1, 1, 0, 1, 1)]:
        w, b = torch.randn(8, 8 // g, k, k, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
        x = torch.randn(4, 8, 23, 23, dtype=torch.float64, requires_grad=True)
        y = F.conv2d(x, w, b, s, p, d, g)
        seed = torch.zeros_like(y)
        seed[0, 1, 0, 0] = 1.0  # corner: the box is clipped by the padding
        seed[1, 2, -1, 3] = 2.0
        seed[2] = torch.randn_like(y[2])  # dense: the ordinary batched kernel
        # element 3 stays zero: skipped, its gradient must be exactly zero
        (ref,) = torch.autograd.grad(y, x, seed)
        with ConeConv() as mode:
            y2 = F.conv2d(x, w, b, s, p, d, g)
        assert mode.calls == 1 and torch.equal(y, y2)
        (got,) = torch.autograd.grad(y2, x, seed)
        assert torch.allclose(got, ref, rtol=0, atol=1e-12), (k, s, p, d, g)
        assert not got[3].any()


def test_model_state_restored_and_no_hooks_also_after_an_error() -> None:
    model = small_vgg().train()
    model[1].eval()  # a submodule deliberately in another mode
    model[0].weight.requires_grad_(False)
    grad = torch.ones_like(model[4].weight)
    model[4].weight.grad = grad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = random_images(3)
    result = brute_force_result(copy.deepcopy(model), images, ["5"], k=2)
    model.train()
    model[1].eval()
    project_units(model, result, TensorImages(images), "5", [0, 1])
    flags = [m.training for m in model.modules()]
    assert flags[0] and not model[1].training and hook_count(model) == 0
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad and model[4].weight.grad is grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    broken = nn.Sequential(*list(model)[:3], Boom(), *list(model)[3:]).train()  # raises before layer "5"
    broken[1].eval()
    with pytest.raises(RuntimeError, match="boom"):
        project_units(broken, result, TensorImages(images), "5", [0])
    assert [m.training for m in model.modules()] == flags and hook_count(broken) == 0
    assert model[4].weight.requires_grad and model[4].weight.grad is grad


def test_unreadable_image_at_projection_time_is_one_line() -> None:
    model = small_vgg()
    images = random_images(3)
    result = brute_force_result(model, images, ["5"], k=3)
    with pytest.raises(UserInputError, match=r"img00[0-2]\.png"):
        project_units(model, result, TensorImages([None, None, None]), "5", [0])


def test_select_units() -> None:
    model = small_vgg()
    result = brute_force_result(model, random_images(3), ["5"], k=2)
    state = result.layers["5"]
    state.mean[:] = np.arange(12, dtype=np.float32)[::-1] % 5  # ties: smaller channel first
    state.image_index[7] = -1  # a unit with no entry is never rendered
    assert select_units(result, "5", "top:4") == [2, 3, 8, 4]  # means 4 (2, 7 has no entry), 3 (3, 8), 2 (4)
    assert select_units(result, "5", "4") == [4]  # a bare number names a channel, as a bare list does
    assert select_units(result, "5", "7") == [7]  # asked for by name: rendered even without an entry
    assert select_units(result, "5", "all") == [c for c in range(12) if c != 7]
    assert select_units(result, "5", "3, 1,3") == [3, 1]
    assert len(select_units(result, "5", None)) == 11  # default top:16 on a 12-channel layer
    assert len(select_units(result, "5", "top:12")) == 11
    for bad in ("12", "x", "0,99", "top:0", "top:x", "-1"):
        with pytest.raises(UserInputError, match="--units"):
            select_units(result, "5", bad)
    with pytest.raises(UserInputError, match="not scanned"):
        select_units(result, "7", "all")


def test_cone_serves_crop_requests_from_a_shared_forward() -> None:
    """With the cone backward, an image whose crops together cover more than the image is forwarded once whole;
    an image with a few small crops stays on crops. Both give the projections of the crop path."""
    model = small_vgg()
    images = dict(enumerate(random_images(2)))
    rf = analyse_receptive_fields(model, (1, 3, 32, 32))["5"]
    with torch.no_grad():
        acts = model[:6](torch.stack([images[0], images[1]]))  # layer "5": (2, 12, 16, 16), ReLU'd

    def peak(image: int, channel: int) -> tuple[int, int]:  # a position where the unit fires: nonzero projection
        flat = int(acts[image, channel].argmax())
        return flat // 16, flat % 16

    many = [Request(c, 0, peak(0, c)) for c in range(9)]  # 9 crops of at least 7 x 7 ... 13 x 13
    few = [Request(1, 1, peak(1, 1)), Request(2, 1, peak(1, 2))]
    requests = many + few
    on_crop = _cropped_units(rf, "max", [Unit(r.channel, r.position) for r in requests], 32, 32)
    assert all(on_crop)
    areas = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in (rf.crop_box(*r.position, 32, 32) for r in requests)]
    assert sum(areas[:9]) > 32 * 32 >= sum(areas[9:])  # the rule's two sides
    assert _share_forwards(requests, on_crop, rf, 32, 32) == [False] * 9 + [True] * 2
    cone = project_requests(model, images, "5", requests, receptive_field=rf, cone=True)
    plain = project_requests(model, images, "5", requests, receptive_field=rf, cone=False)
    for (a, box_a), (b, box_b) in zip(cone, plain, strict=True):
        assert box_a == box_b and np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


def test_chain_models_walk_the_cone_and_other_graphs_keep_autograd() -> None:
    x = random_images(1)[0][None]
    chain = chain_shapes(small_vgg(), x, "10")
    assert chain is not None and [n for n, _ in chain[0]][-1] == "10" and chain[1]["0"] == (1, 3, 32, 32)
    assert chain_shapes(se_model(), x, "5") is None  # a functional global op: not a chain
    assert chain_shapes(small_vgg(), x, "nonexistent") is None
