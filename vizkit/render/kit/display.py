"""Array-to-picture helpers shared by every report page."""
from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]

#: Pixels per inch at which PDF pages embed pictures: matplotlib's figure dpi, at which its PDF backend rasterises
#: everything else. A picture larger than its panel at this density is resampled down before it is drawn; drawn
#: with ``interpolation="none"`` the PDF would otherwise embed every source pixel (45 MB for mine's 80 units x 9).
PICTURE_DPI = 100


def normalise_projection(p: np.ndarray) -> np.ndarray:
    """Map a signed (C, H, W) projection to an (H, W, 3) float32 picture in [0, 1] with grey = 0.

    Each projection is scaled on its own: ``0.5 + 0.5 * p / max|p|``, so the strongest value maps to 0 or 1 and
    p and -p mirror around 0.5. One channel is shown as grey, three as RGB. An all-zero (or non-finite-only)
    projection is flat grey. Non-finite entries are shown as grey too.
    """
    p = np.asarray(p)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[0] not in (1, 3):
        raise ValueError(f"projection must be (C, H, W) with C = 1 or 3, got shape {p.shape}")
    p = np.where(np.isfinite(p), p, 0).astype(np.float64)
    peak = float(np.abs(p).max()) if p.size else 0.0
    scaled = np.full(p.shape, 0.5) if peak == 0.0 else 0.5 + 0.5 * (p / peak)
    picture = np.clip(scaled, 0.0, 1.0).transpose(1, 2, 0)
    if picture.shape[2] == 1:
        picture = np.repeat(picture, 3, axis=2)
    return picture.astype(np.float32)


def is_zero_projection(p: np.ndarray) -> bool:
    p = np.asarray(p)
    return not np.any(np.isfinite(p) & (p != 0))


def check_box(box: Box | None, height: int, width: int) -> Box:
    """The half-open (y0, y1, x0, x1) box, or the whole image for None; ValueError if empty or outside."""
    if box is None:
        return (0, height, 0, width)
    y0, y1, x0, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"box {box} is empty or outside the {height}x{width} image")
    return (y0, y1, x0, x1)


def crop(picture: np.ndarray, box: Box) -> np.ndarray:
    """Crop an (H, W, ...) picture to a checked box."""
    y0, y1, x0, x1 = box
    return picture[y0:y1, x0:x1]


def display_image(image: np.ndarray) -> np.ndarray:
    """The result's display image as (H, W, 3) uint8, whatever its channel layout ((H, W), (H, W, 1), (H, W, 3))."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"display image must be (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def at_shown_size(picture: np.ndarray, width_in: float, height_in: float, dpi: float = PICTURE_DPI) -> np.ndarray:
    """``picture`` (H, W) or (H, W, C) resampled down (Lanczos, antialiased) to the pixels it covers when shown
    ``width_in`` x ``height_in`` inches at ``dpi``, keeping its aspect ratio and dtype; unchanged when it is not
    larger (small pictures are shown with nearest-neighbour pixels, never blurred up)."""
    from PIL import Image

    picture = np.asarray(picture)
    h, w = picture.shape[:2]
    fit = min(math.ceil(width_in * dpi) / w, math.ceil(height_in * dpi) / h)
    if fit >= 1 or picture.ndim not in (2, 3):
        return picture
    size = (max(1, round(w * fit)), max(1, round(h * fit)))
    if picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] in (3, 4):
        return np.asarray(Image.fromarray(np.ascontiguousarray(picture)).resize(size, Image.Resampling.LANCZOS))
    planes = picture[:, :, None] if picture.ndim == 2 else picture
    data = planes.astype(np.float32)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(data[:, :, c]))
                               .resize(size, Image.Resampling.LANCZOS)) for c in range(data.shape[2])], axis=2)
    out = np.clip(out, lo, hi)  # Lanczos rings past the source's range; the colour map's limits must not move
    out = out[:, :, 0] if picture.ndim == 2 else out
    return out.astype(picture.dtype) if np.issubdtype(picture.dtype, np.floating) else np.round(out).astype(
        picture.dtype)
