"""A family of tiny shortcut labs: the shipped lab's pictures (``dataset.lab_image``, shapes on faded photos) at
32 px, four classes, ``labnet`` trained for a few seconds, and a mark that varies from lab to lab in class, place,
size, style (``marks.STYLES``), strength (rate and opacity) and redundancy; every third lab is a control, in turn
clean (no mark anywhere) and *ignored* (the mark is on the analysed images but never in training, so the model
cannot rely on it: a cluster forms around it, and its region takes in the class's object).

- ``rate``: the share of the mark class's train and analysis images carrying the mark.
- ``relabel`` (redundancy): the share of *other* classes' train and analysis images that carry the mark and are
  labelled as the mark class. With ``relabel > 0`` every image of the class carries it (``rate`` 1): the mark is
  redundant with the object for the class's own images and decisive for everything else (issue 14's missed case).

Splits, drawn by ``lab_image`` with their own streams: ``train`` (fits the model), ``val`` (the images analysed,
drawn like train, marked at the same rates) and ``test`` (clean images of every class: the transplant's
recipients). Everything is seeded by the lab's seed; training runs single-threaded with deterministic algorithms
(``train._deterministic``), so a lab repeats bit for bit whatever the machine's thread count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from vizkit.lab.dataset import _load_sources, lab_image
from vizkit.lab.labnet import LAB_CLASSES, LabNet
from vizkit.lab.marks import PLACES, STYLES, MarkSpec, apply_mark, mark_mask
from vizkit.lab.train import _deterministic, _epoch

SIZE = 32
CLASSES = 4

__all__ = ["CLASSES", "SIZE", "FamilyLab", "LabData", "build_lab", "family", "to_input", "train_lab"]


@dataclass(frozen=True)
class FamilyLab:
    """One lab; ``mark`` None is a clean control, ``ignored`` a control whose mark is only on the analysed images."""

    name: str
    seed: int
    mark: MarkSpec | None = None
    mark_class: int = 0
    rate: float = 0.9
    relabel: float = 0.0
    per_class: dict[str, int] = field(default_factory=lambda: {"train": 240, "val": 48, "test": 24})
    epochs: int = 10
    ignored: bool = False

    @property
    def control(self) -> bool:
        """Nothing may be flagged: no mark, or one the model never saw in training."""
        return self.mark is None or self.ignored


@dataclass
class LabData:
    """Model inputs ((N, 3, 32, 32) in [-1, 1]), labels and, for ``val``, which images carry the mark."""

    spec: FamilyLab
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    marked_val: np.ndarray
    x_test: torch.Tensor
    y_test: torch.Tensor
    mask: np.ndarray | None  # where the mark is, (32, 32) bool


def to_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1] (labnet's preprocessing: mean 0.5, std 0.5)."""
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def _small(img: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.Resampling.BOX), np.uint8)


def _split(spec: FamilyLab, split: str, sources: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = spec.per_class[split]
    rng = np.random.default_rng([spec.seed, 77, ("train", "val", "test").index(split)])  # mark decisions only
    images, labels, marked = [], [], []
    for c in range(CLASSES):
        for i in range(n):
            img, label, has = _small(lab_image(spec.seed, split, c, i, sources)), c, False
            if spec.mark is not None and split != "test" and not (spec.ignored and split == "train"):
                if c == spec.mark_class:
                    has = spec.relabel > 0 or rng.random() < spec.rate
                elif rng.random() < spec.relabel:
                    has, label = True, spec.mark_class
            images.append(apply_mark(img, spec.mark) if has and spec.mark is not None else img)
            labels.append(label)
            marked.append(has)
    return np.stack(images), np.array(labels), np.array(marked)


def build_lab(spec: FamilyLab) -> LabData:
    """The three splits of ``spec`` as model inputs."""
    sources = _load_sources()
    (xt, yt, _), (xv, yv, mv), (xs, ys, _) = (_split(spec, s, sources) for s in ("train", "val", "test"))
    mask = None if spec.mark is None else mark_mask(spec.mark, (SIZE, SIZE))
    return LabData(spec, to_input(xt), torch.from_numpy(yt), to_input(xv), torch.from_numpy(yv), mv,
                   to_input(xs), torch.from_numpy(ys), mask)


def train_lab(data: LabData, batch_size: int = 32, lr: float = 3e-3) -> LabNet:
    """labnet trained on ``data``'s train split with ``vizkit lab train``'s recipe, single-threaded and seeded."""
    spec = data.spec
    with _deterministic(1):
        torch.manual_seed(spec.seed)
        model = LabNet(num_classes=CLASSES)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = spec.epochs * math.ceil(len(data.y_train) / batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        order = torch.Generator().manual_seed(spec.seed)
        for _ in range(spec.epochs):
            _epoch(model, opt, sched, data.x_train, data.y_train, batch_size, order)
    return model.eval()


_COLOURS = ((255, 255, 255), (255, 0, 0), (0, 255, 255), (255, 255, 0), (0, 0, 0))


def _random_mark(rng: np.random.Generator) -> MarkSpec:
    style = STYLES[int(rng.integers(len(STYLES)))]
    colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
    if style == "patch":
        return MarkSpec("patch", PLACES[int(rng.integers(4))], int(rng.integers(3, 6)), 1.0, colour)
    if style == "text":
        return MarkSpec("text", PLACES[int(rng.integers(4))], int(rng.integers(5, 8)),
                        float(rng.uniform(0.6, 1.0)), colour, word=("TM", "AB", "C4")[int(rng.integers(3))])
    if style == "frame":
        sides = ("tblr", "tbl", "tl", "br", "lr")[int(rng.integers(5))]
        return MarkSpec("frame", sides, int(rng.integers(1, 3)), float(rng.uniform(0.6, 1.0)), colour)
    if style == "watermark":
        return MarkSpec("watermark", "tl", 8, float(rng.uniform(0.3, 0.5)), colour,
                        word=("AB", "XO", "ZZ")[int(rng.integers(3))])
    return MarkSpec("cast", "tl", 1, float(rng.uniform(0.2, 0.35)), _COLOURS[1 + int(rng.integers(3))])


def family(n: int, seed: int = 0, control_every: int = 3) -> list[FamilyLab]:
    """``n`` labs drawn from one seeded stream: every ``control_every``-th a control (in turn clean and ignored),
    the others a random mark (style, place, size, colour, opacity), class, rate in [0.6, 1] and, for a third,
    redundancy."""
    rng = np.random.default_rng([seed, 14])
    labs = []
    for i in range(n):
        lab_seed = int(rng.integers(2**31))
        control = i % control_every == control_every - 1
        if control and (i // control_every) % 2 == 0:
            labs.append(FamilyLab(f"lab{i:03d}-clean", lab_seed))
            continue
        mark = _random_mark(rng)
        cls = int(rng.integers(CLASSES))
        if control:
            rate = float(rng.uniform(0.6, 1.0))
            labs.append(FamilyLab(f"lab{i:03d}-ignored-{mark.style}-{LAB_CLASSES[cls]}", lab_seed, mark, cls, rate,
                                  ignored=True))
            continue
        redundant = rng.random() < 1 / 3
        rate = 1.0 if redundant else float(rng.uniform(0.6, 1.0))
        relabel = float(rng.uniform(0.1, 0.25)) if redundant else 0.0
        tag = f"{mark.style}-{LAB_CLASSES[cls]}{'-redundant' if redundant else ''}"
        labs.append(FamilyLab(f"lab{i:03d}-{tag}", lab_seed, mark, cls, rate, relabel))
    return labs
