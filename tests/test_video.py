"""Video through gradcam / activations / deconv: a synthetic clip in which a bright blob moves left to right, a
fixed-weight model whose class-0 evidence is brightness, so Grad-CAM's peak must follow the blob frame by frame."""
from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_render import pdf_page_count  # page count parsed from the file itself
from torch import nn

from vizkit.errors import UserInputError, VideoError
from vizkit.jobs.video_steps import _Keeper, run_video
from vizkit.load import LoadedModel, Preprocessing
from vizkit.load.video import frame_input, is_video, iter_frames, probe_video
from vizkit.outputs.npz_stream import NpzStream
from vizkit.render.video_stream import VideoStreamWriter
from vizkit.testing.model_state import hook_count, state_fingerprint

SIDE, FRAMES, FPS, SIGMA, CELL = 64, 12, 10.0, 4.0, 4


def centres(n: int = FRAMES) -> list[tuple[float, float]]:
    """(y, x) of the blob per frame: left to right, drifting down a little."""
    return [(24.0 + 1.5 * i, 8.0 + 4.3 * i) for i in range(n)]


def write_clip(path: Path, n: int = FRAMES, side: int = SIDE) -> Path:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (side, side))
    for cy, cx in centres(n):
        blob = 20 + 225 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * SIGMA**2))
        writer.write(np.repeat(np.round(blob).astype(np.uint8)[:, :, None], 3, axis=2))
    writer.release()
    return path


def write_mjpeg(path: Path) -> Path:
    """Two 32 x 24 frames, pure red in OpenCV's BGR order."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (32, 24))
    for _ in range(2):
        writer.write(np.dstack([np.zeros((24, 32)), np.zeros((24, 32)), np.full((24, 32), 250)]).astype(np.uint8))
    writer.release()
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


def brightness_model() -> LoadedModel:
    """Class 0 = mean brightness above the normalised mid-grey, class 1 its negative; layer '2' is a 16x16 grid."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.1, 0.2, 0.3]).view(2, 3, 1, 1))
        conv.bias.zero_()
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        head.bias.zero_()
    model = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(CELL), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    prep = Preprocessing(resize=SIDE, crop=SIDE, mean=(0.5,) * 3, std=(0.5,) * 3)
    return LoadedModel(name="brightness", model=model.eval(), preprocessing=prep, class_names=["bright", "dark"],
                       weights="fixed by the test", weights_sha256=None, pretrained=None)


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_gradcam_peak_follows_the_object(clip: Path, tmp_path: Path) -> None:
    loaded = brightness_model()
    model = loaded.model
    state = state_fingerprint(model)
    out = run_video(loaded, clip, "gradcam", tmp_path / "out", layers=["2"], targets=["0"], batch_size=5)
    with np.load(out.arrays) as z:
        assert z["frame_index"].tolist() == list(range(FRAMES))
        np.testing.assert_allclose(z["time"], np.arange(FRAMES) / FPS)
        peaks = z["peak"][:, 0]  # (frames, targets, 2): the first (only) target's (y, x)
        assert z["cam"].shape == (FRAMES, 1, SIDE, SIDE) and z["cam_raw"].shape == (FRAMES, 1, 16, 16)
    truth = np.array(centres())
    assert np.all(np.abs(peaks - truth) <= CELL), (peaks, truth)  # within one cell of the 16x16 grid, every frame
    assert np.all(np.diff(peaks[:, 1]) > 0)  # and it moves right with the blob
    assert len(read_all(out.video)) == FRAMES
    assert read_all(out.video)[0].shape == (SIDE, SIDE, 3)
    assert pdf_page_count(out.sheet) == 1 and out.manifest.is_file()
    assert model.training is False and hook_count(model) == 0
    assert all(torch.equal(state[k], v) for k, v in state_fingerprint(model).items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_every_and_max_frames_choose_frames(clip: Path, tmp_path: Path) -> None:
    assert [f.index for f in iter_frames(clip, every=3)] == [0, 3, 6, 9]
    assert [f.index for f in iter_frames(clip, every=3, max_frames=2)] == [0, 3]
    assert [f.index for f in iter_frames(clip, max_frames=5)] == [0, 1, 2, 3, 4]
    out = run_video(brightness_model(), clip, "gradcam", tmp_path / "out", layers=["2"], every=2, max_frames=4)
    with np.load(out.arrays) as z:
        assert z["frame_index"].tolist() == [0, 2, 4, 6]
    assert len(read_all(out.video)) == 4
    assert probe_video(out.video).fps == pytest.approx(FPS / 2)
    with pytest.raises(UserInputError, match="--every"):
        list(iter_frames(clip, every=0))


def test_frames_are_rgb_and_preprocessed_like_still_images(tmp_path: Path) -> None:
    path = write_mjpeg(tmp_path / "red.avi")
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (32, 24, 2) and is_video(path)
    frame = next(iter_frames(path))
    assert frame.rgb.shape == (24, 32, 3) and frame.rgb[..., 0].mean() > 200 and frame.rgb[..., 2].mean() < 30
    from PIL import Image

    from vizkit.jobs.context import RunContext

    loaded = brightness_model()
    png = tmp_path / "frame.png"
    Image.fromarray(frame.rgb).save(png)
    torch.testing.assert_close(frame_input(frame.rgb, loaded.preprocessing),
                               RunContext.from_loaded(loaded).input(png), rtol=0, atol=0)


def test_unreadable_videos_give_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    for path, words in [(bad, "cannot open"), (tmp_path / "missing.mp4", "not found")]:
        with pytest.raises(VideoError, match=words) as err:
            run_video(brightness_model(), path, "gradcam", tmp_path / "out", layers=["2"])
        assert "\n" not in str(err.value) and err.value.exit_code == 2
    assert not (tmp_path / "out" / "bad").exists()
    empty = write_mjpeg(tmp_path / "empty.avi")
    data = bytearray(empty.read_bytes())
    first = data.find(b"00dc")  # the first frame chunk: zero every frame's data, keep the container
    data[first + 8:len(data) - 200] = bytes(len(data) - 200 - first - 8)
    empty.write_bytes(bytes(data))
    with pytest.raises(VideoError, match=r"no frame of .* could be decoded") as err:
        list(iter_frames(empty))
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="--max-frames"):
        run_video(brightness_model(), bad, "gradcam", tmp_path / "out", max_frames=0)
    assert not is_video(tmp_path / "notes.txt") and not is_video(bad.with_suffix(".png"), probe=True)


def test_activations_and_deconv_videos(clip: Path, tmp_path: Path) -> None:
    loaded = brightness_model()
    acts = run_video(loaded, clip, "activations", tmp_path / "out", layers=["1", "2"], top=2, max_frames=5)
    with np.load(acts.arrays) as z:
        assert z["2/maps"].shape == (5, 2, 16, 16)
        assert (z["2/channels"] == z["2/channels"][0]).all()  # each tile follows one unit through the clip
        channel = int(z["2/channels"][0, 0])
        assert np.isclose(z["2/max"][:, 0], z["2/maps"][:, 0].max(axis=(1, 2))).all()
    frames = read_all(acts.video)
    assert len(frames) == 5 and frames[0].shape[1] > SIDE * 2
    assert channel in (0, 1)
    dec = run_video(loaded, clip, "deconv", tmp_path / "out", layers=["1"], top_k=2, max_frames=3)
    with np.load(dec.arrays) as z:
        assert z["1/channels"].shape == (3, 2) and z["1/positions"].shape == (3, 2, 2)
    assert len(read_all(dec.video)) == 3 and dec.folder == acts.folder  # one folder per video, one file set per mode


def test_npz_stream_equals_savez_and_aborts_cleanly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [{"a": rng.normal(size=(3, 4)).astype(np.float32), "i": np.int64(k)} for k in range(7)]
    with NpzStream(tmp_path / "s.npz") as stream:
        for row in rows:
            stream.append(row)
    with np.load(tmp_path / "s.npz") as z:
        np.testing.assert_array_equal(z["a"], np.stack([r["a"] for r in rows]))
        np.testing.assert_array_equal(z["i"], np.arange(7))
    assert zipfile.ZipFile(tmp_path / "s.npz").namelist() == ["a.npy", "i.npy"]
    with pytest.raises(RuntimeError), NpzStream(tmp_path / "t.npz") as stream:
        stream.append(rows[0])
        raise RuntimeError("stop")
    with pytest.raises(ValueError, match="shape"), NpzStream(tmp_path / "u.npz") as stream:
        stream.append({"a": np.zeros(2)})
        stream.append({"a": np.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_video_writer_is_atomic(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), VideoStreamWriter(tmp_path / "v.mp4", 10) as video:
        video.write(np.zeros((31, 33, 3), np.uint8))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with VideoStreamWriter(tmp_path / "v.mp4", 0) as video:  # unknown fps: the default
        for k in range(3):
            video.write(np.full((31, 33, 3), 60 * k, np.uint8))
        with pytest.raises(ValueError, match="frame 3"):
            video.write(np.zeros((8, 8, 3), np.uint8))
    frames = read_all(tmp_path / "v.mp4")
    assert [f.shape for f in frames] == [(32, 34, 3)] * 3  # odd sizes padded to even
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_contact_sheet_keeps_evenly_spaced_frames() -> None:
    for n, limit in [(5, 12), (12, 12), (13, 12), (300, 12), (1000, 7)]:
        keeper: _Keeper[int] = _Keeper(limit)
        for k in range(n):
            keeper.add(k, k)
        kept = keeper.kept()
        assert kept[0] == 0 and len(kept) <= limit and len(kept) >= min(n, limit // 2 + 1)
        assert len(set(np.diff(kept).tolist())) <= 1  # evenly spaced


class FailsOnCall(nn.Module):
    """Identity until its ``fail_at``-th call, then raises (a model that breaks in the middle of a clip)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("broken in the middle")
        return x


def test_failure_mid_clip_leaves_no_output_and_the_model_as_it_was(clip: Path, tmp_path: Path) -> None:
    loaded = brightness_model()
    model = nn.Sequential(*loaded.model[:3], FailsOnCall(fail_at=4), *loaded.model[3:])
    model.train()
    model[1].eval()  # mixed training flags must come back as they were, module by module
    flags = [m.training for m in model.modules()]
    state = state_fingerprint(model)
    object.__setattr__(loaded, "model", model)
    with pytest.raises(RuntimeError, match="broken in the middle"):
        run_video(loaded, clip, "gradcam", tmp_path / "out", layers=["2"], targets=["0"], batch_size=2)
    assert model[3].calls == 4  # it failed after frames had been written, not before
    assert [m.training for m in model.modules()] == flags and hook_count(model) == 0
    assert all(torch.equal(state[k], v) for k, v in state_fingerprint(model).items())
    assert all(p.grad is None for p in model.parameters())
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
