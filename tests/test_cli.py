"""The `vizkit` command end to end: files, page counts, array contents, exit codes and one-line errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from vizkit_cli.main import main


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_default_model_one_image_writes_pdf_npz_manifest(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _out, err = _run(["deconv", str(sample_paths[0]), "--layer", "blocks.1.1", "--layer", "blocks.2.1",
                           "--top-k", "3", "--out", str(tmp_path)])
    assert code == 0, err
    folder = tmp_path / "grace_hopper"
    assert sorted(p.name for p in folder.iterdir()) == ["deconv.npz", "deconv.pdf", "manifest.json"]
    assert _pdf_pages(folder / "deconv.pdf") == 3
    arrays = np.load(folder / "deconv.npz")
    layers = ["blocks.1.1", "blocks.2.1"]
    assert set(arrays.files) == {"input"} | {f"{layer_}/{k}" for layer_ in layers
                                             for k in ("channels", "positions", "activations", "projections")}
    assert arrays["input"].shape == (1, 3, 224, 224) and arrays["input"].dtype == np.float32
    for layer in layers:
        acts = arrays[f"{layer}/activations"]
        assert acts.shape == (3,) and np.all(np.diff(acts) <= 0)
        assert arrays[f"{layer}/projections"].shape == (3, 3, 224, 224)
        assert np.abs(arrays[f"{layer}/projections"]).max() > 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == "efficientnet_lite0" and manifest["weights"]["pretrained"] is True
    assert manifest["settings"]["layers"] == layers
    assert {f["path"] for f in manifest["files"]} == {"deconv.npz", "deconv.pdf"}
    assert not list(tmp_path.glob(".*"))  # no temp folders left


def test_batch_goes_on_past_bad_files_and_exits_2(tmp_path: Path, sample_paths: list[Path]) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out_dir = tmp_path / "out"
    code, _out, err = _run(["deconv", str(bad), str(sample_paths[1]), str(empty), "--model", "lenet5",
                           "--top-k", "2", "--out", str(out_dir)])
    assert code == 2
    assert (out_dir / "chelsea" / "manifest.json").exists()
    assert not (out_dir / "notes").exists() and not (out_dir / "empty").exists()
    errors = [line for line in err.splitlines() if line.startswith("vizkit: error:")]
    assert any("notes.jpg" in line for line in errors) and any("empty.png" in line for line in errors)
    assert "1 written, 2 failed" in err


def test_lenet5_grayscale_projections_have_one_channel(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _, err = _run(["deconv", str(sample_paths[2]), "--model", "lenet5", "--top-k", "2", "--mode", "map",
                         "--out", str(tmp_path)])
    assert code == 0, err
    arrays = np.load(tmp_path / "coffee" / "deconv.npz")
    proj = [k for k in arrays.files if k.endswith("/projections")]
    assert proj and all(arrays[k].shape[1:] == (1, 32, 32) for k in proj)
    manifest = json.loads((tmp_path / "coffee" / "manifest.json").read_text())
    assert manifest["weights"]["pretrained"] is False and manifest["settings"]["mode"] == "map"


def test_torchvision_model_with_state_dict_file(tmp_path: Path, sample_paths: list[Path]) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    code, _, err = _run(["deconv", str(sample_paths[0]), "--model", "resnet18", "--weights", str(weights),
                         "--layer", "layer1", "--top-k", "2", "--out", str(tmp_path / "o")])
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "grace_hopper" / "manifest.json").read_text())
    assert manifest["weights"]["source"].endswith("r18.pth") and len(manifest["weights"]["sha256"]) == 64


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "resnet5"], "resnet50"),
    (["--model", "lenet5", "--layer", "features.9"], "features"),
    (["--model", "resnet18", "--weights", "/nonexistent/w.pth"], "/nonexistent/w.pth"),
])
def test_model_and_layer_errors_are_one_line_exit_2(tmp_path: Path, sample_paths: list[Path], args: list[str],
                                                    needle: str) -> None:
    code, _out, err = _run(["deconv", str(sample_paths[0]), *args, "--out", str(tmp_path)])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vizkit: error:") and needle in lines[0]
    assert not list(tmp_path.iterdir())


def test_layers_json_and_text(tmp_path: Path) -> None:
    code, out, err = _run(["layers", "--model", "lenet5", "--json"])
    assert code == 0, err
    table = json.loads(out)
    names = [row["name"] for row in table["rows"]]
    assert "features.conv1" in names and table["total_params"] == 61_706  # LeNet-5 with ReLU, 10 classes
    code, out, _ = _run(["layers", "--model", "lenet5"])
    assert code == 0 and "features.conv1" in out


def test_help_has_examples_and_models_lists_zoo() -> None:
    code, out, _ = _run(["deconv", "--help"])
    assert code == 0 and "Examples:" in out and "--top-k" in out
    code, out, _ = _run(["models"])
    assert code == 0 and {"efficientnet_lite0", "resnet50", "lenet5", "zfnet", "mobilenet_v1"} <= set(out.split())


def test_no_top_level_cli_module_is_installed(tmp_path: Path) -> None:
    probe = "import importlib.util as u; print(u.find_spec('cli') is None, u.find_spec('vizkit_cli') is not None)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("vizkit")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "0.1.0" in out.stdout


def test_commands_share_the_per_image_folder_without_overwriting(tmp_path: Path, sample_paths: list[Path]) -> None:
    image = str(sample_paths[2])
    for args in (["deconv", "--top-k", "1"], ["gradcam"], ["activations", "--top", "2"]):
        code, _, err = _run([args[0], image, "--model", "lenet5", *args[1:], "--out", str(tmp_path)])
        assert code == 0, err
    folder = tmp_path / "coffee"
    names = {p.name for p in folder.iterdir()}
    assert {"deconv.pdf", "deconv.npz", "manifest.json", "gradcam.pdf", "gradcam.npz", "gradcam.manifest.json",
            "activations.pdf", "activations.manifest.json"} <= names
    deconv_manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["path"] for f in deconv_manifest["files"]} == {"deconv.npz", "deconv.pdf"}
