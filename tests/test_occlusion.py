"""Occlusion maps (Zeiler & Fergus Fig. 7): hand-computed toy, Captum's Occlusion arithmetic, batching, validation,
model state, and the ``vizkit occlusion`` command end to end."""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from vizkit.errors import UserInputError
from vizkit.project.occlusion import check_window, default_window, occlusion_maps, pixel_attribution
from vizkit.render.occlusion import NPZ_KEYS, label_legend, occlusion_pages
from vizkit.testing.model_state import hook_count, state_fingerprint


class Toy(nn.Module):
    """conv 1x1 with weights (+1, -1) -> ReLU -> per-map sum; logits (sum of map 0, constant 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.relu(self.conv(x)).sum(dim=(2, 3))
        return torch.stack([total[:, 0], torch.full_like(total[:, 0], 2.0)], dim=1)


def toy_image(size: int = 4) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[0, 0, :2, :2] = 1.0  # only the top-left 2x2 block is lit
    return x


def test_toy_hand_computed_non_overlapping() -> None:
    maps = occlusion_maps(Toy(), toy_image(), "relu", window=2, stride=2)
    # The strongest map is channel 0, peaking at (0, 0); its total is 4 and drops to 0 when the block is covered.
    assert (maps.channel, maps.position, maps.target) == (0, (0, 0), 0)
    np.testing.assert_array_equal(maps.activity, [[0, 4], [4, 4]])
    np.testing.assert_array_equal(maps.label, [[1, 0], [0, 0]])
    p_lit, p_dark = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))  # softmax of (4, 2) and (0, 2)
    np.testing.assert_allclose(maps.probability, [[p_dark, p_lit], [p_lit, p_lit]], rtol=1e-6)
    assert maps.base_activity == 4 and maps.base_probability == pytest.approx(p_lit) and maps.base_label == 0
    expected = np.zeros((1, 4, 4), np.float32)
    expected[0, 0, 0] = 1.0  # deconvnet: activation 1 at (0, 0), rectified, transposed 1x1 filter (+1)
    np.testing.assert_array_equal(maps.projection, expected)


def test_toy_hand_computed_overlapping_and_clipped() -> None:
    maps = occlusion_maps(Toy(), toy_image(), "relu", window=2, stride=1)
    # covering rows y..y+1, cols x..x+1 removes the overlap with the lit 2x2 block
    np.testing.assert_array_equal(maps.activity, [[0, 2, 4], [2, 3, 4], [4, 4, 4]])
    np.testing.assert_array_equal(maps.label, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    clipped = occlusion_maps(Toy(), toy_image(5), "relu", window=2, stride=2)
    # (5 - 2) / 2 -> ceil 2 + 1 = 3 positions per axis: corners 0, 2, 4 (the last window clipped to one pixel)
    assert clipped.activity.shape == (3, 3)
    assert [c.tolist() for c in clipped.corners()] == [[0, 2, 4], [0, 2, 4]]
    np.testing.assert_array_equal(clipped.activity, [[0, 4, 4], [4, 4, 4], [4, 4, 4]])


def test_fill_value_is_used() -> None:
    maps = occlusion_maps(Toy(), toy_image(), "relu", window=2, stride=2, fill=1.0)
    np.testing.assert_array_equal(maps.activity, [[4, 8], [8, 8]])  # filling with 1 lights 4 more pixels elsewhere


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        model[-1].weight.mul_(20)  # sharper softmax: occlusion moves the probabilities visibly
    return model.eval()


def test_equals_captum_occlusion_non_overlapping() -> None:
    captum = pytest.importorskip("captum.attr")
    model, x = small_cnn(), torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    maps = occlusion_maps(model, x, "6", window=8, stride=8)
    attr = captum.Occlusion(lambda t: torch.softmax(model(t), dim=1)).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0.0, target=maps.target,
        perturbations_per_eval=4)[0].double().numpy()
    drop = maps.base_probability - maps.probability.astype(np.float64)
    assert np.abs(drop).max() > 1e-3  # the test must see real changes
    for i in range(3):
        for j in range(3):
            block = attr[:, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
            np.testing.assert_allclose(block, drop[i, j], atol=2e-7)  # each window's pixels carry p0 - p(occluded)


def test_equals_captum_occlusion_overlapping_clipped() -> None:
    captum = pytest.importorskip("captum.attr")
    model, x = small_cnn(), torch.randn(1, 3, 27, 30, generator=torch.Generator().manual_seed(2))
    maps = occlusion_maps(model, x, "3", window=(7, 9), stride=(3, 4), batch=10)
    assert maps.probability.shape == (math.ceil(20 / 3) + 1, math.ceil(21 / 4) + 1)
    attr = captum.Occlusion(lambda t: torch.softmax(model(t), dim=1)).attribute(
        x, sliding_window_shapes=(3, 7, 9), strides=(3, 3, 4), baselines=0.0, target=maps.target,
        perturbations_per_eval=16)[0].double().numpy()
    ours = pixel_attribution(maps)
    assert np.abs(ours).max() > 1e-3
    np.testing.assert_allclose(attr, np.broadcast_to(ours, attr.shape), atol=2e-7)


def test_batching_equals_one_at_a_time() -> None:
    model, x = small_cnn(), torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    one = occlusion_maps(model, x, "4", window=6, stride=3, batch=1)
    many = occlusion_maps(model, x, "4", window=6, stride=3, batch=7)
    every = occlusion_maps(model, x, "4", window=6, stride=3, batch=1000)
    for other in (many, every):
        np.testing.assert_allclose(other.activity, one.activity, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(other.probability, one.probability, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(other.label, one.label)
        assert (other.channel, other.target) == (one.channel, one.target)


def test_activity_matches_a_plain_forward_at_one_position() -> None:
    model, x = small_cnn(), torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    maps = occlusion_maps(model, x, "4", window=6, stride=6, target=2)
    occluded = x.clone()
    occluded[:, :, 6:12, 12:18] = 0.0
    with torch.no_grad():
        act = model[:5](occluded)[0, maps.channel].sum()
        prob = torch.softmax(model(occluded), dim=1)[0]
    assert maps.activity[1, 2] == pytest.approx(float(act), rel=1e-5)
    assert maps.probability[1, 2] == pytest.approx(float(prob[2]), rel=1e-5)
    assert maps.label[1, 2] == int(prob.argmax()) and maps.target == 2


@pytest.mark.parametrize("window, stride, message", [
    (0, 1, "--window height 0"), (25, 4, "--window height 25"), ((4, 30), 2, "--window width 30"),
    (4, 0, "--stride height 0"), (4, 5, "--stride height 5"), (4, (2, 6), "--stride width 6"),
    ((1, 2, 3), 1, "one integer or two"), (4.5, 1, "one integer or two"),
])
def test_window_and_stride_validation(window, stride, message) -> None:
    with pytest.raises(UserInputError, match=re.escape(message)):
        occlusion_maps(small_cnn(), torch.zeros(1, 3, 24, 24), "4", window=window, stride=stride)


def test_other_user_errors() -> None:
    model, x = small_cnn(), torch.zeros(1, 3, 24, 24)
    with pytest.raises(UserInputError, match="batch"):
        occlusion_maps(model, x, "4", window=4, stride=2, batch=0)
    with pytest.raises(UserInputError, match="--target 5"):
        occlusion_maps(model, x, "4", window=4, stride=2, target=5)
    with pytest.raises(UserInputError, match="unknown layer"):
        occlusion_maps(model, x, "features.4", window=4, stride=2)
    with pytest.raises(UserInputError, match="one image"):
        occlusion_maps(model, torch.zeros(2, 3, 24, 24), "4", window=4, stride=2)


def test_defaults_and_check_window() -> None:
    assert default_window(224, 224) == (32, 16)
    assert default_window(32, 32) == (5, 2)
    assert check_window(4, (2, 3), 10, 10) == ((4, 4), (2, 3))


def test_model_left_as_it_was_also_on_error() -> None:
    model = small_cnn()
    model.train()
    model[0].eval()
    model[3].weight.requires_grad_(False)
    before = state_fingerprint(model)
    flags = [m.training for m in model.modules()]
    requires_grad = [p.requires_grad for p in model.parameters()]
    assert requires_grad.count(False) == 1
    occlusion_maps(model, torch.randn(1, 3, 24, 24), "4", window=6, stride=6)
    with pytest.raises(UserInputError):
        occlusion_maps(model, torch.randn(1, 3, 24, 24), "4", window=6, stride=6, target=99)
    assert hook_count(model) == 0
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())
    after = state_fingerprint(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pages_and_legend() -> None:
    maps = occlusion_maps(Toy(), toy_image(), "relu", window=2, stride=1)
    legend = label_legend(maps, ["lit", "dark"])
    assert [(lab, name, n) for lab, name, n, _ in legend] == [(0, "lit", 8), (1, "dark", 1)]
    image = np.zeros((4, 4, 3), np.uint8)
    figures = occlusion_pages(maps, image, None)
    assert len(figures) == 1 and len(figures[0].axes) >= 5


# --- the command ----------------------------------------------------------------------------------------------------

def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def _run(args: list[str]) -> tuple[int, str, str]:
    from vizkit_cli.occlusion import occlusion

    result = CliRunner().invoke(occlusion, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_lenet5_writes_npz_pdf_manifest_and_goes_on_past_bad_files(tmp_path: Path, sample_paths) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out = tmp_path / "out"
    code, _, err = _run([str(bad), str(sample_paths[1]), "--model", "lenet5", "--window", "8", "--stride", "4",
                              "--target", "3", "--batch", "5", "--out", str(out)])
    assert code == 2
    assert "notes.jpg" in err and "1 written, 1 failed" in err
    folder = out / "chelsea"
    assert sorted(p.name for p in folder.iterdir()) == ["occlusion.manifest.json", "occlusion.npz", "occlusion.pdf",
                                                        "occlusion.sanity.json"]
    arrays = np.load(folder / "occlusion.npz")
    assert set(arrays.files) == set(NPZ_KEYS)
    assert arrays["input"].shape == (1, 1, 32, 32)
    assert arrays["activity"].shape == arrays["probability"].shape == arrays["label"].shape == (7, 7)
    assert arrays["label"].dtype == np.int64 and arrays["projection"].shape == (1, 32, 32)
    assert int(arrays["target"]) == 3 and arrays["window"].tolist() == [8, 8] and arrays["stride"].tolist() == [4, 4]
    assert np.all((arrays["probability"] >= 0) & (arrays["probability"] <= 1))
    assert _pdf_pages(folder / "occlusion.pdf") == 2  # the maps, the sanity checks
    sanity = json.loads((folder / "occlusion.sanity.json").read_text())
    assert [s["method"] for s in sanity] == ["deconv", "guided_backprop", "gradcam"]
    manifest = json.loads((folder / "occlusion.manifest.json").read_text())
    assert manifest["settings"]["window"] == [8, 8] and manifest["settings"]["target"] == "3"
    assert {f["path"] for f in manifest["files"]} == {"occlusion.npz", "occlusion.pdf", "occlusion.sanity.json"}
    assert not list(out.glob(".*"))


def test_cli_default_model_recomputes_the_npz(tmp_path: Path, default_model, sample_paths) -> None:
    code, _, err = _run([str(sample_paths[2]), "--window", "56", "--stride", "56", "--layer", "blocks.5",
                         "--no-sanity", "--out", str(tmp_path)])
    assert code == 0, err
    folder = tmp_path / "coffee"
    assert not (folder / "occlusion.sanity.json").exists()
    assert _pdf_pages(folder / "occlusion.pdf") == 1
    arrays = np.load(folder / "occlusion.npz")
    assert int(arrays["target"]) == 967  # espresso, the top class
    model = copy.deepcopy(default_model.model)
    again = occlusion_maps(model, torch.from_numpy(arrays["input"]), "blocks.5", window=56, stride=56)
    np.testing.assert_allclose(arrays["probability"], again.probability, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(arrays["label"], again.label)
    assert int(arrays["channel"]) == again.channel


def test_cli_usage_errors_exit_2(tmp_path: Path, sample_paths) -> None:
    code, _, err = _run([str(sample_paths[0]), "--model", "lenet5", "--window", "40", "--out", str(tmp_path)])
    assert code == 2 and "--window height 40" in err
    code, _, err = _run([str(sample_paths[0]), "--model", "lenet5", "--window", "4", "--stride", "9",
                         "--out", str(tmp_path)])
    assert code == 2 and "--stride" in err
    code, _, err = _run([str(sample_paths[0]), "--model", "lenet5", "--target", "12", "--out", str(tmp_path)])
    assert code == 2 and "target 12" in err
    assert not list(tmp_path.iterdir())
