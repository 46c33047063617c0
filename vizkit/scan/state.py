"""The running state of a dataset scan: per layer and channel the exact top-K images, sums and firing counts.

``scan_batches`` streams batches through the model (``vizkit.scan.scorer`` reduces each layer's output as it is
produced; the forward stops after the deepest requested layer) and merges each batch into a ``ScanState`` with
``merge_topk``: no Python loop over images or channels. The state lives on the model's device and is
O(layers x channels x K); two states over the same index space merge exactly (``ScanState.merge``: ranks, resume).
``sources`` (``vizkit.scan.saturation.plan_ranking``) names the layers ranked by the value before a cap.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vizkit.capture.probe import model_dtype
from vizkit.capture.state import preserve_model_state
from vizkit.errors import UserInputError
from vizkit.scan.scorer import Reduced, Reducer, Source, ranked_label
from vizkit.scan.stream import StreamCounter, as_image_batch
from vizkit.scan.topk import EMPTY, LayerTopK, MineResult, merge_topk

__all__ = ["ScanRun", "ScanState", "ScorerFactory", "scan_batches"]

#: Builds the per-batch scorer for ``scan_batches``: ``factory(model, layers)`` -> a context manager with ``run``.
ScorerFactory = Callable[[nn.Module, Sequence[str]], Any]


class ScanState:
    """The running state: per layer top-K (values, global image index, flat position), per-class top-K, sums."""

    def __init__(self, layers: Sequence[str], k: int, *, n_classes: int = 0, device: torch.device | str = "cpu",
                 sources: Mapping[str, Source] | None = None):
        if k < 1:
            raise UserInputError(f"--top-k must be at least 1, got {k}")
        self.layers = list(dict.fromkeys(layers))
        self.sources = {layer: s for layer, s in (sources or {}).items() if layer in self.layers}
        self.k = k
        self.n_classes = n_classes
        self.device = torch.device(device)
        self.count = 0                              # images counted in the means and rates
        self.t: dict[str, torch.Tensor] = {}        # "<layer>/<field>" -> tensor on the device
        self.grids: dict[str, tuple[int, int]] = {}

    def _init_layer(self, name: str, channels: int, grid: tuple[int, int]) -> None:
        k, dev = self.k, self.device
        self.grids[name] = grid
        self.t[f"{name}/values"] = torch.full((channels, k), float("-inf"), device=dev)
        self.t[f"{name}/index"] = torch.full((channels, k), EMPTY, dtype=torch.int64, device=dev)
        self.t[f"{name}/pos"] = torch.full((channels, k), -1, dtype=torch.int64, device=dev)
        self.t[f"{name}/sum"] = torch.zeros(channels, dtype=torch.float64, device=dev)
        self.t[f"{name}/fired"] = torch.zeros(channels, dtype=torch.int64, device=dev)
        if self.n_classes:
            shape = (self.n_classes, channels, k)
            self.t[f"{name}/class_values"] = torch.full(shape, float("-inf"), device=dev)
            self.t[f"{name}/class_index"] = torch.full(shape, EMPTY, dtype=torch.int64, device=dev)

    def update(self, reduced: dict[str, Reduced], index: torch.Tensor, label: torch.Tensor,
               counted: torch.Tensor, n_counted: int, present: torch.Tensor | None = None) -> None:
        """Merge one batch. ``index``/``label``/``counted`` (B,) on the device; ``counted`` marks the images that
        enter the means and rates (False for a rank's padding duplicates); ``present``: the classes in the batch
        (computed here when not given; giving it from CPU labels avoids a device sync)."""
        for name in self.layers:
            r = reduced[name]
            channels, batch = r.maximum.shape[1], r.maximum.shape[0]
            if name not in self.grids:
                self._init_layer(name, channels, r.grid)
            elif self.grids[name] != r.grid or self.t[f"{name}/sum"].shape[0] != channels:
                raise UserInputError(f"layer '{name}' changed shape between batches ({self.grids[name]} -> "
                                     f"{r.grid}); all images must have the same input size")
            t = self.t
            w = counted[:, None]
            t[f"{name}/sum"] += (r.mean.double() * w).sum(0)
            t[f"{name}/fired"] += ((r.maximum > 0) & w).sum(0)
            values, idx, (pos,) = merge_topk(
                torch.cat([t[f"{name}/values"], r.maximum.T], 1),
                torch.cat([t[f"{name}/index"], index[None].expand(channels, batch)], 1),
                [torch.cat([t[f"{name}/pos"], r.argmax.T], 1)], self.k)
            t[f"{name}/values"], t[f"{name}/index"], t[f"{name}/pos"] = values, idx, pos
            if self.n_classes:
                if present is None:
                    present = torch.unique(label[label >= 0])
                self._update_classes(name, r.maximum, index, label, present)
        self.count += n_counted

    def _update_classes(self, name: str, maximum: torch.Tensor, index: torch.Tensor, label: torch.Tensor,
                        present: torch.Tensor) -> None:
        """Each class present in the batch merges the batch with the other classes' images masked out."""
        if present.numel() == 0:
            return
        mask = (label[None, :] == present[:, None])[:, None, :]           # (P, 1, B)
        cand_values = maximum.T[None].masked_fill(~mask, float("-inf"))  # (P, C, B)
        cand_index = index[None, None].expand_as(cand_values).masked_fill(~mask, EMPTY)
        values_key, index_key = f"{name}/class_values", f"{name}/class_index"
        values, idx, _ = merge_topk(torch.cat([self.t[values_key][present], cand_values], 2),
                                    torch.cat([self.t[index_key][present], cand_index], 2), [], self.k)
        self.t[values_key][present] = values
        self.t[index_key][present] = idx

    def merge(self, other: ScanState) -> None:
        """Absorb another state over the same index space (another rank's shard); exact, duplicates dropped."""
        _check_sources(self.sources, other.sources, self.grids, other.grids)
        self.sources.update(other.sources)
        for name in self.layers:
            if name not in other.grids:
                continue
            if name not in self.grids:
                self.grids[name] = other.grids[name]
                for key, value in other.t.items():
                    if key.startswith(f"{name}/"):
                        self.t[key] = value.clone()
                continue
            t, o = self.t, other.t
            t[f"{name}/sum"] += o[f"{name}/sum"]
            t[f"{name}/fired"] += o[f"{name}/fired"]
            t[f"{name}/values"], t[f"{name}/index"], (t[f"{name}/pos"],) = merge_topk(
                torch.cat([t[f"{name}/values"], o[f"{name}/values"]], -1),
                torch.cat([t[f"{name}/index"], o[f"{name}/index"]], -1),
                [torch.cat([t[f"{name}/pos"], o[f"{name}/pos"]], -1)], self.k)
            if self.n_classes:
                cv, ci = f"{name}/class_values", f"{name}/class_index"
                t[cv], t[ci], _ = merge_topk(torch.cat([t[cv], o[cv]], -1), torch.cat([t[ci], o[ci]], -1), [], self.k)
        self.count += other.count

    def state_dict(self) -> dict[str, torch.Tensor | int | str | list[int] | list[str]]:
        """CPU tensors, ints and strings only (``torch.load(weights_only=True)`` reads it back)."""
        d: dict[str, torch.Tensor | int | str | list[int] | list[str]] = {
            "k": self.k, "n_classes": self.n_classes, "count": self.count, "layers": list(self.layers),
            "sources": [f"{layer}\t{s.module}\t{s.call}\t{int(s.output)}" for layer, s in self.sources.items()]}
        for name, (h, w) in self.grids.items():
            d[f"grid/{name}"] = [h, w]
        for key, value in self.t.items():
            d[f"t/{key}"] = value.detach().cpu()
        return d

    def load_state_dict(self, d: dict) -> None:
        saved = {layer: Source(module, int(call), bool(int(output))) for layer, module, call, output in
                 (str(entry).split("\t") for entry in d.get("sources", []))}
        if self.sources and saved != self.sources:  # (a checkpoint from before the ranking was recorded, too)
            raise UserInputError(f"the saved scan ranked {_describe(saved)}, this run ranks {_describe(self.sources)}; "
                                 "rerun without --resume")
        self.sources = self.sources or saved
        self.count = int(d["count"])
        self.grids = {key[5:]: (int(v[0]), int(v[1])) for key, v in d.items() if key.startswith("grid/")}
        self.t = {key[2:]: v.to(self.device) for key, v in d.items() if key.startswith("t/")}

    def result(self, paths: Sequence[str], *, classes: list[str] | None = None, labels: list[int] | None = None,
               skipped: Sequence[tuple[str, str]] = ()) -> MineResult:
        layers = {name: self._layer_result(name) for name in self.layers if name in self.grids}
        return MineResult(list(paths), layers, self.k, classes, labels, list(skipped), self.count)

    def _layer_result(self, name: str) -> LayerTopK:
        t, width = self.t, self.grids[name][1]
        index = t[f"{name}/index"].cpu()
        pos = t[f"{name}/pos"].cpu()
        empty = index == EMPTY
        yx = torch.stack([pos // width, pos % width], -1).masked_fill(empty[..., None], -1)
        n = max(self.count, 1)
        class_values = class_index = None
        if self.n_classes:
            class_values = t[f"{name}/class_values"].cpu().numpy()
            ci = t[f"{name}/class_index"].cpu()
            class_index = ci.masked_fill(ci == EMPTY, -1).numpy()
        return LayerTopK(t[f"{name}/values"].cpu().numpy(), index.masked_fill(empty, -1).numpy(), yx.numpy(),
                         (t[f"{name}/sum"].cpu() / n).float().numpy(),
                         (t[f"{name}/fired"].cpu().double() / n).float().numpy(), class_values, class_index,
                         ranked=ranked_label(name, self.sources))


def _describe(sources: Mapping[str, Source]) -> str:
    return ", ".join(f"{layer} before its cap" for layer in sources) or "every layer by its output"


def _check_sources(mine: Mapping[str, Source], theirs: Mapping[str, Source], grids: Mapping[str, object],
                   other_grids: Mapping[str, object]) -> None:
    """Two states of one layer must rank the same quantity to be merged."""
    for layer in set(grids) & set(other_grids):
        if mine.get(layer) != theirs.get(layer):
            raise UserInputError(f"cannot merge scans of layer '{layer}' that ranked different quantities")


@dataclass
class ScanRun:
    skipped: list[tuple[int, str]]   # (global index, reason) of unreadable images
    positions: int                   # stream entries consumed (readable + skipped)
    seen: int                        # 1 + the largest global index met (the index space's size)


def scan_batches(model: nn.Module, batches: Iterable[Any], state: ScanState, *,
                 owned: np.ndarray | None = None, scorer: ScorerFactory | None = None) -> ScanRun:
    """Update ``state`` with every batch (a ``DatasetStream``, whose hooks run after each batch, or any iterable
    of ``ImageBatch``, tensors or (x, labels) pairs); returns the skipped (global index, reason) pairs and counts.

    ``owned``: bool per global index, the images this process counts in means and rates (distributed padding
    duplicates are not). ``scorer``: ``factory(model, layers)``, a context manager whose ``run(model, x)`` gives
    each layer's ``Reduced`` (default ``Reducer``: activations; ``vizkit.scan.relevance``: relevance, which sets
    ``needs_grad``).
    """
    skipped: list[tuple[int, str]] = []
    positions = seen = 0
    counter = StreamCounter()
    device = state.device
    dtype = model_dtype(model)
    grad = bool(getattr(scorer, "needs_grad", False))
    # a custom scorer (relevance) ranks its own quantity; the reducer ranks each layer's source (the pre-cap value)
    reducer = scorer(model, state.layers) if scorer is not None else Reducer(model, state.layers, state.sources)
    with preserve_model_state(model), torch.inference_mode(not grad), reducer:
        for raw in batches:
            batch = as_image_batch(raw, counter)
            skipped.extend(batch.skipped)
            positions += int(batch.index.numel()) + len(batch.skipped)
            seen = max([seen, *(i + 1 for i, _ in batch.skipped)] +
                       ([int(batch.index.max()) + 1] if batch.index.numel() else []))
            if batch.index.numel():
                counted_cpu = (torch.from_numpy(owned[batch.index.numpy()]) if owned is not None
                               else torch.ones(batch.index.numel(), dtype=torch.bool))
                x = batch.x.to(device=device, dtype=dtype if batch.x.is_floating_point() else None, non_blocking=True)
                reduced = reducer.run(model, x)
                present = torch.unique(batch.label[batch.label >= 0]) if state.n_classes else None
                state.update(reduced, batch.index.to(device, non_blocking=True),
                             batch.label.to(device, non_blocking=True), counted_cpu.to(device, non_blocking=True),
                             int(counted_cpu.sum()), present.to(device) if present is not None else None)
    return ScanRun(skipped, positions, seen)
