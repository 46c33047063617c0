"""Read video files with OpenCV, one frame at a time: ``iter_frames(path, every=, max_frames=)`` yields
``VideoFrame(index, time, rgb)`` lazily, so a clip of any length is read in constant memory.

A frame becomes the model's input exactly as a still image does: ``frame_input(frame.rgb, prep)`` is
``preprocess(PIL image, prep)`` (resize of the shorter side, centre crop, normalise). Files OpenCV cannot open,
files without one decodable frame (a codec missing from OpenCV's FFmpeg build) and missing files raise
:class:`vizkit.errors.VideoError` with one line naming the file and the way out.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vizkit.errors import UserInputError, VideoError
from vizkit.load.preprocessing import Preprocessing, preprocess

__all__ = ["VIDEO_EXTENSIONS", "VideoFrame", "VideoInfo", "check_selection", "frame_input", "is_video", "iter_frames",
           "probe_video"]

#: Containers treated as video by their name alone (GIF stays an image: Pillow reads its first frame).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".3gp", ".ogv", ".mts", ".ts"})
_CONVERT = "convert it with: ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4"


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frames per second (0.0 when unknown), frame size, and the frame count (-1 when
    the container does not say; some containers only estimate it)."""

    path: Path
    fps: float
    width: int
    height: int
    frame_count: int
    fourcc: str


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its 0-based index in the file, its time in seconds, and (H, W, 3) uint8 RGB pixels."""

    index: int
    time: float
    rgb: np.ndarray


def is_video(path: str | os.PathLike, *, probe: bool = False) -> bool:
    """True for a file with a video extension; with ``probe``, also for any other file that Pillow cannot read
    as an image but OpenCV opens with more than one frame."""
    p = Path(path)
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    if not probe or not p.is_file():
        return False
    try:
        with Image.open(p):
            return False
    except (OSError, ValueError, SyntaxError):
        pass
    try:
        return probe_video(p).frame_count > 1
    except VideoError:
        return False


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open ``path`` and read its properties (no frame is decoded)."""
    with _capture(Path(path)) as cap:
        return _info(Path(path), cap)


def iter_frames(path: str | os.PathLike, *, every: int = 1, max_frames: int | None = None
                ) -> Iterator[VideoFrame]:
    """Frames 0, every, 2*every, ... of ``path`` as RGB, at most ``max_frames`` of them, decoded one at a time.

    Frames in between are grabbed but not converted. Raises VideoError before yielding anything when the file
    cannot be opened or its first frame cannot be decoded.
    """
    check_selection(every, max_frames)
    import cv2

    p = Path(path)
    with _capture(p) as cap:
        info = _info(p, cap)
        index, yielded = 0, 0
        while max_frames is None or yielded < max_frames:
            if index % every == 0:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                seconds = index / info.fps if info.fps > 0 else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield VideoFrame(index, float(seconds), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yielded += 1
            elif not cap.grab():
                break
            index += 1
        if yielded == 0:
            raise VideoError(f"no frame of {p} could be decoded (codec {info.fourcc or 'unknown'} is not in "
                             f"OpenCV's FFmpeg build, or the file is damaged); {_CONVERT}")


def check_selection(every: int, max_frames: int | None) -> None:
    """Refuse a frame selection that chooses nothing, with the option to fix."""
    if every < 1:
        raise UserInputError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise UserInputError(f"--max-frames must be at least 1, got {max_frames}")


def frame_input(rgb: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """One RGB frame -> the model's (1, C, crop, crop) input, by the same steps as a still image."""
    return preprocess(Image.fromarray(np.ascontiguousarray(rgb)), prep)


@contextmanager
def _capture(p: Path) -> Iterator[Any]:
    """An opened ``cv2.VideoCapture``, released on exit. FFmpeg's own log lines are silenced while opening: the
    one-line VideoError says what went wrong."""
    import cv2

    if not p.exists():
        raise VideoError(f"video file not found: {p}")
    if p.is_dir():
        raise VideoError(f"{p} is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {p}")
    key, previous = "OPENCV_FFMPEG_LOGLEVEL", os.environ.get("OPENCV_FFMPEG_LOGLEVEL")
    os.environ[key] = "-8"  # AV_LOG_QUIET, read by OpenCV when it opens a file
    try:
        cap = cv2.VideoCapture(str(p))
    finally:
        if previous is None:
            del os.environ[key]
        else:
            os.environ[key] = previous
    try:
        if not cap.isOpened():
            raise VideoError(f"OpenCV cannot open {p} as a video (unknown container or damaged file); {_CONVERT}")
        yield cap
    finally:
        cap.release()


def _info(p: Path, cap: Any) -> VideoInfo:
    import cv2

    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if code > 0 else ""
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    return VideoInfo(path=p, fps=fps if np.isfinite(fps) and fps > 0 else 0.0,
                     width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     frame_count=count if count > 0 else -1, fourcc=fourcc)
