"""``vizkit mine`` end to end: CLI and API agree, bad files are skipped and named, checkpoints are refused when
their inputs changed, a SIGKILLed run resumes to identical arrays, and 2 gloo ranks equal one process."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vizkit.jobs.mine import MineConfig, mine_dataset, run_mine
from vizkit.load import load_model

LENET_LAYERS = ["features.relu1", "features.pool2"]


def _folder(root: Path, n: int, classes: int = 2, size: int = 36, bad: tuple[int, ...] = (),
            big: tuple[int, ...] = ()) -> Path:
    """n random images in class folders (the ``bad`` ones unreadable, the ``big`` ones 6000 px and slow to read)
    plus c0/dup.png, a copy of c1/001.png."""
    rng = np.random.default_rng(n)
    for i in range(n):
        path = root / f"c{i % classes}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in bad:
            path.write_bytes(b"not a png")
        elif i in big:
            Image.new("RGB", (6000, 6000), (i, 255 - i, 3 * i)).save(path, compress_level=1)
        else:
            Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(path)
    (root / "c0" / "dup.png").write_bytes((root / "c1" / "001.png").read_bytes())
    return root


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "lenet.pt"
    torch.manual_seed(3)
    torch.save(load_model("lenet5", "none").model.state_dict(), path)
    return path


def _npz(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "mine" / "mine.npz") as data:
        return {key: data[key] for key in data.files}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cli_skips_bad_files_and_equals_the_api(tmp_path: Path, lenet_file: Path) -> None:
    from vizkit_cli.main import main

    data = _folder(tmp_path / "data", 13, bad=(4, 9))
    out = tmp_path / "out"
    args = ["mine", str(data), "--model", "lenet5", "--weights", str(lenet_file), "--no-project", "--per-class",
            "-k", "4", "-b", "5", "--out", str(out), "--device", "cpu"]
    for layer in LENET_LAYERS:
        args += ["--layer", layer]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.startswith("vizkit: skipped")]
    assert len(lines) == 2 and "c0/004.png" in lines[0] and "c1/009.png" in lines[1]
    arrays = _npz(out)
    keys = {"paths", "rank", "classes"} | {f"{layer}/{field}" for layer in LENET_LAYERS for field in (
        "values", "image_index", "positions", "mean", "rate", "ties", "ranked", "class_values",
        "class_image_index")}
    assert set(arrays) == keys and len(arrays["paths"]) == 14 and list(arrays["classes"]) == ["c0", "c1"]
    bad = {int(np.flatnonzero(arrays["paths"] == str(data / name))[0]) for name in ("c0/004.png", "c1/009.png")}
    for layer in LENET_LAYERS:
        assert not np.isin(arrays[f"{layer}/image_index"], list(bad)).any()
    manifest = json.loads((out / "mine" / "mine.manifest.json").read_text())
    assert [s["path"] for s in manifest["dataset"]["skipped"]] == [str(data / "c0/004.png"), str(data / "c1/009.png")]
    assert manifest["settings"]["images_scanned"] == 12
    result = mine_dataset(load_model("lenet5", str(lenet_file)), data, LENET_LAYERS, k=4, per_class=True, batch_size=3)
    assert result.images_scanned == 12 and len(result.skipped) == 2
    api = result.to_arrays()
    _same({k: arrays[k] for k in api}, api)


def test_cli_projects_and_renders(tmp_path: Path, lenet_file: Path) -> None:
    from vizkit_cli.main import main

    data = _folder(tmp_path / "data", 6)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["mine", str(data), "--model", "lenet5", "--weights", str(lenet_file), "--units",
                                    "top:2", "-k", "3", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    folder = out / "mine"
    assert {p.name for p in folder.iterdir()} >= {"mine.npz", "mine.pdf", "html", "mine.manifest.json"}
    manifest = json.loads((folder / "mine.manifest.json").read_text())
    assert all(len(units) == 2 for units in manifest["rendered_units"].values())
    assert len(manifest["rendered_units"]) == len(manifest["settings"]["layers"]) >= 2


@pytest.mark.parametrize("units", ["foo", "top:0", "1,x"])
def test_bad_units_refused_before_the_scan(tmp_path: Path, units: str) -> None:
    from vizkit.errors import UserInputError

    with pytest.raises(UserInputError, match="--units"):
        run_mine(MineConfig(data=tmp_path / "never-listed", units=units))  # raised before DATA is even read


def test_api_takes_a_plain_dataloader() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3, stride=2))
    x = torch.randn(10, 3, 12, 12)
    labels = torch.arange(10) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=4)
    result = mine_dataset(model, loader, ["0", "2"], k=3, per_class=True, classes=["a", "b", "c"])
    assert result.paths == [f"#{i}" for i in range(10)] and result.images_scanned == 10
    with torch.no_grad():
        maxima = model[:1](x).flatten(2).amax(2)
    expect = torch.sort(maxima, dim=0, descending=True, stable=True).indices[:3].T
    np.testing.assert_array_equal(result.layers["0"].image_index, expect.numpy())
    for cls in range(3):
        members = torch.nonzero(labels == cls).flatten()
        order = members[torch.sort(maxima[members], dim=0, descending=True, stable=True).indices[:3]].T
        np.testing.assert_array_equal(result.layers["0"].class_image_index[cls], order.numpy())


def test_resume_refuses_changed_inputs(tmp_path: Path, lenet_file: Path) -> None:
    data = _folder(tmp_path / "data", 8)
    out = tmp_path / "out"
    base = MineConfig(data=data, model="lenet5", weights=str(lenet_file), layers=LENET_LAYERS, project=False,
                      checkpoint_every=3, batch_size=3, out=out, device="cpu")
    first = _npz(out) if run_mine(base).exit_code == 0 else None
    assert first is not None and (out / "mine" / "checkpoint.pt").is_file()
    again = run_mine(MineConfig(**{**base.__dict__, "resume": True}))  # finished checkpoint: nothing to scan
    assert again.result is not None and again.result.images_scanned == 9
    _same(_npz(out), first)
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in torch.load(lenet_file, weights_only=True).items()}, other)
    from vizkit.errors import UserInputError

    for change, word in [({"layers": ["features.relu1"]}, "layer list"), ({"weights": str(other)}, "weights"),
                         ({"top_k": 5}, "top-k")]:
        with pytest.raises(UserInputError, match=word) as err:
            run_mine(MineConfig(**{**base.__dict__, "resume": True, **change}))
        assert "\n" not in str(err.value)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(data / "c1" / "new.png")
    with pytest.raises(UserInputError, match="different dataset"):
        run_mine(MineConfig(**{**base.__dict__, "resume": True}))


def _vizkit(args: list[str], **kw: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vizkit", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_arrays(tmp_path: Path) -> None:
    torch.manual_seed(5)
    weights = tmp_path / "r18.pt"
    torch.save(load_model("resnet18", "none").model.state_dict(), weights)
    # Sorted order: c0/000, c0/002, ...; positions 8-11 (right after the first checkpoint) are slow to decode,
    # which leaves a wide window to kill the run there.
    data = _folder(tmp_path / "data", 36, size=20, bad=(17,), big=(16, 18, 20, 22))
    common = ["mine", str(data), "--model", "resnet18", "--weights", str(weights), "--layer", "conv1", "--layer",
              "maxpool", "--no-project", "-b", "4", "--device", "cpu", "-k", "5"]
    killed = tmp_path / "killed"
    ckpt = killed / "mine" / "checkpoint.pt"
    proc = _vizkit([*common, "--checkpoint-every", "8", "--out", str(killed)])
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err}"
    assert ckpt.exists() and not list(killed.rglob("mine.npz"))
    done = torch.load(ckpt, weights_only=True)["positions"]
    assert 8 <= done < 37
    resumed = _vizkit([*common, "--checkpoint-every", "8", "--out", str(killed), "--resume"])
    whole = _vizkit([*common, "--out", str(tmp_path / "whole")])
    for p in (resumed, whole):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 2 and "017.png" in err, err  # the unreadable file, also when met before the kill
    _same(_npz(killed), _npz(tmp_path / "whole"))
    manifest = json.loads((killed / "mine" / "mine.manifest.json").read_text())
    assert [s["path"] for s in manifest["dataset"]["skipped"]] == [str(data / "c1" / "017.png")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path: Path, lenet_file: Path) -> None:
    data = _folder(tmp_path / "data", 22, classes=3, bad=(6,))  # 23 images: DistributedSampler pads one
    common = ["mine", str(data), "--model", "lenet5", "--weights", str(lenet_file), "--no-project", "--per-class",
              "-k", "6", "-b", "4", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                               "127.0.0.1", "--master-port", str(_free_port()), "-m", "vizkit", *common, "--out",
                               str(tmp_path / "two"), *extra], env=env, capture_output=True, text=True, timeout=600)

    run = torchrun("--checkpoint-every", "4")
    assert "006.png" in run.stderr, run.stderr
    assert sorted(p.name for p in (tmp_path / "two" / "mine").glob("checkpoint*")) == [
        "checkpoint-rank0-of-2.pt", "checkpoint-rank1-of-2.pt"]  # one per rank, each for its own shard
    first = _npz(tmp_path / "two")
    (tmp_path / "two" / "mine" / "mine.npz").unlink()
    resumed = torchrun("--resume")  # both ranks load their finished state and merge again
    assert "006.png" in resumed.stderr, resumed.stderr
    _same(_npz(tmp_path / "two"), first)
    single = subprocess.run([sys.executable, "-m", "vizkit", *common, "--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 2, single.stderr
    _same(_npz(tmp_path / "two"), _npz(tmp_path / "one"))
    two = json.loads((tmp_path / "two" / "mine" / "mine.manifest.json").read_text())
    assert two["settings"]["ranks"] == 2 and two["settings"]["images_scanned"] == 22
    assert [s["path"] for s in two["dataset"]["skipped"]] == [str(data / "c0" / "006.png")]
