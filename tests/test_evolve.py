"""vizkit evolve: checkpoint ordering, stability by hand, the per-checkpoint scan against brute force, projections
against the deconvnet on each image alone, identical checkpoints, broken checkpoints, and the command's files."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_report import CHROMIUM, FLAGS  # the report gallery's browser helper: same flags, same skip rule

from vizkit.capture.filters import filter_stats
from vizkit.capture.recorder import Recorder
from vizkit.errors import UserInputError
from vizkit.jobs.evolve import EvolveConfig, evolve_checkpoints
from vizkit.load import load_model
from vizkit.load.checkpoints import BY_MTIME, BY_NAME, BY_NAME_UNNUMBERED_LAST, list_checkpoints, progress_number
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.project.deconv import Unit, forward_capture, project_full
from vizkit.project.evolution import layer_conv, stability
from vizkit.render.evolve import read_cell


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """12 random 32x32 grey images in two class folders, one unreadable file, and lenet5 checkpoints: epoch_1,
    epoch_3 (the same weights as epoch_1), epoch_10 (other weights) and a broken epoch_7."""
    root = tmp_path_factory.mktemp("evolve")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "data" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(root / "data" / name / f"{i}.png")
    (root / "data" / "b" / "zz-broken.png").write_text("not an image")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    from vizkit.load import zoo

    torch.manual_seed(1)
    first = zoo.lenet5().state_dict()
    torch.save(first, ckpt / "epoch_1.pt")
    torch.save(first, ckpt / "epoch_3.pt")
    torch.manual_seed(2)
    torch.save(zoo.lenet5().state_dict(), ckpt / "epoch_10.pt")
    (ckpt / "epoch_7.pt").write_bytes(b"\x00broken checkpoint")
    return root


# --- ordering --------------------------------------------------------------------------------------------------------

def test_progress_numbers_from_names() -> None:
    cases = {"epoch_3.pt": 3, "model-step2000.pth": 2000, "ckpt_e07.pt": 7, "checkpoint-12.pt": 12,
             "stage2_epoch_5.pt": 5, "labnet_ep10.pt": 10, "final.pt": None, "best.safetensors": None}
    assert {name: progress_number(name) for name in cases} == cases


def test_ordering_by_numbers_in_names_not_by_time_or_text(tmp_path: Path) -> None:
    for i, name in enumerate(["epoch_10.pt", "epoch_2.pt", "epoch_1.pt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(10**18 + i, 10**18 + i))  # written newest-first
    found = list_checkpoints([tmp_path])
    assert [p.name for p in found.paths] == ["epoch_1.pt", "epoch_2.pt", "epoch_10.pt"]
    assert found.numbers == [1, 2, 10] and found.order == BY_NAME


def _files(folder: Path, names: list[str], contents: list[bytes] | None = None) -> None:
    """Files written in list order, each a second newer than the one before (modification time = list order)."""
    for i, name in enumerate(names):
        (folder / name).write_bytes(contents[i] if contents else name.encode())
        os.utime(folder / name, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))


def test_ordering_by_modification_time_when_no_name_tells_and_it_says_so(tmp_path: Path) -> None:
    _files(tmp_path, ["last.pt", "best.pt", "final.pt"])
    found = list_checkpoints([tmp_path / "best.pt", tmp_path])  # a file and its folder: listed once
    assert [p.name for p in found.paths] == ["last.pt", "best.pt", "final.pt"] and found.order == BY_MTIME
    assert len(found.notes) == 1 and "modification time" in found.notes[0] and "best.pt" in found.notes[0]


def test_unnumbered_files_go_last_even_when_copied_in_reverse(tmp_path: Path) -> None:
    # `cp` of a training run: the final weights land first, the epochs after, newest first.
    _files(tmp_path, ["final.pt", "epoch_3.pt", "epoch_2.pt", "epoch_1.pt"])
    found = list_checkpoints([tmp_path])
    assert [p.name for p in found.paths] == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "final.pt"]
    assert found.numbers == [1, 2, 3, None] and found.order == BY_NAME_UNNUMBERED_LAST
    assert found.notes == ()  # the rule placed final.pt; modification time decided nothing


def test_unnumbered_duplicate_of_a_checkpoint_is_skipped_with_a_note(tmp_path: Path) -> None:
    _files(tmp_path, ["labnet.pt", "epoch_02.pt", "epoch_01.pt"], [b"two", b"two", b"one"])
    found = list_checkpoints([tmp_path])
    assert [p.name for p in found.paths] == ["epoch_01.pt", "epoch_02.pt"] and found.order == BY_NAME
    assert found.notes == (f"skipped {tmp_path / 'labnet.pt'}: the same weights as {tmp_path / 'epoch_02.pt'}",)


def test_final_weights_saved_under_another_name_are_the_last_epoch_again(tmp_path: Path) -> None:
    # torch.save names its archive's folder after the file: the same tensors give different bytes.
    from vizkit.lab import labnet_checkpoints

    epochs = labnet_checkpoints()
    last = torch.load(epochs[-1], weights_only=True)
    for path in epochs[-3:]:
        torch.save(torch.load(path, weights_only=True), tmp_path / path.name)
    torch.save(last, tmp_path / "labnet.pt")
    torch.save({k: v + 1 for k, v in last.items()}, tmp_path / "tuned.pt")  # other weights: kept, placed last
    assert (tmp_path / "labnet.pt").read_bytes() != (tmp_path / epochs[-1].name).read_bytes()
    found = list_checkpoints([tmp_path])
    assert [p.name for p in found.paths] == [p.name for p in epochs[-3:]] + ["tuned.pt"]
    assert found.notes == (f"skipped {tmp_path / 'labnet.pt'}: the same weights as {tmp_path / epochs[-1].name}",)


def test_modification_time_deciding_between_equal_numbers_is_noted(tmp_path: Path) -> None:
    _files(tmp_path, ["b_epoch_2.pt", "a_epoch_2.pt", "epoch_1.pt"])
    found = list_checkpoints([tmp_path])
    assert [p.name for p in found.paths] == ["epoch_1.pt", "b_epoch_2.pt", "a_epoch_2.pt"]
    assert len(found.notes) == 1 and "share the number 2" in found.notes[0]


def test_missing_checkpoint_and_empty_folder_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        list_checkpoints([tmp_path / "nope.pt"])
    with pytest.raises(UserInputError, match="no checkpoint files"):
        list_checkpoints([tmp_path])


# --- trends ----------------------------------------------------------------------------------------------------------

def test_stability_by_hand() -> None:
    # 3 checkpoints, 3 units, K = 2; -1 = empty slot
    idx = np.array([[[5, 1], [2, 3], [-1, -1]],
                    [[5, 2], [3, 2], [-1, -1]],
                    [[5, 2], [3, 2], [4, -1]]])
    changed, stable, same = stability(idx)
    assert changed.tolist() == [[False, True, False], [False, False, True]]
    np.testing.assert_allclose(stable, [2 / 3, 2 / 3])
    np.testing.assert_allclose(same, [2 / 3, 2 / 3])  # {2,3} == {3,2}; {5,1} != {5,2}; empty == empty


def test_layer_conv_picks_the_filters_that_stand_for_a_layer() -> None:
    model = load_model("lenet5", "none").model
    assert layer_conv(model, "features.conv2") == "features.conv2"
    assert layer_conv(model, "features.pool2") == "features.conv2"
    assert layer_conv(model, "features") == "features.conv3"
    assert layer_conv(model, "features.conv1") == "features.conv1"


# --- the run ---------------------------------------------------------------------------------------------------------

def _config(lab: Path, checkpoints: list[str], **kw) -> EvolveConfig:
    return EvolveConfig(checkpoints=[str(lab / "ckpt" / c) for c in checkpoints], data=str(lab / "data"),
                        model="lenet5", command="test", **kw)


@pytest.mark.xdist_group("evolve_lab")  # tests sharing a module fixture run on one xdist worker: built once
def test_identical_checkpoints_give_full_stability(lab: Path) -> None:
    result, failures, _ = evolve_checkpoints(_config(lab, ["epoch_3.pt", "epoch_1.pt"], top_k=3))
    assert result is not None and [p.name for p in result.checkpoints.paths] == ["epoch_1.pt", "epoch_3.pt"]
    assert [f.image for f in failures] == [str(lab / "data" / "b" / "zz-broken.png")]
    for evo in result.layers:
        assert evo.stable.tolist() == [1.0] and evo.topk_same.tolist() == [1.0]
        assert not evo.top1_changed.any()
        np.testing.assert_array_equal(evo.values[0], evo.values[1])
        for a, b in zip(result.cells[evo.layer][0], result.cells[evo.layer][1], strict=True):
            assert a is not None and b is not None and a.box == b.box
            np.testing.assert_array_equal(a.projection, b.projection)


@pytest.mark.xdist_group("evolve_lab")
def test_scan_filters_and_projections_against_independent_references(lab: Path) -> None:
    result, _, _ = evolve_checkpoints(_config(lab, ["epoch_1.pt", "epoch_10.pt"], units="all"))
    assert result is not None
    layers = [e.layer for e in result.layers]
    # as in mine, a default max-pool that covers its whole input repeats the ReLU before it and is left out
    assert layers == ["features.relu1", "features.relu2"]
    assert "features.pool1 (= features.relu1), features.pool2 (= features.relu2)" in " ".join(result.notes)
    images = list_images(lab / "data")
    for t, path in enumerate(result.checkpoints.paths):
        loaded = load_model("lenet5", str(path))
        dataset = ImageDataset(images, loaded.preprocessing)
        xs = {i: dataset[i][0] for i in range(len(images.paths)) if dataset[i][0] is not None}
        with Recorder(loaded.model, layers) as rec, torch.no_grad():
            rec.run(torch.stack(list(xs.values())))
        for evo in result.layers:
            maxima = rec.outputs[evo.layer].flatten(2).amax(dim=2)  # (images, C): brute-force strongest activation
            np.testing.assert_allclose(evo.values[t, :, 0], maxima.amax(dim=0).numpy(), rtol=1e-6)
            best = [list(xs)[int(i)] for i in maxima.argmax(dim=0)]
            assert evo.image_index[t, :, 0].tolist() == best
            rms = filter_stats(loaded.model, [evo.conv])[0].rms
            assert evo.rms_median[t] == pytest.approx(float(np.median(rms)))
            assert evo.rms_above[t] == pytest.approx(float(np.mean(rms > 0.1)))
        evo = result.layers[1]  # relu2: each cell equals the deconvnet on its image alone, cut to the box
        for u, channel in enumerate(result.units[evo.layer][:5]):
            cell = result.cells[evo.layer][t][u]
            assert cell is not None
            cap = forward_capture(loaded.model, xs[cell.image_index][None], [evo.layer])
            full = project_full(cap, evo.layer, [Unit(channel, cell.position)])[0].detach().numpy()
            y0, y1, x0, x1 = cell.box
            np.testing.assert_allclose(cell.projection, full[:, y0:y1, x0:x1], rtol=1e-5, atol=1e-7)


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


@pytest.fixture(scope="module")
def cli_run(lab: Path, tmp_path_factory) -> tuple[Any, Path]:
    from vizkit_cli.evolve import evolve as evolve_cli

    out = tmp_path_factory.mktemp("evolve-cli") / "out"
    result = CliRunner().invoke(evolve_cli, [str(lab / "ckpt"), "--data", str(lab / "data"), "--model", "lenet5",
                                             "--layer", "features.pool2", "--units", "top:4", "--top-k", "2",
                                             "--patches", "--out", str(out)], catch_exceptions=False)
    return result, out


@pytest.mark.slow
@pytest.mark.xdist_group("evolve_lab")
def test_cli_skips_a_broken_checkpoint_names_it_and_writes_the_rest(cli_run: tuple[Any, Path]) -> None:
    result, out = cli_run
    assert result.exit_code == 2
    assert "epoch_7.pt" in result.stderr and "zz-broken.png" in result.stderr
    folder = out / "evolve"
    assert sorted(p.name for p in folder.iterdir()) == ["evolve.manifest.json", "evolve.npz", "evolve.pdf", "html"]
    arrays = np.load(folder / "evolve.npz")
    assert [Path(p).name for p in arrays["checkpoints"]] == ["epoch_1.pt", "epoch_3.pt", "epoch_10.pt"]
    assert arrays["numbers"].tolist() == [1, 3, 10] and str(arrays["order"]) == BY_NAME
    assert [Path(p).name for p in arrays["skipped_checkpoints"]] == ["epoch_7.pt"]
    assert arrays["features.pool2/values"].shape == arrays["features.pool2/image_index"].shape == (3, 16, 2)
    assert arrays["features.pool2/stable"].shape == (2,) and arrays["features.pool2/stable"][0] == 1.0
    assert arrays["features.pool2/units"].shape == (4,)
    for t in range(3):
        for u in range(4):
            decoded = read_cell(arrays, "features.pool2", t, u)
            assert decoded is not None and decoded.shape[0] == 1
            assert float(arrays["features.pool2/cell/values"][t, u]) == pytest.approx(
                float(arrays["features.pool2/values"][t, arrays["features.pool2/units"][u], 0]))
    assert _pdf_pages(folder / "evolve.pdf") == 3  # provenance, trends, one grid page
    manifest = json.loads((folder / "evolve.manifest.json").read_text())
    assert manifest["checkpoints"]["order"] == BY_NAME and manifest["checkpoints"]["skipped"][0].endswith("7.pt")
    assert manifest["pdf_pages"] == 3 and manifest["dataset"]["listed"] == 13 and manifest["dataset"]["scanned"] == 12
    assert manifest["weights"]["source"] == "3 checkpoints" and manifest["weights"]["pretrained"] is None
    assert "seed" not in manifest and "render" in manifest["timings"]
    assert {f["path"] for f in manifest["files"]} >= {"evolve.npz", "evolve.pdf", "html/index.html"}
    for page in (folder / "html").glob("*.html"):
        for src in re.findall(r'src="([^"]+)"', page.read_text()):
            assert (folder / "html" / src).is_file(), src
    assert (folder / "html" / "layer00.html").is_file()
    assert not list(out.glob(".*"))


@pytest.mark.slow
@pytest.mark.xdist_group("evolve_lab")
def test_gallery_renders_in_headless_chromium(cli_run: tuple[Any, Path], tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("VIZKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (VIZKIT_REQUIRE_CHROMIUM is set) but is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    html_dir = cli_run[1] / "evolve" / "html"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    for name in ("index.html", "layer00.html"):
        page = (html_dir / name).resolve().as_uri()
        dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page], capture_output=True,
                             text=True, timeout=120).stdout
        loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom)
        assert loaded, f"{name}: the load script did not run"
        assert loaded.group(1) == loaded.group(2), (name, loaded.group(0))
        if name == "layer00.html":
            assert int(loaded.group(2)) == 3 * 4 * 2  # checkpoints x units x (projection, patch)


@pytest.mark.xdist_group("evolve_lab")
def test_no_loadable_checkpoint_writes_nothing_and_exits_2(lab: Path, tmp_path: Path) -> None:
    from vizkit_cli.evolve import evolve as evolve_cli

    result = CliRunner().invoke(evolve_cli, [str(lab / "ckpt" / "epoch_7.pt"), "--data", str(lab / "data"),
                                             "--model", "lenet5", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2 and "epoch_7.pt" in result.stderr and "no checkpoint could be loaded" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.xdist_group("evolve_lab")
def test_a_truncated_file_is_skipped_like_any_unreadable_checkpoint(lab: Path, tmp_path: Path) -> None:
    (tmp_path / "epoch_2.pt").write_bytes(b"junk")  # the safe unpickler fails with struct.error on it
    result, failures, _ = evolve_checkpoints(EvolveConfig(
        checkpoints=[str(lab / "ckpt" / "epoch_1.pt"), str(tmp_path / "epoch_2.pt")], data=str(lab / "data"),
        model="lenet5", layers=["features.pool2"], units="top:2", command="test"))
    assert result is not None and result.skipped_checkpoints == [str(tmp_path / "epoch_2.pt")]
    assert any(f.image.endswith("epoch_2.pt") and "cannot read weights file" in f.message for f in failures)


@pytest.mark.xdist_group("evolve_lab")
def test_unknown_model_or_layer_is_one_error_before_any_checkpoint(lab: Path, tmp_path: Path) -> None:
    from vizkit_cli.evolve import evolve as evolve_cli

    for args, message in ((["--model", "lenet6"], "unknown model"),
                          (["--model", "lenet5", "--layer", "features.conv9"], "unknown layer"),
                          (["--model", "lenet5", "--units", "3,99"], "3,99")):
        result = CliRunner().invoke(evolve_cli, [str(lab / "ckpt"), "--data", str(lab / "data"), *args, "--out",
                                                 str(tmp_path)], catch_exceptions=False)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert "checkpoint skipped" not in result.stderr and "written" not in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.xdist_group("evolve_lab")
def test_your_own_model_gets_its_model_options_for_every_checkpoint(lab: Path, tmp_path: Path) -> None:
    from test_custom_model import INPUT, MODEL_CODE
    from vizkit_cli.evolve import evolve as evolve_cli

    model_file = tmp_path / "my_net.py"
    model_file.write_text(MODEL_CODE)
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_CODE, str(model_file), "exec"), namespace)  # the same class, to write its checkpoints
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        torch.save(namespace["TinyNet"](width=6).state_dict(), tmp_path / f"epoch_{epoch}.pt")
    out = tmp_path / "out"
    result = CliRunner().invoke(evolve_cli, [str(tmp_path / "epoch_1.pt"), str(tmp_path / "epoch_2.pt"), "--data",
                                             str(lab / "data"), "--model", f"{model_file}:TinyNet", "--model-kwargs",
                                             '{"width": 6}', *INPUT, "--layer", "relu2", "--units", "top:2", "--out",
                                             str(out)], catch_exceptions=False)
    assert result.exit_code == 2 and "zz-broken.png" in result.stderr and "checkpoint skipped" not in result.stderr
    arrays = np.load(out / "evolve" / "evolve.npz")
    assert arrays["relu2/values"].shape == (2, 12, 1)  # width 6: 12 channels, from --model-kwargs
    manifest = json.loads((out / "evolve" / "evolve.manifest.json").read_text())
    assert manifest["preprocessing"]["crop"] == 32 and manifest["preprocessing"]["std"] == [0.25, 0.25, 0.25]


@pytest.mark.slow
def test_labnet_checkpoints_show_the_unit_that_responds_to_the_planted_mark(tmp_path: Path) -> None:
    """On the shipped per-epoch labnet checkpoints, a last-stage unit whose 9 strongest images all carry the mark and
    whose strongest activation's receptive field covers the mark appears, and stays once it has appeared. With 18 of
    100 images marked, nine marked images in a unit's top-9 by chance has probability about 0.18**9 = 2e-7."""
    from vizkit.lab import LabSpec, labnet_checkpoints, make_lab, read_lab
    from vizkit.project.deconv import analyse_receptive_fields

    lab_dir = tmp_path / "lab"
    make_lab(LabSpec(per_class={"train": 1, "val": 20, "test": 1}), lab_dir)
    info = read_lab(lab_dir)
    checkpoints = [p for p in labnet_checkpoints() if progress_number(p) in (1, 2, 5, 10)]
    assert len(checkpoints) == 4
    result, failures, _ = evolve_checkpoints(EvolveConfig(
        checkpoints=[str(p) for p in checkpoints], data=str(lab_dir / "val"), model="labnet",
        layers=["features.relu4"], units="top:2", top_k=9, command="test"))
    assert result is not None and not failures and result.checkpoints.numbers == [1, 2, 5, 10]
    marked = {str(lab_dir / p) for p in info["marked_images"]}
    is_marked = np.array([p in marked for p in result.paths])
    assert is_marked.sum() == 18
    y0, x0, y1, x1 = info["mark"]["box"]
    field = analyse_receptive_fields(load_model("labnet", "none").model, (1, 3, 64, 64))["features.relu4"]
    evo = result.layers[0]
    all_marked = np.all((evo.image_index >= 0) & is_marked[evo.image_index], axis=2)  # (T, C)
    boxes = [[field.box(int(p[0]), int(p[1]), 64, 64) for p in evo.positions[t, :, 0]] for t in range(4)]
    covers = np.array([[b[0] <= y0 and y1 <= b[1] and b[2] <= x0 and x1 <= b[3] for b in row] for row in boxes])
    on_mark = all_marked & covers
    assert on_mark.any(), "no unit responds to the planted mark at any epoch"
    unit = int(np.flatnonzero(on_mark[-1])[0])  # a mark unit of the trained network
    first = int(np.argmax(on_mark[:, unit]))
    assert on_mark[first:, unit].all()  # once it appeared it stayed
