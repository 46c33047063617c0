"""`vizkit filters`: hand-computed RMS / dead / dominant flags, tile normalisation, pages, npz keys, the CLI."""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from vizkit_cli.filters import filters as filters_command

from vizkit.capture.filters import FilterStats, conv_layers, filter_stats
from vizkit.errors import ModelError, UserInputError
from vizkit.jobs.filters import FiltersConfig, pictured_layers, run_filters
from vizkit.render.filters import (
    MAX_TILES,
    filter_tiles,
    filters_arrays,
    filters_pages,
    kernel_norms,
    layer_page,
    picture_kind,
)
from vizkit.testing.model_state import hook_count, state_fingerprint


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(filters_command, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _tiny() -> nn.Module:
    """Five 2x3x3 filters with set weights: RMS 0.05, 0 (dead), 0.5 (dominant), 1e-5 (dead: < 1e-3 x median),
    0.0353553 (nine weights 0.03, nine -0.04)."""
    conv = nn.Conv2d(2, 5, 3)
    w = torch.zeros(5, 2, 3, 3)
    w[0] = 0.05
    w[2] = 0.5
    w[3] = 1e-5
    w[4].view(-1)[:9] = 0.03
    w[4].view(-1)[9:] = -0.04
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.fill_(7.0)  # the bias must not count
    return nn.Sequential(OrderedDict([("conv", conv), ("relu", nn.ReLU()),
                                      ("dw", nn.Conv2d(5, 5, 3, groups=5))]))


# ---------------------------------------------------------------- statistics

def test_rms_dead_dominant_hand_computed() -> None:
    stats = filter_stats(_tiny(), ["conv"])
    assert len(stats) == 1
    s = stats[0]
    assert s.layer == "conv" and s.weight.shape == (5, 2, 3, 3) and s.weight.dtype == np.float32
    expected = np.array([0.05, 0.0, 0.5, 1e-5, np.sqrt((9 * 0.03 ** 2 + 9 * 0.04 ** 2) / 18)])
    np.testing.assert_allclose(s.rms, expected, rtol=1e-6)
    assert s.rms.dtype == np.float32
    # median 0.0353553 -> dead below 3.5e-5: the zero filter and the 1e-5 one
    assert s.dead.tolist() == [False, True, False, True, False]
    assert s.dominant.tolist() == [False, False, True, False, False]
    assert filter_stats(_tiny(), ["conv"], radius=0.04)[0].dominant.tolist() == [True, False, True, False, False]


def test_dead_is_relative_to_the_layer_median_dominant_is_absolute() -> None:
    model = _tiny()
    with torch.no_grad():
        model.conv.weight.mul_(1000)
    s = filter_stats(model, ["conv"])[0]
    assert s.dead.tolist() == [False, True, False, True, False]  # 0.01 < 1e-3 x median 35.4: still dead
    assert s.dominant.tolist() == [True, False, True, False, True]  # 50, 500, 35.4 exceed 0.1; 0.01 does not


def test_default_layers_are_every_conv_including_depthwise() -> None:
    model = _tiny()
    stats = filter_stats(model)
    assert [s.layer for s in stats] == conv_layers(model) == ["conv", "dw"]
    dw = stats[1]
    assert dw.weight.shape == (5, 1, 3, 3) and dw.groups == 5 and picture_kind(dw) == "grey"
    np.testing.assert_allclose(dw.rms, model.dw.weight.detach().flatten(1).pow(2).mean(1).sqrt().numpy(),
                               rtol=1e-6)


def test_layer_errors_are_one_line_and_name_the_layer() -> None:
    model = _tiny()
    with pytest.raises(ModelError, match="'relu' is a ReLU, not a Conv2d"):
        filter_stats(model, ["relu"])
    with pytest.raises(ModelError, match=r"unknown layer 'conx'.*Did you mean: conv"):
        filter_stats(model, ["conx"])
    with pytest.raises(ModelError, match="no Conv2d"):
        filter_stats(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(UserInputError, match="radius"):
        filter_stats(model, radius=0.0)


def test_model_left_exactly_as_it_was() -> None:
    model = _tiny().train()
    model.relu.eval()
    model.dw.weight.requires_grad_(False)
    grad = torch.ones_like(model.conv.weight)
    model.conv.weight.grad = grad
    before = state_fingerprint(model)
    hooks = hook_count(model)
    filter_stats(model)
    assert hook_count(model) == hooks
    assert [m.training for m in model.modules()] == [True, True, False, True]
    assert model.conv.weight.requires_grad and not model.dw.weight.requires_grad
    assert model.conv.weight.grad is grad
    after = state_fingerprint(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_stats_weights_are_a_copy() -> None:
    model = _tiny()
    s = filter_stats(model, ["conv"])[0]
    s.weight[:] = 0
    assert float(model.conv.weight.abs().sum()) > 0


def test_pictured_layers_first_conv_then_spread_to_the_last() -> None:
    names = [f"c{i}" for i in range(49)]
    picked = pictured_layers(names, 9)
    assert len(picked) == 9 and picked[0] == "c0" and picked[-1] == "c48"
    assert picked == sorted(picked, key=names.index)
    assert pictured_layers(names[:5], 9) == names[:5]
    assert pictured_layers(names, 2) == ["c0", "c48"]
    assert pictured_layers(names, 1) == ["c0"]


# ---------------------------------------------------------------- pictures

def test_tiles_are_normalised_per_filter_with_grey_zero() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    w[2] = 0.0
    w[3] *= 100.0  # a dominant filter must not wash out the others
    tiles = filter_tiles(w)
    assert tiles.shape == (4, 5, 5, 3) and tiles.dtype == np.float32
    np.testing.assert_allclose(filter_tiles(w * 10), tiles, atol=1e-6)  # scale-free per filter
    np.testing.assert_allclose(filter_tiles(-w), 1 - tiles, atol=1e-6)  # grey = 0, sign mirrored
    assert np.all(tiles[2] == 0.5)  # zero filter: flat grey
    for i in (0, 1, 3):  # the strongest weight of each filter reaches black or white
        extreme = np.abs(tiles[i] - 0.5).max()
        assert extreme == pytest.approx(0.5)
    np.testing.assert_allclose(filter_tiles(w[3:4] / 100.0)[0], tiles[3], atol=1e-6)
    # channel order: weight channel 0 is the tile's red
    red = np.zeros((1, 3, 2, 2), np.float32)
    red[0, 0] = 1.0
    assert np.all(filter_tiles(red)[0, :, :, 0] == 1.0) and np.all(filter_tiles(red)[0, :, :, 1:] == 0.5)


def test_grey_tiles_for_one_input_channel() -> None:
    w = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2) - 3
    tiles = filter_tiles(w)
    assert tiles.shape == (2, 2, 2, 3)
    assert np.all(tiles[..., 0] == tiles[..., 1]) and np.all(tiles[..., 1] == tiles[..., 2])
    np.testing.assert_allclose(tiles[0, :, :, 0], 0.5 + 0.5 * np.array([[-3, -2], [-1, 0]]) / 3)
    with pytest.raises(ValueError):
        filter_tiles(np.zeros((2, 4, 3, 3)))


def test_kernel_norms_hand_computed() -> None:
    w = np.zeros((2, 3, 2, 2), np.float32)
    w[0, 1] = [[3, 0], [0, 4]]
    w[1, 2] = -1
    np.testing.assert_allclose(kernel_norms(w), [[0, 5, 0], [0, 0, 2]])


def _stats(weight: np.ndarray, groups: int = 1, name: str = "x") -> FilterStats:
    from vizkit.capture.filters import filter_rms, flag_filters

    rms = filter_rms(weight)
    dead, dominant = flag_filters(rms)
    return FilterStats(name, weight.astype(np.float32), rms, dead, dominant, groups)


def test_every_picture_kind_renders_and_caps_what_it_draws() -> None:
    rng = np.random.default_rng(1)
    cases = {
        "rgb": _stats(rng.normal(size=(8, 3, 7, 7)) * 0.1, name="rgb"),
        "grey": _stats(rng.normal(size=(300, 1, 3, 3)), groups=300, name="grey"),
        "weights": _stats(rng.normal(size=(20, 40, 1, 1)), name="weights"),
        "norms": _stats(rng.normal(size=(300, 600, 3, 3)) * 0.01, name="norms"),
    }
    cases["grey"].dead[5] = True
    for kind, s in cases.items():
        assert picture_kind(s) == kind
        fig = layer_page(s)
        text = " ".join(t.get_text() for t in fig.texts)
        assert s.layer in text
        if kind == "grey":
            assert f"of 300 (at most {MAX_TILES})" in text
        if kind == "norms":
            assert "output filters 0-255 of 300" in text and "input channels 0-511 of 600" in text
    pages = filters_pages(list(cases.values()), pictured=["grey", "norms"])
    assert len(pages) == 3  # one summary page (4 rows) + the two pictured layers


def test_npz_keys_exactly() -> None:
    stats = filter_stats(_tiny())
    arrays = filters_arrays(stats)
    assert set(arrays) == {f"{layer}/{key}" for layer in ("conv", "dw") for key in ("rms", "dead", "dominant",
                                                                                   "weights")}
    assert arrays["conv/dead"].dtype == bool and arrays["conv/weights"].shape == (5, 2, 3, 3)


# ---------------------------------------------------------------- job and CLI

def test_cli_lenet5_with_weights_file(tmp_path: Path) -> None:
    from vizkit.load.zoo import lenet5

    torch.manual_seed(0)
    model = lenet5()
    with torch.no_grad():
        model.features.conv2.weight[3] = 0.0  # a dead filter
        model.features.conv2.weight[7] *= 50.0  # a dominant one
    weights = tmp_path / "lenet.pth"
    torch.save(model.state_dict(), weights)
    code, out, err = _run(["--model", "lenet5", "--weights", str(weights), "--radius", "0.2",
                           "--out", str(tmp_path / "out")])
    assert code == 0, err
    folder = tmp_path / "out" / "filters"
    assert out.strip() == f"wrote {folder}/"
    assert sorted(p.name for p in folder.iterdir()) == ["filters.manifest.json", "filters.npz", "filters.pdf"]
    assert _pdf_pages(folder / "filters.pdf") == 1 + 3  # summary + conv1, conv2, conv3
    arrays = np.load(folder / "filters.npz")
    layers = ["features.conv1", "features.conv2", "features.conv3"]
    assert set(arrays.files) == {f"{layer_}/{k}" for layer_ in layers for k in ("rms", "dead", "dominant", "weights")}
    sd = model.state_dict()
    for layer in layers:
        np.testing.assert_array_equal(arrays[f"{layer}/weights"], sd[f"{layer}.weight"].numpy())
        rms = sd[f"{layer}.weight"].double().flatten(1).pow(2).mean(1).sqrt().numpy()
        np.testing.assert_allclose(arrays[f"{layer}/rms"], rms, rtol=1e-6)
        np.testing.assert_array_equal(arrays[f"{layer}/dominant"], arrays[f"{layer}/rms"] > 0.2)
    assert arrays["features.conv1/weights"].shape == (6, 1, 5, 5)  # LeNet: one grey input channel
    assert np.flatnonzero(arrays["features.conv2/dead"]).tolist() == [3]
    assert arrays["features.conv2/dominant"][7]
    manifest = json.loads((folder / "filters.manifest.json").read_text())
    assert manifest["model"] == "lenet5" and manifest["image"] is None
    assert manifest["settings"]["radius"] == 0.2 and manifest["settings"]["pictured"] == layers
    assert {f["path"] for f in manifest["files"]} == {"filters.npz", "filters.pdf"}
    assert not list((tmp_path / "out").glob(".*"))


def test_cli_default_model_caps_picture_pages(tmp_path: Path) -> None:
    code, _, err = _run(["--max-pages", "2", "--out", str(tmp_path)])
    assert code == 0, err
    folder = tmp_path / "filters"
    arrays = np.load(folder / "filters.npz")
    assert len(arrays.files) == 49 * 4  # statistics for every conv of EfficientNet-Lite0
    assert arrays["conv_stem/weights"].shape == (32, 3, 3, 3)
    assert arrays["conv_stem/dead"].sum() >= 1  # the pretrained stem has dead filters (RMS ~1e-10)
    manifest = json.loads((folder / "filters.manifest.json").read_text())
    assert manifest["settings"]["pictured"] == ["conv_stem", "conv_head"]
    assert manifest["weights"]["pretrained"] is True
    assert _pdf_pages(folder / "filters.pdf") in (2 + 2, 2 + 3)  # 1-2 summary pages (49 rows) + 2 layer pages


def test_cli_bad_layer_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    code, _, err = _run(["--model", "lenet5", "--layer", "features.relu1", "--out", str(tmp_path)])
    assert code == 2
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if line.startswith("vizkit:")]
    assert "features.relu1" in err and "Conv2d" in err
    assert not (tmp_path / "filters").exists() and not list(tmp_path.glob(".*"))


def test_keeps_other_files_in_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"someone else's")
    assert run_filters(FiltersConfig(model="lenet5", out=tmp_path)).exit_code == 0
    assert (folder / "notes.txt").read_bytes() == b"someone else's" and (folder / "filters.pdf").exists()


def test_rerun_replaces_own_output(tmp_path: Path) -> None:
    run_filters(FiltersConfig(model="lenet5", out=tmp_path, layers=["features.conv1"]))
    report = run_filters(FiltersConfig(model="lenet5", out=tmp_path, layers=["features.conv3"]))
    assert report.exit_code == 0 and report.written == [tmp_path / "filters"]
    assert {k.split("/")[0] for k in np.load(tmp_path / "filters" / "filters.npz").files} == {"features.conv3"}
