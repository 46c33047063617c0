"""Marks for the lab family: a patch, a text tag, a frame along the border, a large transparent watermark, a
colour cast. Each is a deterministic function of its ``MarkSpec`` (never of the image), so every marked image
carries the very same pixels where the mark is opaque, as a real watermark or a scanner's border would.

``apply_mark(img, spec)`` blends the mark into an (H, W, 3) uint8 image; ``mark_mask(spec, hw)`` is where it
is (the ground truth of the family's benchmark: the pixels whose alpha is above zero).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vizkit.errors import UserInputError

STYLES = ("patch", "text", "frame", "watermark", "cast")
PLACES = ("tl", "tr", "bl", "br")

__all__ = ["PLACES", "STYLES", "MarkSpec", "apply_mark", "mark_alpha", "mark_mask"]


@dataclass(frozen=True)
class MarkSpec:
    """``style`` (``STYLES``); ``place`` a corner for patch and text, the sides of a frame as a string of
    t/b/l/r, ignored by watermark and cast; ``size`` the patch side or the text height in pixels, the frame's
    width; ``alpha`` the opacity (1 opaque); ``colour`` RGB 0..255 (the patch is a checker of it and black)."""

    style: str = "patch"
    place: str = "br"
    size: int = 4
    alpha: float = 1.0
    colour: tuple[int, int, int] = (255, 255, 255)
    margin: int = 1
    word: str = "AB"


def _corner(place: str, h: int, w: int, bh: int, bw: int, margin: int) -> tuple[int, int]:
    if place not in PLACES:
        raise UserInputError(f"unknown mark place {place!r}: use one of {', '.join(PLACES)}")
    y = margin if place[0] == "t" else h - margin - bh
    x = margin if place[1] == "l" else w - margin - bw
    return y, x


def _text(word: str, height: int, width: int) -> np.ndarray:
    """The word in PIL's built-in bitmap font, scaled to (height, width) by nearest neighbour, in [0, 1]."""
    font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), word, font=font)
    canvas = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), word, fill=255, font=font)
    return np.asarray(canvas.resize((width, height), Image.Resampling.NEAREST), np.float64) / 255.0


def mark_alpha(spec: MarkSpec, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (H, W) in [0, 1], colour (H, W, 3)) of the mark: the image becomes ``img * (1 - a) + colour * a``."""
    h, w = hw
    a = np.zeros((h, w))
    colour = np.broadcast_to(np.asarray(spec.colour, np.float64), (h, w, 3)).copy()
    s = spec.size
    if spec.style == "patch":
        y, x = _corner(spec.place, h, w, s, s, spec.margin)
        a[y:y + s, x:x + s] = 1.0
        checker = (np.add.outer(np.arange(s), np.arange(s)) % 2 == 0)
        colour[y:y + s, x:x + s] *= checker[..., None]
    elif spec.style == "text":
        tw = max(2 * s, 4)
        y, x = _corner(spec.place, h, w, s, tw, spec.margin)
        a[y:y + s, x:x + tw] = _text(spec.word, s, tw)
    elif spec.style == "frame":
        sides = spec.place if set(spec.place) <= set("tblr") and spec.place else "tblr"
        for side in sides:
            sl = {"t": np.s_[:s, :], "b": np.s_[h - s:, :], "l": np.s_[:, :s], "r": np.s_[:, w - s:]}[side]
            a[sl] = 1.0
    elif spec.style == "watermark":
        th, tw = max(h // 3, s), w - 4
        y0, x0 = (h - th) // 2, 2
        a[y0:y0 + th, x0:x0 + tw] = _text(spec.word, th, tw)
    elif spec.style == "cast":
        a[:] = 1.0
    else:
        raise UserInputError(f"unknown mark style {spec.style!r}: use one of {', '.join(STYLES)}")
    return a * float(spec.alpha), colour


def apply_mark(img: np.ndarray, spec: MarkSpec) -> np.ndarray:
    """A copy of ``img`` (H, W, 3 uint8) with the mark blended in."""
    a, colour = mark_alpha(spec, img.shape[:2])
    out = img.astype(np.float64) * (1 - a[..., None]) + colour * a[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mark_mask(spec: MarkSpec, hw: tuple[int, int]) -> np.ndarray:
    """Where the mark changes pixels: (H, W) bool."""
    return mark_alpha(spec, hw)[0] > 0
