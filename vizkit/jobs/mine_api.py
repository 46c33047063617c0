"""``mine(model, data, layers, k=...)``: the dataset scan from Python, for your own model and data.

``data`` may be a folder or image-list file (with ``prep``), an ``ImageList`` or ``ImageDataset``, a
``DataLoader`` of ``ImageBatch`` (``vizkit.load.image_loader``), or any DataLoader/iterable yielding image tensors
``(B, C, H, W)`` or ``(images, labels)`` pairs -- a torchvision ``ImageFolder`` loader, for example. For the last
kind the global image index is the position in the stream (paths are taken from ``dataset.samples`` when the
loader reads its dataset in order).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from vizkit.capture.recorder import resolve_layers
from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.load.dataset import ImageDataset, ImageList, image_loader, list_images
from vizkit.load.models import LoadedModel
from vizkit.load.preprocessing import Preprocessing
from vizkit.project.scan import ScanState, StreamCounter, as_image_batch, scan_batches
from vizkit.project.topk import MineResult

__all__ = ["mine"]


def mine(model: nn.Module | LoadedModel, data: str | os.PathLike | ImageList | Dataset | Iterable[Any],
         layers: Sequence[str] | None = None, k: int = 9, *, per_class: bool = False,
         prep: Preprocessing | None = None, batch_size: int = 32, workers: int = 0, limit: int | None = None,
         classes: Sequence[str] | None = None, device: torch.device | str | None = None) -> MineResult:
    """Scan ``data`` once and return every channel's exact top-``k`` images per layer (see ``vizkit.project.scan``).

    ``layers``: names from ``model.named_modules()``; default one per resolution stage. ``prep``: how files are
    preprocessed (taken from a ``LoadedModel``). ``classes``: class names for ``per_class`` when ``data`` does not
    name them (an ``ImageList`` from a folder with subfolders, or a dataset with a ``classes`` attribute, does).
    ``device``: where the state lives and the batches go; default the model's device. The model is left as it was.
    """
    if isinstance(model, LoadedModel):
        prep = prep or model.preprocessing
        model = model.model
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    batches, paths, labels, names = _batches(data, prep, batch_size, workers, limit, device)
    first, batches = _peek(batches)
    if layers is None:
        shape = (1, prep.channels, prep.crop, prep.crop) if prep is not None else _input_shape(first)
        layers = default_layers(model, shape)
    layers = list(dict.fromkeys(layers))
    resolve_layers(model, layers)
    names = list(classes) if classes is not None else names
    if per_class and not names:
        raise UserInputError("per_class needs class names: a folder with class subfolders, a dataset with a "
                             "'classes' attribute, or classes=[...]")
    state = ScanState(layers, k, n_classes=len(names) if per_class and names else 0, device=device)
    run = scan_batches(model, batches, state)
    if paths is None:
        paths = [f"#{i}" for i in range(run.seen)]
    skipped = [(str(paths[i]), message) for i, message in run.skipped]
    return state.result([str(p) for p in paths], classes=names or None, labels=labels, skipped=skipped)


def _batches(data: Any, prep: Preprocessing | None, batch_size: int, workers: int, limit: int | None,
             device: torch.device) -> tuple[Iterable[Any], list | None, list[int] | None, list[str] | None]:
    """(batches, paths or None, labels or None, class names or None) for every accepted kind of ``data``."""
    if isinstance(data, (str, os.PathLike)):
        data = list_images(data, limit)
    if isinstance(data, ImageList):
        if prep is None:
            raise UserInputError("mine: reading image files needs prep= (a Preprocessing) or a LoadedModel")
        data = ImageDataset(data, prep)
    if isinstance(data, ImageDataset):
        data = image_loader(data, batch_size=batch_size, workers=workers, device=device)
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, num_workers=workers, shuffle=False)
    dataset = data.dataset if isinstance(data, DataLoader) else None
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    if isinstance(base, ImageDataset):
        images = base.images
        return data, [str(p) for p in images.paths], images.labels, images.classes
    names = getattr(base, "classes", None)
    names = [str(c) for c in names] if isinstance(names, (list, tuple)) else None
    in_order = isinstance(data, DataLoader) and isinstance(data.sampler, SequentialSampler) and base is dataset
    samples = getattr(base, "samples", None) if in_order else None
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple):
        return data, [str(s[0]) for s in samples], [int(s[1]) for s in samples], names
    return data, None, None, names


def _peek(batches: Iterable[Any]) -> tuple[Any, Iterable[Any]]:
    """The first batch and an iterable that still yields it (a DataLoader is only iterated once)."""
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise UserInputError("mine: the data yielded no batches")
    return first, itertools.chain([first], iterator)


def _input_shape(batch: Any) -> tuple[int, ...]:
    x = as_image_batch(batch, StreamCounter()).x
    if x.dim() != 4:
        raise UserInputError("mine: give layers=[...] or prep= (no image batch to pick default layers from)")
    return (1, *x.shape[1:])

