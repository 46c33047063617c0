"""Video files through `vizkit gradcam`, `activations` and `deconv`: frames chosen by --every/--max-frames, the four
files per video, folders shared with still images, and a bad video reported in one line while the batch goes on."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_render import pdf_page_count
from test_video import FRAMES, read_all, write_clip
from vizkit_cli.main import main

MODEL_CODE = textwrap.dedent('''
    from torch import nn

    class Tiny(nn.Sequential):
        """Two conv stages on 3 x 32 x 32 inputs, three classes."""

        def __init__(self) -> None:
            super().__init__(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(6, 3))
''')
FILES = ["{m}.manifest.json", "{m}.mp4", "{m}.npz", "{m}.pdf"]


@pytest.fixture
def model_args(tmp_path: Path) -> list[str]:
    path = tmp_path / "tiny_net.py"
    path.write_text(MODEL_CODE)
    return ["--model", f"{path}:Tiny", "--input-size", "3,32,32", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]


def run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_gradcam_video_beside_images_and_a_bad_video(tmp_path: Path, model_args: list[str]) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 40)
    out = tmp_path / "out"
    code, stdout, err = run(["gradcam", str(bad), str(clip), str(photo), *model_args, "--layer", "3",
                             "--every", "2", "--max-frames", "3", "--out", str(out)])
    assert code == 2  # the bad video's code, after everything else was written
    errors = [line for line in err.splitlines() if line.startswith("vizkit: error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "cannot open" in errors[0]
    assert "2 written, 1 failed" in err and not (out / "broken").exists()
    assert f"wrote {out / 'clip'}/" in stdout and f"wrote {out / 'photo'}/" in stdout
    folder = out / "clip"
    assert sorted(p.name for p in folder.iterdir()) == [f.format(m="gradcam") for f in FILES]
    with np.load(folder / "gradcam.npz") as z:
        assert z["frame_index"].tolist() == [0, 2, 4]
        assert z["cam"].shape == (3, 1, 32, 32) and z["peak"].shape == (3, 1, 2)
        np.testing.assert_allclose(z["time"], [0.0, 0.2, 0.4])
    assert len(read_all(folder / "gradcam.mp4")) == 3 and pdf_page_count(folder / "gradcam.pdf") == 1
    manifest = json.loads((folder / "gradcam.manifest.json").read_text())
    assert manifest["settings"]["every"] == 2 and manifest["settings"]["max_frames"] == 3
    assert manifest["settings"]["layer"] == "3" and manifest["frames"] == 3
    assert b"vizkit gradcam: clip.mp4" in (folder / "gradcam.pdf").read_bytes()  # page_one's title (PDF metadata)
    assert (out / "photo" / "gradcam.pdf").is_file()


@pytest.mark.parametrize("command, extra, key, per_frame", [
    ("activations", ["--layer", "1", "--top", "3"], "1/maps", (3, 32, 32)),
    ("deconv", ["--layer", "3", "--top-k", "2"], "3/channels", (2,)),
])
def test_activations_and_deconv_take_videos(tmp_path: Path, model_args: list[str], command: str, extra: list[str],
                                            key: str, per_frame: tuple[int, ...]) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    code, _, err = run([command, str(clip), *model_args, *extra, "--max-frames", "4", "--out", str(tmp_path / "o")])
    assert code == 0, err
    folder = tmp_path / "o" / "clip"
    assert sorted(p.name for p in folder.iterdir()) == [f.format(m=command) for f in FILES]
    with np.load(folder / f"{command}.npz") as z:
        assert z[key].shape == (4, *per_frame) and z["frame_index"].tolist() == [0, 1, 2, 3]
    frames = read_all(folder / f"{command}.mp4")
    assert len(frames) == 4 and frames[0].shape[1] > frames[0].shape[0]  # the frame beside its grid
    assert len(read_all(tmp_path / "clip.mp4")) == FRAMES  # the source is only read


def test_an_image_and_a_video_of_one_name_get_two_folders(tmp_path: Path, model_args: list[str]) -> None:
    clip = write_clip(tmp_path / "clip.mp4", n=3)
    still = tmp_path / "clip.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(still)
    code, _, err = run(["gradcam", str(still), str(clip), *model_args, "--out", str(tmp_path / "o")])
    assert code == 0, err
    assert (tmp_path / "o" / "clip" / "gradcam.pdf").is_file()
    assert (tmp_path / "o" / "clip-2" / "gradcam.mp4").is_file()
    assert not (tmp_path / "o" / "clip" / "gradcam.mp4").exists()


def test_frame_options_are_checked(tmp_path: Path, model_args: list[str]) -> None:
    for option in ("--every", "--max-frames"):
        code, _, err = run(["deconv", str(tmp_path / "x.mp4"), *model_args, option, "0"])
        assert code == 2 and option in err
