"""Plain data produced by the projection step and consumed by render/. No torch objects inside."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class UnitProjection:
    """One feature map's projection to pixel space.

    channel: feature-map index in the layer; position: (y, x) of the strongest activation on the layer's output
    grid; activation: its value; projection: (C, H, W) float32, raw (unnormalised) deconvnet output;
    box: (y0, y1, x0, x1) half-open pixel box of the unit's receptive field clipped to the image, or None when the
    receptive field is not known (then the whole image is the patch).
    """

    channel: int
    position: tuple[int, int]
    activation: float
    projection: np.ndarray
    box: tuple[int, int, int, int] | None = None


@dataclass
class LayerProjections:
    """The top-K feature maps of one layer for one image.

    activation_maps: (K, h, w) float32, the layer's output for the selected channels (same order as units).
    image_dependent: False when nothing before this layer depends on the forward pass in the backward
    direction (no max-pool switch, no gate, no normalisation statistic): the projections are then the same for
    every image that activates the same units.
    """

    layer: str
    mode: str
    units: list[UnitProjection]
    activation_maps: np.ndarray
    image_dependent: bool
    note: str = ""


@dataclass
class AuditEntry:
    """One intercepted operation: how many calls the deconvnet saw and which backward rule it applied."""

    op: str
    rule: str
    count: int


@dataclass
class Prediction:
    index: int
    name: str
    probability: float


@dataclass
class DeconvResult:
    """Everything `vizkit deconv` renders for one image.

    input: (1, C, H, W) float32 exactly as fed to the model; image: (H, W, 3) uint8 for display (the
    preprocessed image, de-normalised).
    """

    input: np.ndarray
    image: np.ndarray
    layers: list[LayerProjections]
    predictions: list[Prediction] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
