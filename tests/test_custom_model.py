"""Your own model from a .py file or a module: every command runs it, the deconvnet equals the explicit oracle,
and every way it can go wrong is one line."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from vizkit_cli.main import main

from vizkit.errors import ModelError, UserInputError
from vizkit.load import load_image, load_model, preprocess
from vizkit.project.explicit import explicit_deconv
from vizkit.testing import explicit_seeds

MODEL_CODE = textwrap.dedent('''
    from collections import OrderedDict

    from torch import nn


    class TinyNet(nn.Sequential):
        """A small max-pool CNN on 3x32x32 inputs."""

        def __init__(self, width: int = 8, num_classes: int = 5) -> None:
            super().__init__(OrderedDict([
                ("conv1", nn.Conv2d(3, width, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)), ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten(1)), ("fc", nn.Linear(2 * width * 8 * 8, num_classes)),
            ]))


    def tiny(width: int = 4) -> nn.Module:
        return TinyNet(width=width)


    def not_a_model() -> int:
        return 3
''')
INPUT = ["--input-size", "3,32,32", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_net.py"
    path.write_text(MODEL_CODE)
    return path


@pytest.fixture()
def classes_file(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(["ant", "bee", "cat", "dog", "eel"]) + "\n\n")
    return path


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.slow
def test_custom_model_runs_through_every_command(model_file: Path, classes_file: Path, tmp_path: Path,
                                                 sample_paths: list[Path]) -> None:
    spec = f"{model_file}:TinyNet"
    common = ["--model", spec, "--model-kwargs", '{"width": 6}', *INPUT, "--classes", str(classes_file)]
    image = str(sample_paths[1])
    out = tmp_path / "out"
    for command in (["deconv", image, "--top-k", "2"], ["gradcam", image, "--target", "bee"],
                    ["activations", image], ["report", image, "--top-k", "2"], ["filters"]):
        code, text = _run([*command, *common, "--out", str(out)])
        assert code == 0, (command, text)
    code, text = _run(["layers", *common, "--json"])
    assert code == 0, text
    table = json.loads(text)
    assert table["input_shape"] == [1, 3, 32, 32]
    assert {r["name"]: r["output_shape"] for r in table["rows"]}["conv2"] == [1, 12, 16, 16]

    arrays = np.load(out / "chelsea" / "deconv.npz")
    assert arrays["input"].shape == (1, 3, 32, 32)
    manifest = json.loads((out / "chelsea" / "manifest.json").read_text())
    assert manifest["model"] == spec
    gradcam = np.load(out / "chelsea" / "gradcam.npz")
    assert gradcam["targets"].tolist() == [1]  # "bee" from --classes

    listing = tmp_path / "images.txt"  # mine reads a dataset: here the sample photos, listed in a file
    listing.write_text("".join(f"{p}\n" for p in sample_paths))
    code, text = _run(["mine", str(listing), *common, "-k", "2", "--units", "top:2", "--out", str(out)])
    assert code == 0, text
    mined = json.loads((out / "mine" / "mine.manifest.json").read_text())
    assert mined["model"] == spec and mined["preprocessing"]["crop"] == 32
    with np.load(out / "mine" / "mine.npz") as scan:  # width 6 from --model-kwargs: 6 and 12 channels
        assert {scan[f"{layer}/values"].shape[0] for layer in mined["settings"]["layers"]} <= {6, 12}


def test_custom_model_deconv_equals_explicit_oracle(model_file: Path, tmp_path: Path,
                                                    sample_paths: list[Path]) -> None:
    out = tmp_path / "out"
    code, text = _run(["deconv", str(sample_paths[0]), "--model", f"{model_file}:tiny", *INPUT, "--seed", "3",
                       "--layer", "pool2", "--top-k", "3", "--out", str(out)])
    assert code == 0, text
    arrays = np.load(out / "grace_hopper" / "deconv.npz")
    # The same model, built by the API with the same seed, projected by the layer-by-layer deconvnet.
    loaded = load_model(f"{model_file}:tiny", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, seed=3)
    x = preprocess(load_image(sample_paths[0]), loaded.preprocessing)
    assert np.array_equal(arrays["input"], x.numpy())
    with torch.no_grad():
        pooled = torch.nn.Sequential(*list(loaded.model)[:6])(x)
    units = [(int(c), int(y), int(xx))
             for c, (y, xx) in zip(arrays["pool2/channels"], arrays["pool2/positions"], strict=True)]
    ref = explicit_deconv(loaded.model, x, "pool2", explicit_seeds(pooled, units))
    got = torch.from_numpy(arrays["pool2/projections"])
    assert ref.abs().max() > 0
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_module_spec_and_kwargs(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(model_file.parent))
    sys.modules.pop("my_net", None)
    lm = load_model("my_net:TinyNet", model_kwargs={"width": 2, "num_classes": 3})
    assert lm.model.conv1.out_channels == 2 and lm.model.fc.out_features == 3
    assert lm.pretrained is None and lm.seed == 0 and not lm.model.training
    # The seed makes the build reproducible; the caller's random state is untouched.
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = load_model("my_net:TinyNet", model_kwargs={"width": 2, "num_classes": 3})
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b)
               for a, b in zip(lm.model.state_dict().values(), again.model.state_dict().values(), strict=True))
    other = load_model("my_net:TinyNet", model_kwargs={"width": 2, "num_classes": 3}, seed=1)
    assert not torch.equal(other.model.conv1.weight, lm.model.conv1.weight)


def test_weights_file_loads_and_mismatch_is_one_line(model_file: Path, tmp_path: Path) -> None:
    trained = load_model(f"{model_file}:TinyNet", seed=7).model
    path = tmp_path / "tiny.pth"
    torch.save(trained.state_dict(), path)
    lm = load_model(f"{model_file}:TinyNet", weights=str(path))
    assert all(torch.equal(a, b)
               for a, b in zip(lm.model.state_dict().values(), trained.state_dict().values(), strict=True))
    assert lm.weights_file == str(path.resolve()) and lm.pretrained is None and lm.seed is None
    with pytest.raises(ModelError, match="do not fit model") as err:
        load_model(f"{model_file}:TinyNet", weights=str(path), model_kwargs={"width": 3})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("spec", "message"), [
    ("{dir}/missing.py:TinyNet", "model file not found"),
    ("no_such_package_xyz.models:Net", "cannot import module 'no_such_package_xyz.models'"),
    ("{file}:Tinynet", "has no 'Tinynet'.* Did you mean: TinyNet"),
    ("{file}:not_a_model", "returned a int, not a torch.nn.Module"),
])
def test_errors_are_one_line(model_file: Path, spec: str, message: str) -> None:
    spec = spec.format(dir=model_file.parent, file=model_file)
    code, text = _run(["layers", "--model", spec])
    assert code == 2 and text.count("\n") == 1 and text.startswith("vizkit: error:"), text
    with pytest.raises(ModelError, match=message):
        load_model(spec)


def test_input_options_are_checked(model_file: Path, tmp_path: Path) -> None:
    spec = f"{model_file}:TinyNet"
    with pytest.raises(UserInputError, match="only square"):
        load_model(spec, input_size=(3, 32, 24))
    with pytest.raises(UserInputError, match="--mean needs 1"):
        load_model(spec, input_size=(1, 32, 32), mean=(0.5, 0.5, 0.5))
    wrong = tmp_path / "three.txt"
    wrong.write_text("a\nb\nc\n")
    with pytest.raises(UserInputError, match=r"3 names but .* 5 outputs"):
        load_model(spec, classes=wrong)
    with pytest.raises(UserInputError, match="--model-kwargs applies to your own model"):
        load_model("lenet5", model_kwargs={"num_classes": 3})
    code, text = _run(["layers", "--model", spec, "--model-kwargs", "[1, 2]"])
    assert code == 2 and "JSON object" in text
