"""Transformation robustness: random views of the canvas that the model sees at every step.

Each view is one ``grid_sample`` of the canvas through a random similarity transform, which together give Lucid's
pad, jitter, random scale and rotation (Olah et al. 2017) and MACO's random crops (Fel et al. 2023): a box of
``crop_box`` of the padded canvas's side, centred at ``N(0.5, crop_spread)``, rotated by ``±angle`` degrees, scaled
by ``scale``, shifted by ``±jitter`` px, resized to the model's input; then Gaussian plus uniform noise of
``noise`` (MACO). Outside the canvas is grey (0.5), Lucid's constant padding.

Every random number of batch element ``i`` comes from its own generator ``gens[i]`` (drawn on the CPU), so a batch
of objectives gives the same views as each objective alone with the same seed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from vizkit.errors import UserInputError

__all__ = ["TransformSettings", "sample_views"]


@dataclass(frozen=True)
class TransformSettings:
    """The random views per step (listed in the manifest): sizes in canvas px, ``crop_box`` in fractions."""

    crops: int = 2
    pad: int = 8
    jitter: int = 8
    scale: tuple[float, float] = (0.9, 1.1)
    angle: float = 10.0
    crop_box: tuple[float, float] = (0.6, 1.0)
    crop_spread: float = 0.15
    noise: float = 0.05

    def __post_init__(self) -> None:
        if self.crops < 1:
            raise UserInputError(f"crops per step must be at least 1, got {self.crops}")
        lo, hi = self.crop_box
        if not 0 < lo <= hi <= 1:
            raise UserInputError(f"crop_box must satisfy 0 < min <= max <= 1, got {self.crop_box}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise UserInputError(f"scale must be a positive (min, max) range, got {self.scale}")
        if self.pad < 0 or self.jitter < 0 or self.noise < 0 or self.angle < 0:
            raise UserInputError("pad, jitter, angle and noise must not be negative")

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _thetas(g: torch.Generator, t: TransformSettings, canvas: int) -> torch.Tensor:
    """(crops, 2, 3) affine maps from a view's coordinates to the canvas's ([-1, 1], align_corners=False)."""
    k = t.crops
    scale = _uniform(g, k, *t.scale)
    angle = _uniform(g, k, -t.angle, t.angle) * math.pi / 180
    shift = _uniform(g, 2 * k, -t.jitter, t.jitter).view(k, 2) * 2 / canvas
    box = _uniform(g, k, *t.crop_box)
    centre = torch.randn(2 * k, generator=g, dtype=torch.float64).view(k, 2) * t.crop_spread * 2
    centre = torch.maximum(torch.minimum(centre, (1 - box)[:, None]), -(1 - box)[:, None])  # box inside the pad
    padded = (canvas + 2 * t.pad) / canvas
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (k, 2, 2)
    lin = rot * (padded / scale)[:, None, None]
    theta = torch.cat([lin * box[:, None, None], (lin @ centre[:, :, None]) + shift[:, :, None]], dim=2)
    return theta.float()


def sample_views(images: torch.Tensor, gens: Sequence[torch.Generator], t: TransformSettings,
                 out_size: int) -> torch.Tensor:
    """(B, 3, H, W) canvases in [0, 1] -> (B * crops, 3, out_size, out_size) random views, element-major."""
    b, c, h, _ = images.shape
    if len(gens) != b:
        raise ValueError(f"{len(gens)} generators for {b} images")
    thetas, noise = [], []
    for g in gens:
        thetas.append(_thetas(g, t, h))
        if t.noise > 0:
            shape = (t.crops, c, out_size, out_size)
            noise.append(torch.randn(shape, generator=g) * t.noise + (torch.rand(shape, generator=g) - 0.5) * t.noise)
    theta = torch.cat(thetas).to(images.device)
    grid = F.affine_grid(theta, [b * t.crops, c, out_size, out_size], align_corners=False)
    src = (images - 0.5).repeat_interleave(t.crops, dim=0)
    views = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5
    if noise:
        views = views + torch.cat(noise).to(images.device, images.dtype)
    return views
