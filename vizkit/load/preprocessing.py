"""How an image becomes a model's input tensor, and how an input tensor becomes a picture again.

``preprocess`` follows torchvision's ``ImageClassification`` transform step for step (Pillow resize of the
shorter side, centre crop, uint8 -> [0, 1], normalise), so for a torchvision model ``preprocess(img, prep)``
equals ``weights.transforms()(img)`` exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vizkit.errors import UserInputError

__all__ = ["INTERPOLATIONS", "Preprocessing", "deprocess", "preprocess"]

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop a ``crop`` square, normalise with ``mean``/``std``."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    channels: int = 3

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise UserInputError(
                f"unknown interpolation {self.interpolation!r}: use one of {', '.join(INTERPOLATIONS)}"
            )
        if self.channels not in (1, 3):
            raise UserInputError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserInputError(
                f"mean {self.mean} and std {self.std} need {self.channels} value(s) each, one per input channel"
            )
        if self.resize < 1 or self.crop < 1:
            raise UserInputError(f"resize and crop must be positive, got resize={self.resize} crop={self.crop}")
        if any(s <= 0 for s in self.std):
            raise UserInputError(f"std values must be positive, got {self.std}")
        # Normalise to plain float tuples so equality and to_dict() do not depend on how they were given.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (lists for the tuples)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d


def preprocess(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """PIL image -> normalised float32 tensor of shape (1, prep.channels, prep.crop, prep.crop)."""
    image = image.convert("L" if prep.channels == 1 else "RGB")
    image = TF.resize(image, [prep.resize], interpolation=INTERPOLATIONS[prep.interpolation], antialias=True)
    image = TF.center_crop(image, [prep.crop])
    x = TF.convert_image_dtype(TF.pil_to_tensor(image), torch.float32)  # uint8 (C, H, W) / 255
    x = TF.normalize(x, mean=list(prep.mean), std=list(prep.std))
    return x.unsqueeze(0).contiguous()


def deprocess(x: torch.Tensor, prep: Preprocessing) -> np.ndarray:
    """Undo the normalisation of a (1, C, H, W) or (C, H, W) input: (H, W, 3) uint8, grayscale repeated to 3."""
    x = x.detach().to("cpu", torch.float32)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise UserInputError(f"deprocess takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != prep.channels:
        raise UserInputError(f"deprocess expects ({prep.channels}, H, W), got {tuple(x.shape)}")
    mean = torch.tensor(prep.mean).view(-1, 1, 1)
    std = torch.tensor(prep.std).view(-1, 1, 1)
    img = (x * std + mean).clamp(0.0, 1.0)
    arr = (img * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)
