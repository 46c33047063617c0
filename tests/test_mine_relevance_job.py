"""``vizkit mine --rank relevance`` end to end: CLI errors, CLI equals API, npz and pages, resume after a crash
gives identical arrays, and two gloo ranks equal one process."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_mine_job import _folder, _free_port, _npz, _same

from vizkit.errors import UserInputError
from vizkit.jobs.mine import MineConfig, mine_dataset, run_mine
from vizkit.load import load_model
from vizkit.render.mine import UNITS_PER_PAGE
from vizkit.render.mine_relevance import read_heatmaps

LAYERS = ["features.relu1", "features.pool2"]


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "lenet.pt"
    torch.manual_seed(3)
    torch.save(load_model("lenet5", "none").model.state_dict(), path)
    return path


def _args(data: Path, out: Path | None, weights: Path, *extra: str) -> list[str]:
    args = ["mine", str(data), "--model", "lenet5", "--weights", str(weights), "-k", "3", "-b", "4", "--device",
            "cpu", *extra, *(["--out", str(out)] if out else [])]
    for layer in LAYERS:
        args += ["--layer", layer]
    return args


@pytest.mark.parametrize("extra,message", [
    (["--rank", "relevance"], "--rank relevance needs --class C"),
    (["--class", "3"], "--class only applies with --rank relevance"),
    (["--rank", "relevance", "--class", "zebra"], "has no class names; give a class index.*10 classes without names"),
    (["--rank", "relevance", "--class", "10"], "target 10 does not exist.*index 0-9"),
])
def test_cli_errors_are_one_line(tmp_path: Path, lenet_file: Path, extra: list[str], message: str) -> None:
    from vizkit_cli.main import main

    data = _folder(tmp_path / "data", 3)
    res = CliRunner().invoke(main, _args(data, tmp_path / "out", lenet_file, *extra))
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(message, lines[0]), res.stderr


def test_cli_equals_api_and_renders_heatmaps(tmp_path: Path, lenet_file: Path) -> None:
    from vizkit_cli.main import main

    data = _folder(tmp_path / "data", 7)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, _args(data, out, lenet_file, "--rank", "relevance", "--class", "3", "--units",
                                         "top:2"))
    assert res.exit_code == 0, res.output
    arrays = _npz(out)
    assert str(arrays["rank"]) == "relevance" and int(arrays["rank_class"]) == 3
    api = mine_dataset(load_model("lenet5", str(lenet_file)), data, LAYERS, k=3, batch_size=3, rank="relevance",
                       target=3).to_arrays()
    api.pop("classes")  # the API names the folder's classes; the CLI only with --per-class
    _same({k: arrays[k] for k in api}, api)
    for layer in LAYERS:
        maps = read_heatmaps(arrays, layer)
        assert len(maps) == 2
        for channel, entries in maps.items():
            assert [i for i, _ in entries] == list(arrays[f"{layer}/image_index"][channel])
            assert all(h.shape == (32, 32) for _, h in entries) and np.abs(entries[0][1]).max() > 0
    manifest = json.loads((out / "mine" / "mine.manifest.json").read_text())
    assert manifest["settings"]["rank"] == "relevance" and manifest["settings"]["class"] == 3
    pdf = (out / "mine" / "mine.pdf").read_bytes()
    assert manifest["pdf_pages"] == 1 + math.ceil(4 / UNITS_PER_PAGE) == len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    _gallery_has_heatmap_pages(out / "mine" / "html", arrays, manifest["rendered_units"])


def _gallery_has_heatmap_pages(folder: Path, arrays: dict[str, np.ndarray], rendered: dict[str, list[int]]) -> None:
    """Each rendered unit has a page whose heatmaps are the npz's (red where the stored relevance is clearly
    positive, blue where clearly negative), linked from its card on the layer page; unrendered cards link nowhere."""
    from PIL import Image

    for n, layer in enumerate(LAYERS):
        data = re.search(r'id="units-data">(.*?)</script>', (folder / f"layer{n:02d}.html").read_text()).group(1)
        rows = {row["c"]: row for row in json.loads(data)["units"]}
        assert {c for c, row in rows.items() if row["page"]} == set(rendered[layer])
        for channel, entries in read_heatmaps(arrays, layer).items():
            page = (folder / rows[channel]["page"]).read_text()
            assert "relevance for" in page and "mean share" in page
            shown = re.findall(r'<img src="([^"]+-h\.png)"', page)
            assert len(shown) == len(entries) and rows[channel]["img"] == shown[0]
            for file, (_, heat) in zip(shown, entries, strict=True):
                rgb = np.asarray(Image.open(folder / file).convert("RGB")).astype(int)
                redness = rgb[..., 0] - rgb[..., 2]
                clear = np.abs(heat) > 0.2 * np.abs(heat).max()
                assert np.all(np.sign(redness[clear]) == np.sign(heat[clear]))


def test_crash_then_resume_gives_identical_arrays(tmp_path: Path, lenet_file: Path) -> None:
    data = _folder(tmp_path / "data", 10)
    base = MineConfig(data=data, model="lenet5", weights=str(lenet_file), layers=LAYERS, project=False,
                      batch_size=3, top_k=3, rank="relevance", target=7, device="cpu")
    whole = run_mine(MineConfig(**{**base.__dict__, "out": tmp_path / "whole"}))
    assert whole.exit_code == 0

    def crash(done: int, total: int) -> None:  # runs before the checkpoint hook of the same batch
        if done >= 6:
            raise KeyboardInterrupt

    crashed = MineConfig(**{**base.__dict__, "out": tmp_path / "crashed", "checkpoint_every": 3})
    with pytest.raises(KeyboardInterrupt):
        run_mine(crashed, progress=crash)
    assert torch.load(tmp_path / "crashed" / "mine" / "checkpoint.pt", weights_only=True)["positions"] == 3
    with pytest.raises(UserInputError, match="different ranking"):
        run_mine(MineConfig(**{**crashed.__dict__, "resume": True, "target": 2}))
    run_mine(MineConfig(**{**crashed.__dict__, "resume": True}))
    _same(_npz(tmp_path / "crashed"), _npz(tmp_path / "whole"))


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path: Path, lenet_file: Path) -> None:
    data = _folder(tmp_path / "data", 12, classes=3, bad=(6,))  # 12 readable images: DistributedSampler pads one
    common = _args(data, None, lenet_file, "--rank", "relevance", "--class", "5", "--no-project")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(_free_port()), "-m", "vizkit", *common, "--out",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert "006.png" in two.stderr, two.stderr
    one = subprocess.run([sys.executable, "-m", "vizkit", *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 2, one.stderr
    _same(_npz(tmp_path / "two"), _npz(tmp_path / "one"))
