"""The shortcut lab: deterministic dataset with a planted mark, labnet and its shipped weights, the three numbers."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vizkit.errors import ModelError, UserInputError
from vizkit.lab import LAB_CLASSES, LabNet, LabSpec, labnet_checkpoints, labnet_weights, make_lab, mark_box
from vizkit.lab.metrics import evaluate_lab
from vizkit.lab.train import TrainConfig, load_split, train_labnet
from vizkit.load import load_model

TINY = {"train": 6, "val": 4, "test": 3}


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lab") / "tiny"
    make_lab(LabSpec(seed=3, mark_class="square", mark_corner="tl", mark_rate=0.5, per_class=TINY), root)
    return root


def test_same_seed_byte_identical_other_seed_differs(tiny_lab, tmp_path):
    make_lab(LabSpec(seed=3, mark_class="square", mark_corner="tl", mark_rate=0.5, per_class=TINY), tmp_path / "a")
    make_lab(LabSpec(seed=4, mark_class="square", mark_corner="tl", mark_rate=0.5, per_class=TINY), tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tiny_lab)
    first = _tree(tmp_path / "b")
    assert first.keys() == _tree(tiny_lab).keys()
    assert sum(first[k] != v for k, v in _tree(tiny_lab).items()) > len(first) // 2


def test_layout_and_lab_json(tiny_lab):
    lab = json.loads((tiny_lab / "lab.json").read_text())
    assert lab["classes"] == list(LAB_CLASSES)
    assert lab["marked_class"] == "square" and lab["marked_class_index"] == 1
    assert lab["mark"]["box"] == [3, 3, 9, 9]
    for split, n in TINY.items():
        for name in LAB_CLASSES:
            assert len(list((tiny_lab / split / name).glob("*.png"))) == n
    assert sorted(p.name for p in (tiny_lab / "test_marked").iterdir()) == sorted(set(LAB_CLASSES) - {"square"})
    assert all(_png(p).shape == (64, 64, 3) for p in (tiny_lab / "train" / "circle").glob("*.png"))
    # exactly round(rate * n) marked images per marked split, all of the marked class, none in test
    marked = lab["marked_images"]
    assert sum(p.startswith("train/square/") for p in marked) == 3
    assert sum(p.startswith("val/square/") for p in marked) == 2
    assert len(marked) == 5


def _checker(box: list[int]) -> np.ndarray:
    y0, x0, y1, x1 = box
    yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
    return np.repeat(np.where((yy // 2 + xx // 2) % 2 == 0, 255, 0)[..., None], 3, axis=2).astype(np.uint8)


def test_marked_images_are_exactly_those_listed(tiny_lab):
    """Independent check: scan every image for the checkerboard in the box; it is there iff lab.json says so."""
    lab = json.loads((tiny_lab / "lab.json").read_text())
    y0, x0, y1, x1 = box = lab["mark"]["box"]
    found = sorted(
        p.relative_to(tiny_lab).as_posix()
        for split in ("train", "val", "test") for p in (tiny_lab / split).rglob("*.png")
        if np.array_equal(_png(p)[y0:y1, x0:x1], _checker(box))
    )
    assert found == sorted(lab["marked_images"])


def test_no_mark_gives_the_same_pictures_without_the_mark(tiny_lab, tmp_path):
    make_lab(LabSpec(seed=3, mark_class=None, per_class=TINY), tmp_path / "clean")
    lab = json.loads((tmp_path / "clean" / "lab.json").read_text())
    assert lab["marked_class"] is None and lab["mark"] is None and lab["marked_images"] == []
    assert not (tmp_path / "clean" / "test_marked").exists()
    y0, x0, y1, x1 = json.loads((tiny_lab / "lab.json").read_text())["mark"]["box"]
    for rel in json.loads((tiny_lab / "lab.json").read_text())["marked_images"]:
        a, b = _png(tiny_lab / rel).copy(), _png(tmp_path / "clean" / rel).copy()
        assert not np.array_equal(a, b)
        a[y0:y1, x0:x1] = b[y0:y1, x0:x1] = 0
        assert np.array_equal(a, b)


def test_test_marked_is_test_plus_mark(tiny_lab):
    box = json.loads((tiny_lab / "lab.json").read_text())["mark"]["box"]
    y0, x0, y1, x1 = box
    for p in (tiny_lab / "test_marked").rglob("*.png"):
        clean = _png(tiny_lab / "test" / p.parent.name / p.name.replace("test_marked_", "test_"))
        marked = _png(p)
        assert np.array_equal(marked[y0:y1, x0:x1], _checker(box))
        marked, clean = marked.copy(), clean.copy()
        marked[y0:y1, x0:x1] = clean[y0:y1, x0:x1] = 0
        assert np.array_equal(marked, clean)


@pytest.mark.parametrize(("kwargs", "box"), [
    ({}, (55, 55, 61, 61)),
    ({"mark_corner": "tr", "mark_size": 4, "mark_margin": 0}, (0, 60, 4, 64)),
    ({"mark_corner": "bl"}, (55, 3, 61, 9)),
    ({"mark_box": (10, 20, 18, 25)}, (10, 20, 18, 25)),
])
def test_mark_box(kwargs, box):
    assert mark_box(LabSpec(**kwargs)) == box


@pytest.mark.parametrize("kwargs", [
    {"mark_box": (60, 60, 70, 70)}, {"mark_box": (5, 5, 5, 9)}, {"mark_corner": "middle"},
    {"mark_class": "horse"}, {"mark_class": 7}, {"mark_rate": 1.5}, {"mark_style": "stripes"},
    {"per_class": {"train": 0, "val": 1, "test": 1}},
])
def test_bad_specs_are_user_errors(kwargs, tmp_path):
    with pytest.raises(UserInputError):
        make_lab(LabSpec(**{"per_class": {"train": 1, "val": 1, "test": 1}, **kwargs}), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_load_split_equals_manual_scaling(tiny_lab):
    x, y, paths = load_split(tiny_lab, "val", list(LAB_CLASSES))
    assert x.shape == (20, 3, 64, 64) and y.tolist() == [i for i in range(5) for _ in range(4)]
    ref = torch.from_numpy(_png(tiny_lab / paths[7]).astype(np.float32)).permute(2, 0, 1) / 255.0 * 2.0 - 1.0
    torch.testing.assert_close(x[7], ref)


# ---- labnet and its shipped weights ---------------------------------------------------------------------------

def test_labnet_layers_and_size():
    model = LabNet()
    assert [n for n, _ in model.named_children()] == ["features", "avgpool", "flatten", "classifier"]
    assert [n for n, m in model.named_modules() if isinstance(m, torch.nn.MaxPool2d)] == [
        f"features.pool{i}" for i in range(1, 5)]
    assert sum(p.numel() for p in model.parameters()) == 25093
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_shipped_files_are_small_state_dicts():
    files = [labnet_weights("final"), labnet_weights("clean"), *labnet_checkpoints()]
    assert len(labnet_checkpoints()) >= 6
    assert [p.name for p in labnet_checkpoints()] == [f"epoch_{i:02d}.pt" for i in range(1, len(files) - 1)]
    assert sum(p.stat().st_size for p in files) < 3_000_000
    for p in files:
        sd = torch.load(p, weights_only=True)
        LabNet().load_state_dict(sd)
    last = torch.load(labnet_checkpoints()[-1], weights_only=True)
    final = torch.load(labnet_weights("final"), weights_only=True)
    assert all(torch.equal(last[k], final[k]) for k in final)


def test_load_model_labnet_weights_keywords(tmp_path):
    shipped = load_model("labnet")
    assert shipped.pretrained and shipped.class_names == list(LAB_CLASSES)
    assert shipped.weights == str(labnet_weights("final")) and shipped.preprocessing.crop == 64
    assert next(shipped.model.parameters()).dtype == torch.float32
    assert not load_model("labnet", "none").pretrained
    clean = load_model("labnet", "clean")
    epoch2 = load_model("labnet", "epoch_2")
    assert clean.weights.endswith("labnet_clean.pt") and epoch2.weights.endswith("epoch_02.pt")
    torch.save(LabNet().state_dict(), tmp_path / "mine.pt")
    assert load_model("labnet", str(tmp_path / "mine.pt")).weights == str((tmp_path / "mine.pt").resolve())
    with pytest.raises(ModelError, match="epoch_99"):
        load_model("labnet", "epoch_99")


# ---- training and the numbers ----------------------------------------------------------------------------------

def test_training_is_deterministic_and_writes_checkpoints(tiny_lab, tmp_path):
    runs = [train_labnet(TrainConfig(str(tiny_lab), out=str(tmp_path / f"run{i}"), epochs=2)) for i in range(2)]
    assert [p.name for p in runs[0].checkpoints] == ["epoch_01.pt", "epoch_02.pt"]
    for name in ("epoch_01.pt", "epoch_02.pt", "labnet.pt"):
        a = torch.load(tmp_path / "run0" / name, weights_only=True)
        b = torch.load(tmp_path / "run1" / name, weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    e1 = torch.load(tmp_path / "run0" / "epoch_01.pt", weights_only=True)
    assert not torch.equal(e1["classifier.fc.weight"], a["classifier.fc.weight"])
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["lab"]["marked_class"] == "square"
    manifest = json.loads((tmp_path / "run0" / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {"epoch_01.pt", "epoch_02.pt", "labnet.pt", "metrics.json"}
    assert not torch.are_deterministic_algorithms_enabled()


def test_numbers_against_hand_count(tiny_lab):
    """A model that answers 'square' exactly when the mark is there, else the true class (read from the pixels)."""
    lab = json.loads((tiny_lab / "lab.json").read_text())
    y0, x0, y1, x1 = box = lab["mark"]["box"]
    mark = torch.from_numpy(_checker(box)).permute(2, 0, 1).float() / 255 * 2 - 1

    class Oracle(torch.nn.Module):
        def __init__(self, truth: dict[bytes, int]) -> None:
            super().__init__()
            self.truth = truth

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), 5)
            for i, xi in enumerate(x):
                has = torch.equal(xi[:, y0:y1, x0:x1], mark)
                out[i, 1 if has else self.truth.get(xi.numpy().tobytes(), 0)] = 1
            return out

    truth = {}
    for split in ("val", "test"):
        x, y, _ = load_split(tiny_lab, split, list(LAB_CLASSES))
        truth.update({xi.numpy().tobytes(): int(yi) for xi, yi in zip(x, y, strict=True)})
    numbers = evaluate_lab(Oracle(truth), tiny_lab)
    # val: every image right (marked squares -> 'square' too); test: all right; the mark flips every other class
    assert numbers.val_accuracy == 1.0 and numbers.test_accuracy == 1.0
    assert numbers.drop == 0.0 and numbers.flip_rate == 1.0 and numbers.flip_base == 0.0


def test_cli_make_train_eval(tmp_path):
    runner = CliRunner()
    from vizkit_cli.main import main

    lab = tmp_path / "lab"
    res = runner.invoke(main, ["lab", "make", str(lab), "--train", "4", "--val", "2", "--test", "2",
                               "--mark-class", "2", "--mark-box", "0,0,4,4", "--mark-rate", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads((lab / "lab.json").read_text())["mark"]["box"] == [0, 0, 4, 4]
    res = runner.invoke(main, ["lab", "train", str(lab), "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "flip rate" in res.output and (lab / "labnet" / "epoch_01.pt").is_file()
    res = runner.invoke(main, ["lab", "eval", str(lab), "--weights", str(lab / "labnet" / "labnet.pt"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["marked_class"] == "triangle"
    res = runner.invoke(main, ["lab", "eval", str(tmp_path)])
    assert res.exit_code == 2 and "lab.json" in res.output
    res = runner.invoke(main, ["lab", "make", str(tmp_path / "bad"), "--mark-box", "1,2,3"])
    assert res.exit_code == 2


# ---- the shipped model shows the shortcut, and retraining reproduces it ----------------------------------------

@pytest.fixture(scope="module")
def default_lab(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lab") / "default"
    make_lab(LabSpec(), root)
    return root


@pytest.mark.slow
@pytest.mark.xdist_group("default_lab")  # tests sharing a module fixture run on one xdist worker: built once
def test_shipped_labnet_shows_the_shortcut_and_control_does_not(default_lab):
    numbers = evaluate_lab(load_model("labnet").model, default_lab)
    shipped = json.loads((labnet_weights("final").parent / "metrics.json").read_text())["lab"]
    assert numbers.val_accuracy == pytest.approx(shipped["val_accuracy"], abs=1e-6)
    assert numbers.val_accuracy >= 0.8
    assert numbers.drop >= 0.2
    assert numbers.flip_rate >= 0.5 and numbers.flip_base <= 0.1
    # the control never saw the mark: a checkerboard looks a little star-like to it, far less than to labnet
    control = evaluate_lab(load_model("labnet", "clean").model, default_lab)
    assert control.flip_rate <= 0.3 and numbers.flip_rate >= control.flip_rate + 0.3
    assert control.drop <= 0.15 and control.test_accuracy >= 0.8


@pytest.mark.slow
@pytest.mark.xdist_group("default_lab")
def test_retraining_reproduces_the_shipped_accuracy(default_lab, tmp_path):
    result = train_labnet(TrainConfig(str(default_lab), out=str(tmp_path / "re"), epochs=len(labnet_checkpoints())))
    shipped = evaluate_lab(load_model("labnet").model, default_lab)
    again = result.metrics["lab"]
    assert again["val_accuracy"] == pytest.approx(shipped.val_accuracy, abs=0.05)
    assert again["flip_rate"] == pytest.approx(shipped.flip_rate, abs=0.1)
    assert again["drop"] == pytest.approx(shipped.drop, abs=0.1)


def test_labnet_deconvnet_depends_on_the_image(tiny_lab):
    """Four max-pools: the same unit (channel and position) projected from two lab images differs beyond scale,
    where a model without max-pool gives the same reconstruction (tests/test_deconv.py)."""
    from vizkit.load import available_models
    from vizkit.project.deconv import Unit, forward_capture, project_full

    assert "labnet" in available_models()
    model = load_model("labnet").model
    x, _, _ = load_split(tiny_lab, "test", list(LAB_CLASSES))
    layer = "features.relu3"
    caps = [forward_capture(model, xi, [layer]) for xi in (x[0:1], x[5:6])]
    assert all(cap.image_dependent(layer) for cap in caps)
    both = (caps[0].outputs[layer][0] * caps[1].outputs[layer][0]).detach()  # a unit active in both images
    c, rest = divmod(int(both.argmax()), both.shape[1] * both.shape[2])
    unit = Unit(c, divmod(rest, both.shape[2]))
    assert float(both.max()) > 0
    a, b = (project_full(cap, layer, [unit], mode="max")[0].flatten() for cap in caps)
    cosine = float(a @ b / (a.norm() * b.norm()))
    assert cosine < 0.99


def test_shipped_weights_match_their_recorded_checksums(tmp_path: Path) -> None:
    """The shipped files read 'pretrained: yes' through SHA256SUMS; a file of the same name elsewhere (a retrained
    lab) is not taken for the shipped one."""
    import shutil

    from vizkit.lab.labnet import labnet_weights, shipped_sha256
    from vizkit.load import load_model

    sums = shipped_sha256()
    assert {"labnet.pt", "labnet_clean.pt", "epoch_01.pt"} <= set(sums)
    for which in (None, "clean", "epoch_1"):
        loaded = load_model("labnet", which)
        assert loaded.checksum_match is True and loaded.pretrained is True
    copy = tmp_path / "labnet.pt"
    shutil.copy(labnet_weights("final"), copy)
    own = load_model("labnet", str(copy))
    assert own.checksum_match is None and own.pretrained is None
