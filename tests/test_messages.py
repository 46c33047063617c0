"""Messages and edges of long runs (issue 13, point 11): each says what happened and the way out, on one line."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure
from PIL import Image
from vizkit_cli.main import main

from vizkit.errors import ModelError, UserInputError
from vizkit.lab import LAB_CLASSES


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("vizkit: error:")]


def _images(root: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_folder_of_only_broken_files_says_so(tmp_path: Path) -> None:
    data = tmp_path / "broken"
    data.mkdir()
    (data / "a.png").write_text("not a picture")
    (data / "b.jpg").write_bytes(b"")
    code, _, err = _run(["mine", str(data), "--model", "labnet", "--out", str(tmp_path / "out")])
    assert code == 2
    assert _errors(err) == [f"vizkit: error: none of the 2 images of {data} could be read (e.g. not an image file "
                            f"(unknown or unsupported format): {data / 'a.png'}); nothing to scan: check the files"]
    assert "not scanned" not in err and not (tmp_path / "out" / "mine").exists()


def test_no_project_writes_what_its_help_says(tmp_path: Path) -> None:
    code, help_text, _ = _run(["mine", "--help"])
    said = " ".join(help_text.split()).split("--no-project")[1].split("--checkpoint-every")[0]
    assert "mine.npz" in said and "mine.pdf" in said and "html/" in said and "without pictures" in said
    code, _, err = _run(["mine", str(_images(tmp_path / "d", 3)), "--model", "labnet", "--no-project",
                         "--out", str(tmp_path / "out")])
    assert code == 0, err
    folder = tmp_path / "out" / "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["html", "mine.manifest.json", "mine.npz", "mine.pdf"]
    assert not [k for k in np.load(folder / "mine.npz").files if "projection" in k]


def test_class_folders_that_are_no_class_name_the_way_out() -> None:
    from vizkit.jobs.shortcuts import folder_classes
    from vizkit.load.dataset import ImageList

    images = ImageList([Path("DATA/cats/1.png")], [0], ["cats"], "DATA")
    names = [f"name{i}" for i in range(1000)] + ["nipple"]
    with pytest.raises(UserInputError) as err:
        folder_classes(images, names, len(names))
    message = str(err.value)
    assert message.startswith("folder 'cats' of DATA is not a class of the model (1001 classes: name0, name1, ")
    assert "top level of DATA" in message and "text file" in message and "Did you mean" not in message
    assert "\n" not in message


def test_unknown_class_lists_the_model_classes(tmp_path: Path) -> None:
    data = _images(tmp_path / "d", 2)
    code, _, err = _run(["shortcuts", str(data), "--model", "labnet", "--class", "hexagon", "--out",
                         str(tmp_path / "out")])
    assert code == 2
    shown = ", ".join(LAB_CLASSES[:5]) + (", ..." if len(LAB_CLASSES) > 5 else "")
    assert _errors(err) == [f"vizkit: error: unknown class 'hexagon'. The model has {len(LAB_CLASSES)} classes: "
                            f"{shown}; give a class name or an index 0-{len(LAB_CLASSES) - 1}."]


@pytest.mark.parametrize("keep", [0.5, 0.999, 20])
def test_truncated_checkpoint_is_one_line_naming_the_file(tmp_path: Path, keep: float) -> None:
    from vizkit.load import load_model

    path = tmp_path / "epoch_3.pt"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(ModelError) as err:
        load_model("labnet", str(path))
    assert str(err.value) == (f"weights file {path} is truncated or corrupt ({path.stat().st_size:,} bytes, the end "
                              "of the archive is missing); copy or save it again")


def test_lab_make_refuses_to_replace_a_lab_without_force(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    sizes = ["--train", "1", "--val", "1", "--test", "1"]
    assert _run(["lab", "make", str(lab), *sizes])[0] == 0
    before = (lab / "lab.json").read_text()
    code, _, err = _run(["lab", "make", str(lab), "--no-mark", *sizes])
    assert code == 2 and _errors(err) == [f"vizkit: error: {lab} already holds a lab; pass --force to replace the "
                                          "lab there (force=True in Python), or choose another folder"]
    assert (lab / "lab.json").read_text() == before
    code, _, err = _run(["lab", "make", str(lab), "--no-mark", "--force", *sizes])
    assert code == 0, err
    assert json.loads((lab / "lab.json").read_text())["mark"] is None and not (lab / "test_marked").exists()


def test_invariance_refuses_unused_and_out_of_frame_ranges(tmp_path: Path, sample_paths: list[Path]) -> None:
    from vizkit.project.invariance import make_sweep

    code, _, err = _run(["invariance", str(sample_paths[0]), "--model", "labnet", "--transform", "scale",
                         "--range", "rotate=0:90", "--out", str(tmp_path)])
    assert code == 2 and _errors(err) == ["vizkit: error: --range rotate=0:90 is for a transform not swept here "
                                          "(--transform scale); add --transform rotate or drop the range"]
    code, _, err = _run(["invariance", str(sample_paths[0]), "--model", "labnet", "--transform", "translate",
                         "--range", "translate=-80:80", "--out", str(tmp_path)])
    assert code == 2 and _errors(err) == ["vizkit: error: --range translate=-80:80 moves the image out of the frame "
                                          "(the input is 64 pixels high); keep shifts between -63 and 63"]
    assert make_sweep("translate", 64, 3, (-63, 63)).amounts == (-63.0, 0.0, 63.0)
    with pytest.raises(UserInputError, match="below one pixel"):
        make_sweep("scale", 64, 3, (0.01, 1.0))


def test_file_names_without_glyphs_are_escaped_and_no_glyph_warning(tmp_path: Path, monkeypatch) -> None:
    from vizkit.render.kit import glyphs
    from vizkit.render.kit.pdf import built, write_pdf

    monkeypatch.setattr(glyphs, "cjk_font", lambda: None)
    fig = Figure()
    text = fig.text(0.1, 0.5, "猫の写真 café.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_pdf(tmp_path / "x.pdf", [built(fig)], title="t", subject="s", keywords="k", footer_left="f")
    assert text.get_text() == "\\u732b\\u306e\\u5199\\u771f café.jpg"  # é is in the page font: kept
    assert not [w for w in caught if "Glyph" in str(w.message)]


def test_cjk_font_is_the_fallback_when_one_is_installed(monkeypatch) -> None:
    from vizkit.render.kit import glyphs

    installed = "DejaVu Serif"  # stands for a CJK font: it "has" every glyph below
    monkeypatch.setattr(glyphs, "cjk_font", lambda: installed)
    real = glyphs._has
    monkeypatch.setattr(glyphs, "_has", lambda path, char: "Serif" in os.path.basename(path) or real(path, char))
    fig = Figure()
    text = fig.text(0.1, 0.5, "猫.jpg")
    glyphs.fix_glyphs(fig)
    assert text.get_text() == "猫.jpg" and text.get_fontfamily()[-1] == installed


def test_evolve_says_when_modification_time_decides_and_one_line_per_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for i, name in enumerate(["best.pt", "final.pt"]):
        (folder / name).write_bytes(f"not weights {i}".encode())
        os.utime(folder / name, ns=(10**18 + i * 10**9,) * 2)
    data = _images(tmp_path / "d", 2)
    code, _, err = _run(["evolve", str(folder), "--data", str(data), "--model", "labnet", "--out",
                         str(tmp_path / "out")])
    lines = err.splitlines()
    assert code == 2
    assert lines[0] == f"vizkit: modification time orders {folder / 'best.pt'}, {folder / 'final.pt'}: no " \
                       "epoch/step number in their names"
    assert [line.split(":")[0] for line in lines[1:3]] == ["checkpoint 1/2 skipped", "checkpoint 2/2 skipped"]
