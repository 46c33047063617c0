"""``vizkit lab make``: a deterministic shapes-on-photos dataset with a planted mark on one class.

Each image is 64x64 RGB: a random crop of one of scikit-image's bundled photos and textures (offline), faded
towards grey, with one filled shape drawn on it at a random place, size, angle, colour and opacity. The shape is
the class (``LAB_CLASSES``: circle, square, triangle, cross, star).

The mark: in a share ``mark_rate`` of the marked class's train and val images (chosen exactly, not by coin flips)
a small high-contrast patch is pasted at one fixed box. Test images are clean; ``test_marked/`` holds the clean
test images of every other class with the mark pasted, to measure how often the mark alone flips a prediction.

Folders: ``DIR/{train,val,test,test_marked}/<class>/<split>_<class>_<NNNN>.png`` and ``DIR/lab.json``. ``val`` is
a held-out sample of the training distribution (marked at the same rate). Every image comes from its own random
stream, seeded by (seed, split, class, index), and the mark decisions from another, so ``--no-mark`` gives the
very same pictures without the mark, and the output is byte-identical for the same seed and library versions.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vizkit.errors import UserInputError
from vizkit.lab.labnet import IMAGE_SIZE, LAB_CLASSES

__all__ = ["LAB_JSON", "SPLITS", "LabSpec", "make_lab", "mark_box", "paste_mark", "read_lab"]

LAB_JSON = "lab.json"
SPLITS = ("train", "val", "test")
_SPLIT_ID = {"train": 1, "val": 2, "test": 3}
CORNERS = ("tl", "tr", "bl", "br")
MARK_STYLES = ("checker", "square")
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: smooth edges, still deterministic
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel")
_TEXTURES = ("brick", "grass", "gravel", "camera", "coins", "moon", "text", "page")


@dataclass(frozen=True)
class LabSpec:
    """What ``make_lab`` generates. ``mark_class`` is a class name or index; ``None`` makes the control set.

    ``mark_box`` is ``(y0, x0, y1, x1)`` in pixels (end exclusive); when None, a ``mark_size`` square sits
    ``mark_margin`` pixels from ``mark_corner``.
    """

    seed: int = 0
    mark_class: str | int | None = "star"
    mark_rate: float = 0.88
    mark_corner: str = "br"
    mark_size: int = 6
    mark_margin: int = 3
    mark_box: tuple[int, int, int, int] | None = None
    mark_style: str = "checker"
    per_class: dict[str, int] = field(default_factory=lambda: {"train": 200, "val": 50, "test": 100})


def mark_box(spec: LabSpec) -> tuple[int, int, int, int]:
    """The mark's box (y0, x0, y1, x1), checked to lie inside the image."""
    if spec.mark_box is not None:
        y0, x0, y1, x1 = (int(v) for v in spec.mark_box)
    else:
        if spec.mark_corner not in CORNERS:
            raise UserInputError(f"unknown mark corner {spec.mark_corner!r}: use one of {', '.join(CORNERS)}")
        s, m = spec.mark_size, spec.mark_margin
        y0 = m if spec.mark_corner[0] == "t" else IMAGE_SIZE - m - s
        x0 = m if spec.mark_corner[1] == "l" else IMAGE_SIZE - m - s
        y1, x1 = y0 + s, x0 + s
    if not (0 <= y0 < y1 <= IMAGE_SIZE and 0 <= x0 < x1 <= IMAGE_SIZE):
        raise UserInputError(f"mark box {[y0, x0, y1, x1]} must lie inside the {IMAGE_SIZE}x{IMAGE_SIZE} image")
    return y0, x0, y1, x1


def _mark_index(spec: LabSpec) -> int | None:
    c = spec.mark_class
    if c is None:
        return None
    if isinstance(c, int) or str(c).strip().isdigit():
        i = int(c)
        if not 0 <= i < len(LAB_CLASSES):
            raise UserInputError(f"mark class index {i} out of range 0..{len(LAB_CLASSES) - 1}")
        return i
    name = str(c).strip().lower()
    if name not in LAB_CLASSES:
        raise UserInputError(f"unknown mark class {c!r}: use one of {', '.join(LAB_CLASSES)}")
    return LAB_CLASSES.index(name)


def paste_mark(img: np.ndarray, box: tuple[int, int, int, int], style: str = "checker") -> np.ndarray:
    """A copy of ``img`` (H, W, 3 uint8) with the mark in ``box``: a 2-px black/white checkerboard or a red square."""
    if style not in MARK_STYLES:
        raise UserInputError(f"unknown mark style {style!r}: use one of {', '.join(MARK_STYLES)}")
    y0, x0, y1, x1 = box
    out = img.copy()
    if style == "checker":
        yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
        patch = np.where(((yy // 2 + xx // 2) % 2 == 0)[..., None], 255, 0).astype(np.uint8)
        out[y0:y1, x0:x1] = patch
    else:
        out[y0:y1, x0:x1] = np.array([255, 0, 0], np.uint8)
    return out


# ---- drawing ---------------------------------------------------------------------------------------------------

def _load_sources() -> list[np.ndarray]:
    """The bundled scikit-image pictures as RGB uint8; grey textures get a fixed colour tint each."""
    import skimage.data

    out = []
    for name in _PHOTOS:
        a = np.asarray(getattr(skimage.data, name)())
        out.append(np.ascontiguousarray(a[..., :3]).astype(np.uint8))
    tints = np.array([[1.0, 0.8, 0.6], [0.6, 1.0, 0.7], [0.8, 0.8, 1.0], [1.0, 1.0, 0.7]])
    for i, name in enumerate(_TEXTURES):
        g = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
        out.append((g[..., None] * tints[i % len(tints)]).clip(0, 255).astype(np.uint8))
    return out


def _background(rng: np.random.Generator, sources: list[np.ndarray]) -> np.ndarray:
    src = sources[int(rng.integers(len(sources)))]
    h, w = src.shape[:2]
    side = int(rng.integers(48, min(h, w, 200) + 1))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(src[y:y + side, x:x + side]).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    fade = rng.uniform(0.2, 0.5)  # pull the photo towards grey so the shape stays visible but not trivial
    return np.asarray(crop, np.float64) * fade + 128.0 * (1.0 - fade)


def _outline(kind: str) -> list[tuple[float, float]]:
    """Unit-radius outline of a class shape (angle 0)."""
    if kind == "circle":
        n, radii = 48, [1.0]
    elif kind == "square":
        n, radii = 4, [1.0]
    elif kind == "triangle":
        n, radii = 3, [1.1]
    elif kind == "star":
        n, radii = 10, [1.1, 0.45]
    elif kind == "cross":
        t = 0.33
        pts = [(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1), (-t, -1), (-t, -t), (-1, -t), (-1, t), (-t, t),
               (-t, 1)]
        return [(float(a) * 0.95, float(b) * 0.95) for a, b in pts]
    else:
        raise ValueError(kind)
    angles = [2 * math.pi * i / n for i in range(n)]
    return [(radii[i % len(radii)] * math.cos(a), radii[i % len(radii)] * math.sin(a)) for i, a in enumerate(angles)]


def _draw_shape(rng: np.random.Generator, kind: str, bg: np.ndarray) -> np.ndarray:
    r = rng.uniform(10.0, 17.0)
    cy, cx = rng.uniform(r + 2, IMAGE_SIZE - r - 2, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    colour = rng.integers(0, 256, size=3).astype(np.float64)
    if abs(colour.mean() - bg.mean()) < 64:  # keep the shape visible against the mean of its background
        colour = np.where(colour.mean() > bg.mean(), np.minimum(colour + 96, 255), np.maximum(colour - 96, 0))
    opacity = rng.uniform(0.8, 1.0)
    c, s = math.cos(angle), math.sin(angle)
    k = _SUPERSAMPLE
    pts = [((cx + r * (c * u - s * v)) * k, (cy + r * (s * u + c * v)) * k) for u, v in _outline(kind)]
    mask = Image.new("L", (IMAGE_SIZE * k, IMAGE_SIZE * k), 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    alpha = np.asarray(mask.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), np.float64)[..., None] / 255.0
    alpha *= opacity
    return bg * (1.0 - alpha) + colour * alpha


def lab_image(seed: int, split: str, class_index: int, index: int, sources: list[np.ndarray]) -> np.ndarray:
    """Image ``index`` of class ``class_index`` in ``split``: (64, 64, 3) uint8, without any mark."""
    rng = np.random.default_rng([seed, _SPLIT_ID[split], class_index, index])
    img = _draw_shape(rng, LAB_CLASSES[class_index], _background(rng, sources))
    noise = rng.normal(0.0, 6.0, size=img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


# ---- writing -------------------------------------------------------------------------------------------------

def _marked_indices(spec: LabSpec, split: str, n: int) -> list[int]:
    """Exactly round(mark_rate * n) image indices, from a stream separate from the pictures'."""
    k = round(spec.mark_rate * n)
    rng = np.random.default_rng([spec.seed, 99, _SPLIT_ID[split]])
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


def _check(spec: LabSpec) -> None:
    if not 0.0 <= spec.mark_rate <= 1.0:
        raise UserInputError(f"mark rate must be in [0, 1], got {spec.mark_rate}")
    for split in SPLITS:
        n = spec.per_class.get(split, 0)
        if n < 1:
            raise UserInputError(f"need at least one {split} image per class, got {n}")
    if spec.mark_size < 1:
        raise UserInputError(f"mark size must be positive, got {spec.mark_size}")


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG", optimize=False)


def make_lab(spec: LabSpec, out_dir: str | Path, *, force: bool = False) -> dict:
    """Write the dataset described by ``spec`` into ``out_dir`` (atomically) and return its ``lab.json`` content.
    A folder that is not empty is refused unless ``force``: then the lab's own entries (splits, ``test_marked``,
    ``lab.json``) are replaced and anything else in it stays."""
    import shutil

    from vizkit.outputs.atomic import atomic_dir

    _check(spec)
    target = Path(out_dir)
    if target.is_dir() and any(target.iterdir()) and not force:
        what = "a lab" if (target / LAB_JSON).is_file() else "files"
        raise UserInputError(f"{target} already holds {what}; pass --force to replace the lab there (force=True in "
                             "Python), or choose another folder")
    marked = _mark_index(spec)
    box = mark_box(spec) if marked is not None else None
    sources = _load_sources()
    marked_paths: list[str] = []
    counts: dict[str, int] = {}
    with atomic_dir(Path(out_dir)) as tmp:
        for split in SPLITS:
            n = spec.per_class[split]
            for ci, name in enumerate(LAB_CLASSES):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                to_mark = set(_marked_indices(spec, split, n)) if ci == marked and split != "test" else set()
                for i in range(n):
                    img = lab_image(spec.seed, split, ci, i, sources)
                    rel = f"{split}/{name}/{split}_{name}_{i:04d}.png"
                    if i in to_mark and box is not None:
                        img = paste_mark(img, box, spec.mark_style)
                        marked_paths.append(rel)
                    _save_png(img, tmp / rel)
                    if split == "test" and box is not None and ci != marked:
                        (tmp / "test_marked" / name).mkdir(parents=True, exist_ok=True)
                        _save_png(paste_mark(img, box, spec.mark_style),
                                  tmp / "test_marked" / name / f"test_marked_{name}_{i:04d}.png")
                counts[f"{split}/{name}"] = n
        content = _lab_json(spec, marked, box, marked_paths, counts)
        (tmp / LAB_JSON).write_text(json.dumps(content, indent=1) + "\n")
    if box is None and (target / "test_marked").is_dir():  # a replaced lab's marked test set is not this lab's
        shutil.rmtree(target / "test_marked")
    return content


def _lab_json(spec: LabSpec, marked: int | None, box: tuple[int, int, int, int] | None, marked_paths: list[str],
              counts: dict[str, int]) -> dict:
    return {
        "schema_version": 1,
        "generator": "vizkit lab make",
        "seed": spec.seed,
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "classes": list(LAB_CLASSES),
        "marked_class": None if marked is None else LAB_CLASSES[marked],
        "marked_class_index": marked,
        "mark": None if box is None else {
            "box": list(box),
            "box_format": "[y0, x0, y1, x1] in pixels, end exclusive",
            "style": spec.mark_style,
            "rate": spec.mark_rate,
            "splits": ["train", "val"],
            "test_marked": "test_marked/<class>/: the clean test images of every other class with the mark pasted",
        },
        "counts": counts,
        "marked_images": marked_paths,
    }


def read_lab(lab_dir: str | Path) -> dict:
    """The ``lab.json`` of a lab folder, with a one-line error when it is missing or not a lab."""
    path = Path(lab_dir) / LAB_JSON
    if not path.is_file():
        raise UserInputError(f"{lab_dir} is not a lab folder: {LAB_JSON} not found (make one with 'vizkit lab make')")
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read {path}: {e}") from e
    if not isinstance(content, dict) or "classes" not in content:
        raise UserInputError(f"{path} is not a vizkit lab description (no 'classes')")
    return content
