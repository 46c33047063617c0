"""`vizkit activations`: ranking against a direct computation, one stopped forward, model state, npz, pages, CLI."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib import colormaps
from torch import nn
from vizkit_cli.activations import activations as activations_command

from vizkit.capture.activations import ActivationGrid, activation_grids, grid_from_output, rank_channels
from vizkit.errors import ModelError, UserInputError
from vizkit.load import load_image, preprocess
from vizkit.load.zoo import lenet5
from vizkit.render.activations import activation_pages, activations_arrays, coloured_maps
from vizkit.testing.model_state import hook_count, state_fingerprint


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(activations_command, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    model = lenet5().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.1, 0.1)
    return model


def _hooked_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from a plain forward hook on a full forward: the independent reference."""
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: seen.setdefault("out", o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen["out"]


# ---------------------------------------------------------------- ranking

@pytest.mark.parametrize("layer", ["features.conv1", "features.relu2", "features.pool2"])
def test_ranking_equals_topk_of_per_channel_max_lenet(layer: str) -> None:
    model = _lenet()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = _hooked_output(model, layer, x)[0]
    k = min(5, out.shape[0])
    top = torch.topk(out.flatten(1).amax(dim=1), k)
    (grid,) = activation_grids(model, x, [layer], top=k)
    assert grid.channels.tolist() == top.indices.tolist()
    np.testing.assert_array_equal(grid.maxima, top.values.numpy())
    np.testing.assert_array_equal(grid.maps, out[top.indices].numpy())
    assert grid.total_channels == out.shape[0] and grid.maps.dtype == np.float32


def test_ranking_equals_topk_on_the_default_model(default_model, sample_paths) -> None:
    model = default_model.model
    x = preprocess(load_image(sample_paths[1]), default_model.preprocessing)
    layers = ["blocks.2.1", "blocks.4"]  # linear block outputs: no saturation ties
    grids = activation_grids(model, x, layers, top=8)
    for layer, grid in zip(layers, grids, strict=True):
        out = _hooked_output(model, layer, x)[0]
        top = torch.topk(out.flatten(1).amax(dim=1), 8)
        assert grid.layer == layer and grid.channels.tolist() == top.indices.tolist()
        np.testing.assert_allclose(grid.maxima, top.values.numpy(), rtol=1e-6)


def test_ties_broken_by_mean_then_channel() -> None:
    maps = torch.zeros(5, 2, 2)
    maps[0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # max 1, mean 0.25
    maps[1] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # max 1, mean 0.5
    maps[2] = torch.tensor([[2.0, -5.0], [0.0, 0.0]])  # max 2 wins despite a low mean
    maps[3] = maps[0]  # same max and mean as channel 0: channel index decides
    maps[4] = -1.0
    assert rank_channels(maps).tolist() == [2, 1, 0, 3, 4]
    grid = grid_from_output("x", maps[None], top=3)
    assert grid.channels.tolist() == [2, 1, 0]
    np.testing.assert_array_equal(grid.maxima, [2, 1, 1])
    assert grid.value_range == (-5.0, 2.0)


def test_bad_outputs_and_inputs_are_user_errors() -> None:
    with pytest.raises(ModelError, match=r"outputs shape \(1, 10\)"):
        grid_from_output("fc", torch.zeros(1, 10))
    with pytest.raises(ModelError, match="non-finite"):
        grid_from_output("x", torch.full((1, 2, 3, 3), float("nan")))
    model = _lenet()
    with pytest.raises(UserInputError, match="one image"):
        activation_grids(model, torch.zeros(2, 1, 32, 32), ["features.conv1"])
    with pytest.raises(UserInputError, match="--top"):
        activation_grids(model, torch.zeros(1, 1, 32, 32), ["features.conv1"], top=0)
    with pytest.raises(ModelError, match=r"unknown layer 'features.conv9'"):
        activation_grids(model, torch.zeros(1, 1, 32, 32), ["features.conv9"])


# ---------------------------------------------------------------- forward and model state

def test_one_forward_stopped_after_the_deepest_layer() -> None:
    model = _lenet()
    calls = {"conv1": 0, "conv3": 0, "fc5": 0}
    modules = dict(model.named_modules())

    def counter(key: str):
        return lambda m, i, o: calls.__setitem__(key, calls[key] + 1)

    handles = [modules[n].register_forward_hook(counter(n.split(".")[-1]))
               for n in ("features.conv1", "features.conv3", "classifier.fc5")]
    try:
        activation_grids(model, torch.randn(1, 1, 32, 32), ["features.relu2", "features.conv1"], top=3)
    finally:
        for h in handles:
            h.remove()
    assert calls == {"conv1": 1, "conv3": 0, "fc5": 0}


def _snapshot(model: nn.Module) -> dict:
    return {"hooks": hook_count(model), "training": [m.training for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "grads": [p.grad for p in model.parameters()]}


def test_model_left_exactly_as_it_was_also_on_error() -> None:
    model = _lenet().train()
    model.features.eval()
    model.classifier.fc4.weight.requires_grad_(False)
    model.features.conv1.weight.grad = torch.ones_like(model.features.conv1.weight)
    before, state = _snapshot(model), state_fingerprint(model)
    activation_grids(model, torch.randn(1, 1, 32, 32), ["features.conv2", "features.relu3"], top=4)
    after = _snapshot(model)
    assert after["hooks"] == before["hooks"] == 0 and after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(a is b for a, b in zip(after["grads"], before["grads"], strict=True))
    assert all(torch.equal(state[k], v) for k, v in state_fingerprint(model).items())

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model.features.pool2 = Boom()  # fails after conv1 recorded, before relu2 is reached
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        activation_grids(model, torch.randn(1, 1, 32, 32), ["features.conv1", "features.relu3"])
    assert _snapshot(model)["hooks"] == 0 and _snapshot(model)["training"] == before["training"]


def test_default_model_not_modified(default_model, sample_paths) -> None:
    model = copy.deepcopy(default_model.model)
    before, state = _snapshot(model), state_fingerprint(model)
    x = preprocess(load_image(sample_paths[0]), default_model.preprocessing)
    activation_grids(model, x, ["bn1", "blocks.2.1"], top=2)
    assert _snapshot(model)["hooks"] == before["hooks"] and _snapshot(model)["training"] == before["training"]
    assert all(torch.equal(state[k], v) for k, v in state_fingerprint(model).items())


# ---------------------------------------------------------------- rendering

def _grid(maps: np.ndarray) -> ActivationGrid:
    maps = np.asarray(maps, np.float32)
    flat = maps.reshape(len(maps), -1)
    return ActivationGrid("layer", np.arange(len(maps)), maps, flat.max(1), flat.mean(1), len(maps),
                          (float(maps.min()), float(maps.max())))


def test_colour_scales_shared_and_per_map() -> None:
    maps = np.zeros((2, 2, 2), np.float32)
    maps[0, 0, 0] = 4.0
    maps[1, 0, 0] = 2.0
    maps[1, 1, 1] = 1.0
    cmap = colormaps["viridis"]
    shared = coloured_maps(_grid(maps), "shared")  # 0 .. 4 for the page
    np.testing.assert_allclose(shared[0, 0, 0], cmap(1.0)[:3], atol=1e-6)
    np.testing.assert_allclose(shared[1, 0, 0], cmap(0.5)[:3], atol=1e-6)
    np.testing.assert_allclose(shared[1, 0, 1], cmap(0.0)[:3], atol=1e-6)
    per_map = coloured_maps(_grid(maps), "map")  # each map on its own min .. max
    np.testing.assert_allclose(per_map[1, 0, 0], cmap(1.0)[:3], atol=1e-6)
    np.testing.assert_allclose(per_map[1, 1, 1], cmap(0.5)[:3], atol=1e-6)
    flat = coloured_maps(_grid(np.ones((1, 3, 3))), "map")  # constant map: no division by zero
    assert np.isfinite(flat).all()
    with pytest.raises(UserInputError):
        coloured_maps(_grid(maps), "log")


def test_pages_one_per_layer_and_npz_keys() -> None:
    rng = np.random.default_rng(0)
    grids = [_grid(rng.random((n, s, s))) for n, s in ((64, 7), (3, 56), (1, 1))]
    for i, g in enumerate(grids):
        g.layer = f"l{i}"
    image = np.zeros((32, 32, 3), np.uint8)
    assert len(activation_pages(grids, image)) == 3
    assert len(activation_pages(grids, image, scale="map")) == 3
    arrays = activations_arrays(np.zeros((1, 3, 32, 32)), grids)
    assert set(arrays) == {"input"} | {f"l{i}/{k}" for i in range(3) for k in ("channels", "maps", "max")}
    assert arrays["l0/maps"].shape == (64, 7, 7) and arrays["l0/channels"].dtype == np.int64


# ---------------------------------------------------------------- CLI

def test_cli_lenet5_bad_image_exits_2_and_others_written(tmp_path: Path, sample_paths: list[Path]) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out_dir = tmp_path / "out"
    code, _, err = _run([str(bad), str(sample_paths[1]), "--model", "lenet5", "--top", "4",
                           "--out", str(out_dir)])
    assert code == 2
    assert "notes.jpg" in err and "1 written, 1 failed" in err
    assert not (out_dir / "notes").exists() and not list(out_dir.glob(".*"))
    folder = out_dir / "chelsea"
    assert sorted(p.name for p in folder.iterdir()) == [
        "activations.manifest.json", "activations.npz", "activations.pdf"]
    arrays = np.load(folder / "activations.npz")
    manifest = json.loads((folder / "activations.manifest.json").read_text())
    layers = manifest["settings"]["layers"]
    assert layers and manifest["settings"]["top"] == 4 and manifest["weights"]["pretrained"] is False
    assert set(arrays.files) == {"input"} | {f"{layer_}/{k}" for layer_ in layers for k in ("channels", "maps", "max")}
    assert arrays["input"].shape == (1, 1, 32, 32) and arrays["input"].dtype == np.float32
    for layer in layers:
        maps, maxima = arrays[f"{layer}/maps"], arrays[f"{layer}/max"]
        assert maps.dtype == np.float32 and maps.shape[0] == len(maxima) <= 4
        np.testing.assert_array_equal(maps.reshape(len(maps), -1).max(1), maxima)
        assert np.all(np.diff(maxima) <= 0)
    assert _pdf_pages(folder / "activations.pdf") == 1 + len(layers)


def test_cli_default_model_one_image(tmp_path: Path, sample_paths: list[Path], default_model) -> None:
    code, out, err = _run([str(sample_paths[0]), "--layer", "blocks.1.1", "--layer", "bn2", "--top", "6",
                           "--scale", "map", "--out", str(tmp_path)])
    assert code == 0, err
    folder = tmp_path / "grace_hopper"
    assert out.strip() == f"wrote {folder}/"
    assert _pdf_pages(folder / "activations.pdf") == 3
    arrays = np.load(folder / "activations.npz")
    assert arrays["input"].shape == (1, 3, 224, 224)
    assert arrays["blocks.1.1/maps"].shape == (6, 56, 56) and arrays["bn2/maps"].shape == (6, 7, 7)
    x = torch.from_numpy(arrays["input"])
    out_ref = _hooked_output(default_model.model, "blocks.1.1", x)[0]
    ref = torch.topk(out_ref.flatten(1).amax(1), 6)
    assert arrays["blocks.1.1/channels"].tolist() == ref.indices.tolist()
    manifest = json.loads((folder / "activations.manifest.json").read_text())
    assert manifest["settings"]["scale"] == "map" and manifest["model"] == "efficientnet_lite0"


def test_cli_unknown_layer_is_one_line_exit_2(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _, err = _run([str(sample_paths[0]), "--model", "lenet5", "--layer", "features.conv", "--out",
                         str(tmp_path)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "features.conv" in err
    assert not list(tmp_path.iterdir())


def test_writes_beside_another_commands_files(tmp_path: Path, sample_paths: list[Path]) -> None:
    other = tmp_path / "coffee"
    other.mkdir()
    (other / "deconv.pdf").write_bytes(b"deconv result")
    code, _, err = _run([str(sample_paths[2]), "--model", "lenet5", "--top", "2", "--out", str(tmp_path)])
    assert code == 0, err
    assert (other / "deconv.pdf").read_bytes() == b"deconv result" and (other / "activations.pdf").exists()
