"""``vizkit dream`` end to end: the CLI on every zoo model, the default and a timm model, a torchvision model and a
model of your own; npz keys, shapes and ranges; the data reference and top:N against brute force; ranks sharing
objectives; option errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_custom_model import INPUT, MODEL_CODE
from vizkit_cli.main import main

from vizkit.jobs.context import RunContext
from vizkit.jobs.dream import _merge, _share, dream_tensor
from vizkit.load import load_model
from vizkit.load.registry import list_zoo_models
from vizkit.project.dream import DreamSettings, channel, class_logit
from vizkit.scan.distributed import Ranks
from vizkit.testing.model_state import hook_count, state_fingerprint

QUICK = ["--steps", "3", "--seed", "1"]
LENET = ["--model", "lenet5", "--weights", "none", *QUICK]


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["dream", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


@pytest.fixture()
def photos(tmp_path: Path, sample_paths: list[Path]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sample_paths:
        shutil.copy(p, folder / p.name)
    return folder


def test_channel_and_class_objectives_with_diversity(tmp_path: Path) -> None:
    code, out, err = _run([*LENET, "--layer", "features.relu2", "--units", "0,3", "--class", "1", "--class", "7",
                           "--diversity", "2", "--out", str(tmp_path)])
    assert code == 0, err
    folder = tmp_path / "dream"
    assert out.strip() == f"wrote {folder}/"
    assert sorted(p.name for p in folder.iterdir()) == ["dream.manifest.json", "dream.npz", "dream.pdf", "html"]
    d = np.load(folder / "dream.npz")
    assert set(d.files) == {"objectives", "images", "scores", "reference", "alpha"}
    names = ["features.relu2:0", "features.relu2:3", "class:1", "class:7"]
    assert list(d["objectives"]) == [n for n in names for _ in range(2)]
    assert d["images"].shape == (8, 3, 32, 32) and d["images"].dtype == np.float32
    assert d["images"].min() >= 0 and d["images"].max() <= 1
    assert d["scores"].shape == (8,) and np.isfinite(d["scores"]).all() and np.isnan(d["reference"]).all()
    assert d["alpha"].shape == (8, 32, 32) and (d["alpha"] >= 0).all()
    assert not np.allclose(d["images"][0], d["images"][1])  # two copies of one objective differ
    manifest = json.loads((folder / "dream.manifest.json").read_text())
    settings = manifest["settings"]
    assert settings["method"] == "maco" and settings["seed"] == 1 and settings["diversity"] == 2
    assert {"crops", "pad", "jitter", "scale", "angle", "crop_box", "noise"} <= set(settings["transforms"])
    assert settings["units"] == {"features.relu2": [0, 3]} and settings["spectrum"] == "shipped"
    assert _pdf_pages(folder / "dream.pdf") >= 1
    page = (folder / "html" / "index.html").read_text()
    assert page.count("<img ") == 8 and len(list((folder / "html" / "img").iterdir())) == 8
    assert "dream: 4/4 objectives" in err  # progress on stderr


def test_neuron_objective_from_an_image_with_data_reference(tmp_path: Path, photos: Path,
                                                            sample_paths: list[Path]) -> None:
    (photos / "broken.jpg").write_bytes(b"not an image")
    code, _, err = _run([*LENET, "--method", "fourier", "--layer", "features.relu2", "--units", "top:2",
                         "--objective", "neuron", "--from", str(sample_paths[1]), "--data", str(photos),
                         "--out", str(tmp_path)])
    assert code == 2 and "broken.jpg" in err  # the unreadable file is named, skipped, and the run finishes
    d = np.load(tmp_path / "dream" / "dream.npz")
    # brute force: the centre activation of each unit over the readable photos, and mine's ranking by mean
    lm = load_model("lenet5", "none", seed=1)
    ctx = RunContext.from_loaded(lm)
    x = ctx.inputs(sample_paths)
    acts = {}
    handle = dict(lm.model.named_modules())["features.relu2"].register_forward_hook(
        lambda m, i, o: acts.setdefault("a", o.detach()))
    try:
        with torch.no_grad():
            lm.model(x)
    finally:
        handle.remove()
    a = acts["a"]
    top = [int(c) for c in torch.argsort(-a.mean(dim=(0, 2, 3)), stable=True)[:2]]
    assert list(d["objectives"]) == [f"features.relu2:{u}@centre" for u in top]
    centre = a[:, :, a.shape[2] // 2, a.shape[3] // 2].max(0).values
    np.testing.assert_allclose(d["reference"], centre[top].numpy(), rtol=1e-5, atol=1e-6)
    assert "alpha" not in d.files  # only MACO accumulates one
    start = np.asarray(ctx.display(ctx.input(sample_paths[1])), dtype=np.float32).mean(-1) / 255
    for img in d["images"]:  # accentuation stays a plausible edit of its start image
        assert np.corrcoef(img.mean(0).ravel(), start.ravel())[0, 1] > 0.8


@pytest.mark.slow
def test_torchvision_model(tmp_path: Path) -> None:
    code, _, err = _run(["--model", "resnet18", "--weights", "none", "--input-size", "3,64,64", *QUICK,
                         "--class", "3", "--layer", "layer2", "--units", "top:5", "--out", str(tmp_path)])
    assert code == 2 and "give --data" in err  # top:N ranks by data, as in mine
    code, _, err = _run(["--model", "resnet18", "--weights", "none", "--input-size", "3,64,64", *QUICK,
                         "--class", "3", "--layer", "layer2", "--units", "5", "--out", str(tmp_path)])
    assert code == 0, err
    d = np.load(tmp_path / "dream" / "dream.npz")
    assert list(d["objectives"]) == ["layer2:5", "class:3"] and d["images"].shape == (2, 3, 64, 64)


@pytest.mark.parametrize("name", [*list_zoo_models(), "efficientnet_lite0", "timm:resnet18"])
def test_every_zoo_model_the_default_and_a_timm_model(tmp_path: Path, name: str) -> None:
    code, _, err = _run(["--model", name, "--weights", "none", "--steps", "1", "--size", "32", "--seed", "1",
                         "--class", "1", "--out", str(tmp_path)])
    assert code == 0, err
    d = np.load(tmp_path / "dream" / "dream.npz")
    assert list(d["objectives"]) == ["class:1"] and d["images"].shape == (1, 3, 32, 32)
    assert np.isfinite(d["scores"]).all() and d["images"].min() >= 0 and d["images"].max() <= 1


def test_your_own_model_with_class_names(tmp_path: Path) -> None:
    (tmp_path / "my_net.py").write_text(MODEL_CODE)
    (tmp_path / "classes.txt").write_text("ant\nbee\ncat\ndog\neel\n")
    code, _, err = _run(["--model", f"{tmp_path / 'my_net.py'}:TinyNet", *INPUT, "--classes",
                         str(tmp_path / "classes.txt"), *QUICK, "--class", "bee", "--class", "4", "--method", "pixel",
                         "--out", str(tmp_path)])
    assert code == 0, err
    d = np.load(tmp_path / "dream" / "dream.npz")
    assert list(d["objectives"]) == ["class:1", "class:4"]
    assert "class:1 bee" in (tmp_path / "dream" / "html" / "index.html").read_text()


def test_default_objectives_are_the_deepest_layers_first_units(tmp_path: Path) -> None:
    code, _, err = _run([*LENET, "--steps", "1", "--size", "24", "--out", str(tmp_path)])
    assert code == 0, err
    d = np.load(tmp_path / "dream" / "dream.npz")
    assert len(d["objectives"]) == 8 and d["objectives"][0].endswith(":0") and d["images"].shape[-1] == 24


@pytest.mark.parametrize(("args", "words"), [
    (["--units", "top:3", "--layer", "features.relu2"], "--data"),
    (["--units", "3-5", "--layer", "features.relu2"], "comma list"),
    (["--units", "99,", "--layer", "features.relu2"], "channels 0..15"),
    (["--class", "auto"], "class names or indices"),
    (["--method", "fourier", "--spectrum-from", "."], "--method maco"),
])
def test_option_errors_are_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    code, _, err = _run([*LENET, *args, "--out", str(tmp_path)])
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_out_is_checked_before_the_model_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["--model", "no_such_model", "--class", "1", "--out", str(blocker)])
    assert code == 2 and "--out" in err and "no_such_model" not in err


def test_ranks_sharing_objectives_give_the_one_process_result() -> None:
    """Each rank dreams a contiguous chunk with its global indices; the merge equals one process."""
    lm = load_model("lenet5", "none")
    ctx = RunContext.from_loaded(lm)
    before = state_fingerprint(lm.model)
    objs = [channel("features.relu2", 1), class_logit(2), channel("features.relu1", 0), class_logit(5),
            class_logit(0)]
    s = DreamSettings(steps=3, size=32, batch_size=2, seed=4)
    whole = dream_tensor(ctx, None, objs, s)
    parts = [_share(ctx, objs, None, s, None, Ranks(rank, 3), None) for rank in range(3)]
    merged = _merge(parts)
    assert merged.objectives == whole.objectives
    np.testing.assert_allclose(merged.images, whole.images, atol=1e-6)
    np.testing.assert_allclose(merged.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert hook_count(lm.model) == 0
    after = state_fingerprint(lm.model)
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    common = ["dream", *LENET, "--layer", "features.relu2", "--units", "0,1,2", "--class", "1", "--class", "4",
              "--batch-size", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(port), "-m", "vizkit", *common, "--out",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    one = subprocess.run([sys.executable, "-m", "vizkit", *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    a, b = np.load(tmp_path / "two" / "dream" / "dream.npz"), np.load(tmp_path / "one" / "dream" / "dream.npz")
    assert list(a["objectives"]) == list(b["objectives"]) and len(a["objectives"]) == 5
    np.testing.assert_allclose(a["images"], b["images"], atol=1e-6)
    manifest = json.loads((tmp_path / "two" / "dream" / "dream.manifest.json").read_text())
    assert manifest["settings"]["ranks"] == 2


def test_gallery_renders_in_headless_chromium(tmp_path: Path) -> None:
    import os
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("VIZKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (VIZKIT_REQUIRE_CHROMIUM is set) but is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    code, _, err = _run([*LENET, "--steps", "1", "--class", "1", "--class", "2", "--out", str(tmp_path)])
    assert code == 0, err
    index = (tmp_path / "dream" / "html" / "index.html").resolve()
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-loaded="2/2"' in dom
