"""Video outputs, written a frame at a time: ``VideoStreamWriter`` (OpenCV's ``VideoWriter``, atomic) and the
frame makers: ``cam_overlay`` (Grad-CAM over the frame, coloured as on gradcam.pdf), ``activation_grid_frame``
(the frame beside each layer's maps, coloured as on activations.pdf) and ``projection_grid_frame`` (the frame
beside each layer's deconvnet projections, scaled as on deconv.pdf).
"""
from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vizkit.capture.activations import ActivationGrid
from vizkit.errors import UserInputError
from vizkit.outputs.atomic import CommitOnExit
from vizkit.render.activations import coloured_maps
from vizkit.render.gradcam import CAM_ALPHA
from vizkit.render.kit.display import display_image, normalise_projection

__all__ = ["CODEC", "DEFAULT_FPS", "VideoStreamWriter", "activation_grid_frame", "cam_overlay",
           "projection_grid_frame", "tile_grid"]

CODEC = "mp4v"  # MPEG-4 part 2: in every OpenCV build's FFmpeg, plays in common players
DEFAULT_FPS = 25.0  # when the source does not say
GAP = 2  # pixels between tiles


class VideoStreamWriter(CommitOnExit):
    """Write (H, W, 3) uint8 RGB frames to ``path`` with OpenCV; the file appears under its name only on a clean
    ``close()`` (written under a hidden temporary name in the same folder, then ``os.replace``d), and the
    temporary file is removed when the ``with`` block raises. Every frame must have the first frame's size; odd
    sizes are padded with one black row/column (the codec's colour subsampling needs even sizes)."""

    def __init__(self, path: str | os.PathLike, fps: float, codec: str = CODEC) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.codec = codec
        self.tmp = self.path.parent / f".{self.path.stem}.tmp-{secrets.token_hex(4)}{self.path.suffix}"
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width) of the frames given
        self._writer: Any = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        frame = display_image(rgb)
        if self.size is None:
            self.size = frame.shape[:2]
            h, w = (s + s % 2 for s in self.size)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*self.codec), self.fps, (w, h))
            if not self._writer.isOpened():
                self.abort()
                raise UserInputError(f"OpenCV cannot write {self.codec} video to {self.path}; check the folder is "
                                     "writable and that OpenCV was built with FFmpeg")
        elif frame.shape[:2] != self.size:
            raise ValueError(f"frame {self.frames} is {frame.shape[:2]}, the video is {self.size}")
        h, w = self.size
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        self._writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV wants BGR
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self._writer is None:
            raise ValueError(f"no frame was written to {self.path}")
        self._writer.release()
        self._writer = None
        if not self.tmp.is_file() or self.tmp.stat().st_size == 0:
            self.abort()
            raise UserInputError(f"OpenCV wrote nothing to {self.path}; the {self.codec} codec may be missing")
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (safe to call twice)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.tmp.unlink(missing_ok=True)


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = CAM_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8: the CAM (H, W) in [0, 1] through matplotlib's ``jet`` over the image, blended with
    ``alpha`` as gradcam.pdf draws it."""
    from matplotlib import colormaps

    picture = display_image(image).astype(np.float32) / 255.0
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != picture.shape[:2]:
        raise ValueError(f"CAM {cam.shape} does not match the image {picture.shape[:2]}")
    heat = colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3]
    return np.round((1.0 - alpha) * picture * 255.0 + alpha * heat * 255.0).astype(np.uint8)


def tile_grid(tiles: np.ndarray, side: int) -> np.ndarray:
    """(N, h, w, 3) float pictures in [0, 1] -> one (side, side, 3) uint8 square of ceil(sqrt(N)) columns. Tiles
    are enlarged with nearest neighbours (feature-map cells stay sharp) and shrunk by area averaging."""
    import cv2

    n = len(tiles)
    square = np.zeros((side, side, 3), np.uint8)
    if n == 0:
        return square
    cols = math.ceil(math.sqrt(n))
    cell = max(1, (side - GAP * (cols - 1)) // cols)
    top = (side - (math.ceil(n / cols) * (cell + GAP) - GAP)) // 2  # rows centred vertically
    for i, tile in enumerate(np.asarray(tiles)):
        y, x = top + (i // cols) * (cell + GAP), (i % cols) * (cell + GAP)
        pixels = np.round(np.clip(tile, 0.0, 1.0) * 255.0).astype(np.uint8)
        shrink = pixels.shape[0] > cell or pixels.shape[1] > cell  # area averaging keeps single bright pixels
        square[y:y + cell, x:x + cell] = cv2.resize(pixels, (cell, cell),
                                                    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
    return square


def _beside(image: np.ndarray, blocks: Sequence[np.ndarray]) -> np.ndarray:
    picture = display_image(image)
    gap = np.zeros((picture.shape[0], GAP * 2, 3), np.uint8)
    parts = [picture]
    for block in blocks:
        parts += [gap, block]
    return np.concatenate(parts, axis=1)


def activation_grid_frame(image: np.ndarray, grids: Sequence[ActivationGrid], scale: str = "shared") -> np.ndarray:
    """The frame, then one square per layer of its maps (in the grid's channel order), coloured as on
    activations.pdf (``shared``: one scale per layer and frame; ``map``: each map on its own)."""
    side = display_image(image).shape[0]
    return _beside(image, [tile_grid(coloured_maps(g, scale), side) for g in grids])


def projection_grid_frame(image: np.ndarray, projections: Sequence[np.ndarray]) -> np.ndarray:
    """The frame, then one square per layer of its (K, C, H, W) projections, each scaled on its own with grey = 0
    as on deconv.pdf."""
    side = display_image(image).shape[0]
    blocks = [tile_grid(np.stack([normalise_projection(p) for p in layer]) if len(layer) else
                        np.zeros((0, 1, 1, 3)), side) for layer in projections]
    return _beside(image, blocks)
