"""Pass 2 of ``vizkit mine --rank relevance``: the conditional heatmap of every rendered unit's top-K images.

For unit c of layer L, class t and one of its reference images, the heatmap is CRP's conditional input relevance
(``vizkit.project.attribute.crp.conditional_relevance``: the relevance of t's score, masked at L to channel c, carried
to the input) summed over colour channels, as zennit-crp's ``CondAttribution`` heatmap and the reference images
of its ``get_max_reference(..., composite=...)``. One call per unit: a forward of its K images, one backward to L,
one masked backward below it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vizkit.capture.probe import model_device
from vizkit.errors import UserInputError
from vizkit.load.preprocessing import Preprocessing, deprocess
from vizkit.project.mine_projection import ImageSource

if TYPE_CHECKING:
    from vizkit.scan.topk import MineResult

__all__ = ["HeatmapEntry", "UnitHeatmaps", "unit_heatmaps"]


@dataclass
class HeatmapEntry:
    """One reference image of a unit: its rank value (the unit's relevance share for the class), its conditional
    heatmap (H, W) float32 (signed input relevance) and the image (H, W, 3) uint8, de-normalised."""

    image_index: int
    path: str
    value: float
    heatmap: np.ndarray
    image: np.ndarray


@dataclass
class UnitHeatmaps:
    layer: str
    channel: int
    target: int
    entries: list[HeatmapEntry]


def unit_heatmaps(model: nn.Module, result: MineResult, source: ImageSource, layer: str, channels: Sequence[int],
                  target: int, *, prep: Preprocessing, device: torch.device | str | None = None,
                  composite: str | None = None, progress: Callable[[int, int], None] | None = None
                  ) -> list[UnitHeatmaps]:
    """Re-read each of ``channels``' top-K images of ``layer`` (from the scan ``result``, a ``MineResult``) and
    compute their conditional heatmaps for class ``target``; the model is left as it was."""
    from vizkit.project.attribute.crp import conditional_relevance  # zennit: only when relevance is asked for
    from vizkit.project.attribute.lrp import DEFAULT_COMPOSITE

    if layer not in result.layers:
        raise UserInputError(f"layer '{layer}' was not scanned; scanned layers: {', '.join(result.layers)}")
    state = result.layers[layer]
    device = torch.device(device) if device is not None else model_device(model)
    units = []
    for n, ch in enumerate(channels):
        ranked = [(int(i), float(v)) for i, v in zip(state.image_index[ch], state.values[ch], strict=True) if i >= 0]
        entries: list[HeatmapEntry] = []
        if ranked:
            x = torch.stack([_read(source, i, result.paths) for i, _ in ranked]).to(device)
            maps = conditional_relevance(model, x, layer, [ch], target, composite or DEFAULT_COMPOSITE).heatmaps
            heat = maps[:, 0].sum(dim=1).float().cpu().numpy()  # zennit-crp's heatmap: summed over colours
            entries = [HeatmapEntry(i, str(result.paths[i]), v, heat[r], deprocess(x[r], prep))
                       for r, (i, v) in enumerate(ranked)]
        units.append(UnitHeatmaps(layer, int(ch), int(target), entries))
        if progress is not None:
            progress(n + 1, len(channels))
    return units


def _read(source: ImageSource, i: int, paths: Sequence[str]) -> torch.Tensor:
    x, _, _, error = source[i]
    if x is None:
        raise UserInputError(f"{paths[i]}: was read in the scan but not for its heatmap now: {error}")
    return x
