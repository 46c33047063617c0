"""Read image files robustly: always an RGB ``PIL.Image`` with EXIF orientation applied, or one clear ImageError.

Conversions:
- grayscale ``L``/``1`` and ``CMYK``/``YCbCr``: Pillow's conversion to RGB;
- anything with transparency (``RGBA``, ``LA``, ``PA``, palette or grayscale with a transparent colour):
  composited onto white;
- 16/32-bit integer images (``I;16``, ``I;16B``, ``I``): scaled to 8 bit by the file's real bit depth (TIFF
  BitsPerSample, else 16 for 16-bit modes and PNG) -- full scale maps to 255, nothing is clipped;
- 32-bit float ``F``: [0, 1] data scaled by 255, other ranges min-max scaled.

Failures (missing, empty, not an image, truncated, decompression bomb over ``PIL.Image.MAX_IMAGE_PIXELS``) raise
:class:`vizkit.errors.ImageError` naming the file. ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never changed.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vizkit.errors import ImageError

__all__ = ["load_image", "sample_images", "to_rgb"]

# Errors Pillow raises on corrupt or truncated data (SyntaxError: broken PNG chunks; EOFError: short reads).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)
_TIFF_BITS_PER_SAMPLE = 258


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` and return a fully decoded RGB image with EXIF orientation applied."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, not an image file")
    if p.stat().st_size == 0:
        raise ImageError(f"image file is empty (0 bytes): {p}")
    try:
        with warnings.catch_warnings():
            # A decompression bomb is an error here, not a warning (limit: PIL.Image.MAX_IMAGE_PIXELS).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.load()
                bits = _stored_bit_depth(img)  # read before exif_transpose: its copy drops format and tags
                return to_rgb(ImageOps.exif_transpose(img), source=p, bits=bits)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(
            f"image too large: {p} exceeds the {Image.MAX_IMAGE_PIXELS:,}-pixel decompression-bomb limit "
            f"({e}); raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageError(f"not an image file (unknown or unsupported format): {p}") from e
    except ImageError:
        raise
    except _DECODE_ERRORS as e:
        raise ImageError(f"image file is truncated or corrupt: {p} ({e})") from e


def to_rgb(img: Image.Image, source: str | os.PathLike = "<image>", bits: int | None = None) -> Image.Image:
    """Convert a decoded image of any Pillow mode to RGB (see the module docstring for the rules).

    ``bits``: the file's bit depth for 16/32-bit integer images; ``None`` reads it from ``img`` or the data.
    """
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(img, bits)).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:  # e.g. LAB, which Pillow cannot convert directly
        raise ImageError(f"cannot convert {source} from colour mode {mode} to RGB ({e})") from e


def _high_depth_to_uint8(img: Image.Image, bits: int | None) -> np.ndarray:
    """Scale a 16/32-bit integer or float grayscale image to uint8 by its real bit depth."""
    arr = np.asarray(img)
    if arr.ndim == 3:  # multi-channel 16-bit modes are rare; use the first channel
        arr = arr[..., 0]
    arr = arr.astype(np.float64)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(arr * 255.0).astype(np.uint8)
        return _minmax(arr, lo, hi)
    if arr.size and arr.min() < 0:
        return _minmax(arr, float(arr.min()), float(arr.max()))
    if bits is None:
        bits = _stored_bit_depth(img) or _data_bit_depth(arr)
    full_scale = float(2**bits - 1)
    return np.round(np.clip(arr, 0, full_scale) * (255.0 / full_scale)).astype(np.uint8)


def _stored_bit_depth(img: Image.Image) -> int | None:
    """Bit depth of a 16/32-bit integer image from its file metadata, or None when the file does not say."""
    if not img.mode.startswith("I"):
        return None
    tag = getattr(img, "tag_v2", None)  # TIFF: BitsPerSample tells 10/12/14-bit data stored in 16 bits
    if tag is not None and _TIFF_BITS_PER_SAMPLE in tag:
        bits = tag[_TIFF_BITS_PER_SAMPLE]
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        if 1 <= bits < 32:  # 32-bit integer storage is rarely full-range data: judge those by their values
            return bits
    if img.mode.startswith("I;16") or img.format == "PNG":
        return 16
    return None


def _data_bit_depth(arr: np.ndarray) -> int:
    """Plain 32-bit "I" without metadata: the smallest common depth that holds the data."""
    peak = float(arr.max()) if arr.size else 0.0
    for bits in (16, 24, 32):
        if peak <= 2**bits - 1:
            return bits
    return 32


def _minmax(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def sample_images() -> list[Path]:
    """Three real photos shipped inside dependencies: Grace Hopper (matplotlib), chelsea and coffee (skimage)."""
    import matplotlib.cbook
    import skimage.data

    data_dir = Path(skimage.data.data_dir)
    paths = [
        Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        data_dir / "chelsea.png",
        data_dir / "coffee.png",
    ]
    for p in paths:
        if not p.is_file():
            raise ImageError(f"sample image missing: {p} (reinstall matplotlib / scikit-image)")
    return paths
