"""vizkit invariance: transforms against hand-made references, the sweep against constructed and plain forwards,
the default model against Grad-CAM's scores, and the command's files."""
from __future__ import annotations

import copy
import csv
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
from vizkit.jobs.invariance import parse_range
from vizkit.project.invariance import Sweep, make_sweep, rotate, scale, sweep, translate
from vizkit.testing.model_state import hook_count, state_fingerprint


def _toy(circular: bool = False) -> nn.Sequential:
    """conv - relu - conv - relu - global average pool - linear; circular padding makes the pooled vector (and so
    the logits) exactly invariant to circular shifts of the input."""
    torch.manual_seed(0)
    mode = "circular" if circular else "zeros"
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, padding_mode=mode), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, padding=1, padding_mode=mode), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.uniform_(0.0, 0.3)
    return model.eval()


def _ramp(height: int, width: int, a: float = 0.7, b: float = -0.3, c: float = 0.2) -> torch.Tensor:
    """x[c, y, x] = a*y + b*x + c (+ channel offset): bilinear sampling of a plane is exact."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    plane = a * ys + b * xs + c
    return torch.stack([plane, plane + 1, plane - 2])[None]


# --- transforms against hand-made references --------------------------------------------------------------------------

@pytest.mark.parametrize("side", [8, 9])
def test_rotation_by_quarter_turns_equals_rot90(side: int) -> None:
    x = torch.randn(1, 3, side, side)
    for k in (1, 2, 3):
        torch.testing.assert_close(rotate(x, 90 * k), torch.rot90(x, k, (2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(x, -90), torch.rot90(x, -1, (2, 3)), atol=1e-5, rtol=0)
    assert torch.equal(rotate(x, 360)[0], x[0]) and torch.equal(rotate(x, [0])[0], x[0])


def test_rotation_of_a_non_square_image_by_half_a_turn_flips_both_axes() -> None:
    x = torch.randn(1, 3, 6, 10)
    torch.testing.assert_close(rotate(x, 180), torch.flip(x, (2, 3)), atol=1e-5, rtol=0)


def test_rotation_by_30_degrees_samples_the_rotated_plane() -> None:
    """Output pixel p (centred) must show the input at R(-30 deg) p, counter-clockwise as displayed (y down)."""
    side, angle = 21, 30.0
    x = _ramp(side, side).float()
    out = rotate(x, angle, fill=-99.0)[0, 0].double()
    t = math.radians(angle)
    centre = (side - 1) / 2
    for yo in range(6, 15):
        for xo in range(6, 15):
            u, v = xo - centre, yo - centre
            xs = math.cos(t) * u - math.sin(t) * v + centre  # input column sampled (image y points down)
            ys = math.sin(t) * u + math.cos(t) * v + centre
            assert out[yo, xo].item() == pytest.approx(0.7 * ys - 0.3 * xs + 0.2, abs=1e-4)
    # counter-clockwise as displayed: the top-right corner region moves to the top-left, as torch.rot90 does
    assert float(rotate(x, 90)[0, 0, 0, 0]) == pytest.approx(float(x[0, 0, 0, -1]), abs=1e-5)


def test_scale_samples_the_zoomed_plane_and_fills_when_shrinking() -> None:
    side = 16
    x = _ramp(side, side).float()
    out = scale(x, [2.0, 0.5], fill=-9.0)
    centre = (side - 1) / 2
    for yo in range(side):
        for xo in range(side):
            ys, xs = centre + (yo - centre) / 2, centre + (xo - centre) / 2
            assert float(out[0, 0, yo, xo]) == pytest.approx(0.7 * ys - 0.3 * xs + 0.2, abs=1e-4)
    assert torch.all(out[1, :, 0, :] == -9.0) and torch.all(out[1, :, :, -1] == -9.0)  # shrunk: border is fill
    assert torch.equal(scale(x, 1.0)[0], x[0])


def test_integer_shift_moves_pixels_exactly() -> None:
    x = torch.randn(1, 3, 10, 7)
    out = translate(x, [3, -4, 0, 12], fill=0.25)
    assert torch.equal(out[0, :, 3:], x[0, :, :7]) and torch.all(out[0, :, :3] == 0.25)
    assert torch.equal(out[1, :, :6], x[0, :, 4:]) and torch.all(out[1, :, 6:] == 0.25)
    assert torch.equal(out[2], x[0]) and torch.all(out[3] == 0.25)
    rolled = translate(x, [3, -13], circular=True)
    assert torch.equal(rolled[0], torch.roll(x[0], 3, 1)) and torch.equal(rolled[1], torch.roll(x[0], -13, 1))


def test_default_ranges_follow_the_paper_and_scale_with_the_input() -> None:
    assert make_sweep("translate", 224, 25).amounts == tuple(float(v) for v in range(-60, 61, 5))
    assert make_sweep("translate", 32, 3).amounts == (-9.0, 0.0, 9.0)  # 60 * 32 / 224 = 8.57 -> whole pixels
    assert make_sweep("scale", 224, 5).amounts == pytest.approx((1.0, 1.2, 1.4, 1.6, 1.8))
    assert make_sweep("rotate", 224, 5).amounts == (0.0, 90.0, 180.0, 270.0, 360.0)
    assert make_sweep("rotate", 224, 3, (-45, 45)).amounts == (-45.0, 0.0, 45.0)


def test_user_errors() -> None:
    assert parse_range("rotate=-45:45") == ("rotate", (-45.0, 45.0))
    for bad in ("rotate=45:-45", "rotate", "spin=0:1", "scale=a:b"):
        with pytest.raises(UserInputError):
            parse_range(bad)
    with pytest.raises(UserInputError, match="positive"):
        make_sweep("scale", 32, 3, (0.0, 2.0))
    with pytest.raises(UserInputError, match="steps"):
        make_sweep("rotate", 32, 1)
    bad = Sweep("crop", "px", (1.0,), lambda x, a: x[..., :4, :4])
    with pytest.raises(UserInputError, match="crop"):
        sweep(_toy(), torch.randn(1, 3, 8, 8), [bad], ["4"])


# --- the sweep -------------------------------------------------------------------------------------------------------

def test_identity_gives_distance_zero_and_the_plain_forward_probability() -> None:
    model = _toy()
    model.train()  # the sweep must run in eval mode and hand the model back in train mode
    before = state_fingerprint(model)
    x = torch.randn(1, 3, 12, 12)
    sweeps = [make_sweep("translate", 12, 5, (-2, 2)), make_sweep("scale", 12, 3), make_sweep("rotate", 12, 3)]
    result = sweep(model, x, sweeps, ["1", "4"])
    with torch.no_grad():
        model.eval()
        probs = torch.softmax(model(x).double(), dim=1)[0]
        model.train()
    for curves, at in zip(result.curves, (2, 0, 0), strict=True):
        for layer in ("1", "4"):
            assert curves.distance[layer][at] == 0.0 and curves.raw_distance[layer][at] == 0.0
        assert curves.probability[at] == pytest.approx(float(probs[result.target]), abs=1e-6)
    assert result.target == int(probs.argmax())
    assert result.curves[2].distance["1"][-1] < 1e-6  # rotation by 360 degrees is the identity too
    assert all(result.curves[0].distance["1"][i] > 0.05 for i in (0, 1, 3, 4))
    assert model.training and all(m.training for m in model.modules()) and hook_count(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_distance_is_the_relative_euclidean_distance_of_the_flattened_layer_output() -> None:
    model = _toy()
    x = torch.randn(1, 3, 12, 12)
    result = sweep(model, x, [make_sweep("rotate", 12, 4, (10, 70))], ["2"], batch=2)
    with torch.no_grad():
        ref = model[:3](x).double().flatten()
        moved = rotate(x, [10.0, 30.0, 50.0, 70.0])
        feats = model[:3](moved).double().flatten(1)
    expected = torch.linalg.vector_norm(feats - ref, dim=1) / torch.linalg.vector_norm(ref)
    np.testing.assert_allclose(result.curves[0].distance["2"], expected.numpy(), rtol=1e-5)
    assert result.norm["2"] == pytest.approx(float(torch.linalg.vector_norm(ref)), rel=1e-6)


def test_a_circularly_padded_conv_with_global_pooling_is_exactly_shift_invariant() -> None:
    model = _toy(circular=True)
    x = torch.randn(1, 3, 16, 16)
    vertical = make_sweep("translate", 16, 9, (-8, 8), padding="circular")
    horizontal = Sweep.per_amount("shift-x", "px", range(-7, 8, 2), lambda x, a: torch.roll(x, int(a), -1))
    result = sweep(model, x, [vertical, horizontal], ["2", "4"], target=3)
    for curves in result.curves:
        assert np.all(curves.distance["4"] < 1e-6)  # the pooled vector does not move
        np.testing.assert_allclose(curves.probability, result.base_probability, atol=1e-6)
        assert np.all(curves.distance["2"][curves.amounts != 0] > 0.1)  # the conv map itself does move
    mean_padded = sweep(model, x, [make_sweep("translate", 16, 9, (-8, 8))], ["4"]).curves[0]
    assert mean_padded.distance["4"].max() > 1e-3  # filling with the mean pixel breaks the invariance


def test_results_do_not_depend_on_the_batch_size() -> None:
    model = _toy()
    x = torch.randn(1, 3, 12, 12)
    sweeps = [make_sweep("scale", 12, 7), make_sweep("translate", 12, 5)]
    one, many = sweep(model, x, sweeps, ["1", "4"], batch=2), sweep(model, x, sweeps, ["1", "4"], batch=64)
    for a, b in zip(one.curves, many.curves, strict=True):
        np.testing.assert_allclose(a.probability, b.probability, atol=1e-6)
        np.testing.assert_allclose(a.distance["1"], b.distance["1"], atol=1e-6)


def test_default_model_probability_at_amount_zero_equals_gradcam_scores(default_model, sample_paths) -> None:
    from vizkit.jobs.gradcam import gradcam_image
    from vizkit.jobs.invariance import invariance_image

    loaded = copy.copy(default_model)
    loaded.model = copy.deepcopy(default_model.model)
    out = invariance_image(loaded, sample_paths[1], steps=3)
    cam = gradcam_image(loaded, sample_paths[1])
    assert out.sweep.target == int(cam.targets[0]) == 285  # Egyptian cat
    assert out.sweep.layers == ["bn1", "bn2"]  # the first and the last resolution stage
    identity = {"translate": 1, "scale": 0, "rotate": 0}
    for curves in out.sweep.curves:
        assert curves.probability[identity[curves.name]] == pytest.approx(float(cam.scores[0]), abs=1e-5)
        assert curves.distance["bn2"][identity[curves.name]] == 0.0
        assert int(curves.top_classes[identity[curves.name], 0]) == 285


# --- the command -----------------------------------------------------------------------------------------------------

def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def test_cli_writes_npz_csv_pdf_manifest_and_goes_on_past_bad_files(tmp_path: Path, sample_paths) -> None:
    from vizkit_cli.invariance import invariance

    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(invariance, [str(bad), str(sample_paths[0]), "--model", "lenet5", "--steps", "5",
                                             "--range", "rotate=-90:90", "--target", "3", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 2 and "broken.png" in result.stderr and "1 written, 1 failed" in result.stderr
    folder = out / "grace_hopper"
    assert sorted(p.name for p in folder.iterdir()) == ["invariance.csv", "invariance.manifest.json",
                                                        "invariance.npz", "invariance.pdf"]
    arrays = np.load(folder / "invariance.npz")
    layers = [str(v) for v in arrays["layers"]]
    assert int(arrays["target"]) == 3 and len(layers) == 2
    assert arrays["rotate/amounts"].tolist() == [-90.0, -45.0, 0.0, 45.0, 90.0]
    assert arrays["translate/amounts"].tolist() == [-9.0, -4.0, 0.0, 4.0, 9.0]
    for t in ("translate", "scale", "rotate"):
        assert arrays[f"{t}/probability"].shape == (5,) and arrays[f"{t}/top_classes"].shape == (5, 5)
        for layer in layers:
            assert arrays[f"{t}/distance/{layer}"].shape == (5,)
    assert arrays["rotate/distance/" + layers[0]][2] == 0.0
    rows = list(csv.DictReader((folder / "invariance.csv").open()))
    assert len(rows) == 15 and rows[0]["transform"] == "translate" and rows[0]["target"] == "3"
    assert float(rows[12]["amount"]) == 0.0 and float(rows[12][f"distance[{layers[1]}]"]) == 0.0
    assert _pdf_pages(folder / "invariance.pdf") == 2  # provenance, then the three transform rows
    manifest = json.loads((folder / "invariance.manifest.json").read_text())
    assert manifest["settings"]["ranges"]["rotate"] == [-90.0, 90.0]
    assert {f["path"] for f in manifest["files"]} == {"invariance.csv", "invariance.npz", "invariance.pdf"}
    assert not list(out.glob(".*"))


def test_cli_runs_your_own_model_with_its_input_options(tmp_path: Path, sample_paths) -> None:
    from test_custom_model import INPUT, MODEL_CODE
    from vizkit_cli.invariance import invariance

    model_file, classes = tmp_path / "my_net.py", tmp_path / "classes.txt"
    model_file.write_text(MODEL_CODE)
    classes.write_text("ant\nbee\ncat\ndog\neel\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(invariance, [str(sample_paths[1]), "--model", f"{model_file}:TinyNet",
                                             "--model-kwargs", '{"width": 6}', *INPUT, "--classes", str(classes),
                                             "--steps", "3", "--target", "bee", "--layer", "conv2", "--out",
                                             str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    arrays = np.load(out / "chelsea" / "invariance.npz")
    assert arrays["input"].shape == (1, 3, 32, 32) and int(arrays["target"]) == 1  # "bee" from --classes
    assert arrays["translate/amounts"].tolist() == [-9.0, 0.0, 9.0]  # the paper's 60 px at 224, scaled to 32
    assert arrays["scale/softmax"].shape == (3, 5) and float(arrays["translate/distance/conv2"][1]) == 0.0
    manifest = json.loads((out / "chelsea" / "invariance.manifest.json").read_text())
    assert manifest["model"] == f"{model_file}:TinyNet" and manifest["preprocessing"]["crop"] == 32


def test_cli_usage_errors_exit_2_before_any_output(tmp_path: Path, sample_paths) -> None:
    from vizkit_cli.invariance import invariance

    for args, message in ((["--range", "rotate=5:1"], "LO < HI"), (["--layer", "nope"], "unknown layer"),
                          (["--target", "99"], "99")):
        result = CliRunner().invoke(invariance, [str(sample_paths[0]), "--model", "lenet5", "--out",
                                                 str(tmp_path), *args], catch_exceptions=False)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sweep_on_cuda_equals_the_cpu() -> None:
    model = _toy()
    x = torch.randn(1, 3, 16, 16)
    sweeps = [make_sweep(name, 16, 9) for name in ("translate", "scale", "rotate")]
    cpu = sweep(model, x, sweeps, ["1", "4"])
    gpu = sweep(copy.deepcopy(model).cuda(), x.cuda(), sweeps, ["1", "4"])
    for a, b in zip(cpu.curves, gpu.curves, strict=True):
        np.testing.assert_allclose(a.probability, b.probability, atol=1e-5)
        np.testing.assert_allclose(a.distance["4"], b.distance["4"], rtol=1e-4, atol=1e-6)
