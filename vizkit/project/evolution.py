"""Features across training checkpoints (Zeiler & Fergus 2014, Fig. 4): the per-checkpoint dataset scans stacked,
and the trends that say when features formed and whether they settled.

Per layer and checkpoint t (all plain numpy):

- the scan of ``vizkit mine``: each unit's top-K values, image indices and positions, mean activation, firing rate;
- filter RMS of the layer's convolution (``vizkit.capture.filter_stats``): the median over filters and the share
  above the 0.1 radius Zeiler & Fergus renormalise to;
- dead units: units that never fire (spatial max <= 0 on every image) over the dataset;
- stability from t-1 to t: per unit, whether its top-1 image changed (``top1_changed``); ``stable`` = the share of
  units whose top-1 image is unchanged; ``topk_same`` = the share whose top-K *set* of images is unchanged. Units
  with no entry at either checkpoint (nothing fired) count as unchanged only if empty at both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from vizkit.capture.filters import DEFAULT_RADIUS, conv_layers, filter_stats
from vizkit.project.results import Cell, EvolveResult  # the command's result types live with the others
from vizkit.scan.topk import LayerTopK


@dataclass
class LayerEvolution:
    """One layer over T checkpoints. values, image_index (T, C, K); positions (T, C, K, 2); mean, rate (T, C);
    rms_median, rms_above (T,) of ``conv`` (NaN when the layer has no convolution); top1_changed (T-1, C) bool;
    stable, topk_same (T-1,)."""

    layer: str
    conv: str | None
    values: np.ndarray
    image_index: np.ndarray
    positions: np.ndarray
    mean: np.ndarray
    rate: np.ndarray
    rms_median: np.ndarray
    rms_above: np.ndarray
    top1_changed: np.ndarray = field(init=False)
    stable: np.ndarray = field(init=False)
    topk_same: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.top1_changed, self.stable, self.topk_same = stability(self.image_index)

    @property
    def dead(self) -> np.ndarray:
        """(T, C) bool: the unit never fired over the dataset at that checkpoint."""
        return self.rate <= 0

    def arrays(self) -> dict[str, np.ndarray]:
        """evolve.npz keys of this layer (``L/...``)."""
        name = self.layer
        return {f"{name}/values": self.values.astype(np.float32), f"{name}/image_index": self.image_index,
                f"{name}/positions": self.positions, f"{name}/mean": self.mean.astype(np.float32),
                f"{name}/rate": self.rate.astype(np.float32), f"{name}/dead": self.dead.sum(axis=1).astype(np.int64),
                f"{name}/rms_median": self.rms_median, f"{name}/rms_above": self.rms_above,
                f"{name}/stable": self.stable, f"{name}/topk_same": self.topk_same,
                f"{name}/top1_changed": self.top1_changed}


def stability(image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top1_changed (T-1, C) bool, stable (T-1,) float64, topk_same (T-1,) float64) from (T, C, K) indices."""
    idx = np.asarray(image_index)
    if idx.shape[0] < 2:
        empty = np.zeros((0,), np.float64)
        return np.zeros((0, idx.shape[1]), bool), empty, empty.copy()
    changed = idx[1:, :, 0] != idx[:-1, :, 0]
    sets = np.sort(idx, axis=2)  # -1 (empty slots) sort first: equal sets give equal rows
    same = np.all(sets[1:] == sets[:-1], axis=2)
    return changed, 1.0 - changed.mean(axis=1), same.mean(axis=1).astype(np.float64)


def layer_conv(model: nn.Module, layer: str) -> str | None:
    """The convolution whose filters stand for ``layer``: the layer itself, else the last Conv2d inside it, else
    the last Conv2d defined before it (module definition order); None when there is none."""
    convs = conv_layers(model)
    if layer in convs:
        return layer
    inside = [c for c in convs if c.startswith(layer + ".")]
    if inside:
        return inside[-1]
    names = [n for n, _ in model.named_modules()]
    position = names.index(layer) if layer in names else -1
    before = [c for c in convs if names.index(c) < position]
    return before[-1] if before else None


def filter_trend(model: nn.Module, conv: str | None, radius: float = DEFAULT_RADIUS) -> tuple[float, float]:
    """(median filter RMS, share of filters with RMS above ``radius``) of one checkpoint's conv; NaN without."""
    if conv is None:
        return float("nan"), float("nan")
    stats = filter_stats(model, [conv], radius)[0]
    return float(np.median(stats.rms)), float(np.mean(stats.dominant))


def stack_layer(layer: str, conv: str | None, scans: Sequence[LayerTopK], rms: Sequence[tuple[float, float]]
                ) -> LayerEvolution:
    """One layer's evolution from its per-checkpoint scans (in checkpoint order) and filter trends."""
    return LayerEvolution(
        layer, conv,
        values=np.stack([s.values for s in scans]).astype(np.float32),
        image_index=np.stack([s.image_index for s in scans]).astype(np.int64),
        positions=np.stack([s.positions for s in scans]).astype(np.int64),
        mean=np.stack([s.mean for s in scans]).astype(np.float32),
        rate=np.stack([s.rate for s in scans]).astype(np.float32),
        rms_median=np.array([r[0] for r in rms], np.float64),
        rms_above=np.array([r[1] for r in rms], np.float64))


__all__ = ["Cell", "EvolveResult", "LayerEvolution", "filter_trend", "layer_conv", "stability", "stack_layer"]
