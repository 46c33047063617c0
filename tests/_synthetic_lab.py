"""A synthetic shortcut lab for the tests: shapes on noise, one class with a planted mark, a tiny max-pool CNN.

Independent of ``vizkit lab`` on purpose: the mark's class, place, size and pattern are parameters, so the tests
run the detector on shortcuts it was not developed on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SIZE = 32


@dataclass(frozen=True)
class Mark:
    cls: int = 1
    y: int = 2
    x: int = 2
    size: int = 4
    rate: float = 0.9  # share of that class's images carrying it
    pattern: str = "checker"  # checker: 1-pixel black/white cells; ring: a white square with a black centre

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y, self.x, self.y + self.size, self.x + self.size


def _shape(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A soft object (disc, square or cross), random place and size, on a 32x32 canvas in [0, 1]."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    r = rng.uniform(3, 6)
    cy, cx = rng.uniform(9, SIZE - 9, size=2)
    if cls == 0:
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
    elif cls == 1:
        m = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    else:
        m = ((np.abs(yy - cy) <= 1.5) & (np.abs(xx - cx) <= r)) | ((np.abs(xx - cx) <= 1.5) & (np.abs(yy - cy) <= r))
    return m.astype(np.float32)


def make_images(n_per_class: int, mark: Mark | None, seed: int, classes: int = 3
                ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(x (N, 3, 32, 32) in [-1, 1], labels (N,), marked (N,) bool)."""
    rng = np.random.default_rng(seed)
    xs, ys, marked = [], [], []
    for cls in range(classes):
        for _ in range(n_per_class):
            img = rng.uniform(0.0, 0.6, size=(3, SIZE, SIZE)).astype(np.float32)
            colour = rng.uniform(0.5, 1.0, size=(3, 1, 1)).astype(np.float32)
            shape = _shape(cls, rng)
            img = img * (1 - shape) + colour * shape
            has = mark is not None and cls == mark.cls and rng.random() < mark.rate
            if has:
                img = stamp(img, mark)
            xs.append(img)
            ys.append(cls)
            marked.append(has)
    x = torch.from_numpy(np.stack(xs)) * 2 - 1
    return x, torch.tensor(ys), np.array(marked)


def stamp(img: np.ndarray, mark: Mark) -> np.ndarray:
    """The mark's pattern at its place."""
    img = img.copy()
    s = mark.size
    if mark.pattern == "checker":
        tag = (np.add.outer(np.arange(s), np.arange(s)) % 2).astype(np.float32)
    else:
        tag = np.ones((s, s), np.float32)
        tag[s // 3:s - s // 3, s // 3:s - s // 3] = 0.0
    img[:, mark.y:mark.y + s, mark.x:mark.x + s] = tag
    return img


def tiny_cnn(classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, classes))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 12, seed: int = 0) -> nn.Module:
    """Seeded, single-threaded and with deterministic algorithms (``vizkit.lab.train``'s context), so the trained
    weights, and the verdicts the tests assert on them, are the same whatever the machine's thread count."""
    from vizkit.lab.train import _deterministic

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    with _deterministic(1):
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 32):
                idx = order[i:i + 32]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    return model.eval()


def write_folders(root, x: torch.Tensor, y: torch.Tensor, marked: np.ndarray) -> list[str]:
    """PNG files root/<class>/img_NNNN.png (class folders named by index); returns the marked files' paths."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    out = []
    pixels = ((x.permute(0, 2, 3, 1).numpy() + 1) / 2 * 255).round().clip(0, 255).astype(np.uint8)
    for i, (img, cls) in enumerate(zip(pixels, y.tolist(), strict=True)):
        folder = root / str(cls)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:04d}.png"
        Image.fromarray(img).save(path)
        if marked[i]:
            out.append(str(path))
    return out


def folder_tensors(root, prep) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a class-folder tree exactly as vizkit's loader preprocesses it, with its folder label."""
    from vizkit.load.dataset import ImageDataset, list_images

    images = list_images(root)
    data = ImageDataset(images, prep)
    xs = [data[i][0] for i in range(len(data))]
    classes = [int(c) for c in images.classes or []]
    return torch.stack(xs), torch.tensor([classes[lab] for lab in images.labels or []])
