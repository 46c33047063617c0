"""The one way vizkit reads a dataset: ``DatasetStream`` over an ``ImageDataset``.

Every dataset command (mine, evolve, shortcuts) iterates a stream, so there is one DataLoader setup
(``image_loader``), one progress hook (``progress(done, total)`` after each batch, once the consumer has used it;
each pass is also a task of the current ``vizkit.outputs.progress`` reporter: images/s and ETA on stderr), one
check that something was read (``nothing_read``) and one skipped-files path (each unreadable file is named once
through ``on_skip(path, reason)`` and kept in ``stream.skipped``, however many passes read it). ``as_batches``
turns whatever a user hands to the Python API (a folder, a dataset, a DataLoader of tensors) into batches.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler, Subset

from vizkit.errors import UserInputError
from vizkit.load.dataset import ImageBatch, ImageDataset, ImageList, collate_images, list_images
from vizkit.load.preprocessing import Preprocessing
from vizkit.outputs.progress import Task
from vizkit.outputs.progress import task as progress_task

__all__ = ["DatasetStream", "StreamCounter", "as_batches", "as_image_batch", "image_loader", "nothing_read"]

Progress = Callable[[int, int], None]
OnSkip = Callable[[str, str], None]


def image_loader(dataset: ImageDataset, *, batch_size: int = 32, workers: int = 0,
                 device: torch.device | str = "cpu", sampler: Sampler | None = None,
                 indices: Sequence[int] | None = None, pin_memory: bool | None = None) -> DataLoader:
    """A DataLoader of ``ImageBatch`` in dataset order (or ``indices`` in that order, or ``sampler``'s order);
    memory is pinned when the images go to a CUDA device (unless ``pin_memory`` says otherwise)."""
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise UserInputError(f"--workers must be 0 or more, got {workers}")
    data: Dataset = Subset(dataset, list(indices)) if indices is not None else dataset
    pin = torch.device(device).type == "cuda" if pin_memory is None else pin_memory
    return DataLoader(data, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=workers,
                      collate_fn=collate_images, pin_memory=pin, persistent_workers=False)


class DatasetStream:
    """Batches of ``ImageBatch`` over ``dataset`` (or its ``indices``, in that order), any number of passes.

    ``start``: entries of ``indices`` already done by an earlier run (resume): the stream reads the rest and counts
    ``done`` from ``start``; ``skipped``: that run's (global index, reason) pairs, named again on the first pass so
    that every run names every file it skips. ``cache_bytes``: keep the first pass's batches in memory when they
    fit, so later passes (one per checkpoint in evolve) do not read the files again. ``label``: the name of each
    pass on the progress line (None: not reported); ``summary``: each pass ends with a summary line.
    """

    def __init__(self, dataset: ImageDataset, *, batch_size: int = 32, workers: int = 0,
                 device: torch.device | str = "cpu", indices: Sequence[int] | None = None, start: int = 0,
                 skipped: Sequence[tuple[int, str]] = (), progress: Progress | None = None,
                 on_skip: OnSkip | None = None, cache_bytes: int = 0, label: str | None = "scan",
                 summary: bool = True) -> None:
        self.dataset = dataset
        self.batch_size, self.workers, self.device = batch_size, workers, torch.device(device)
        order = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        self.indices, self.start, self.total = order, start, len(order)
        self.done = start                               # entries of this pass consumed (readable + skipped)
        self.skipped: list[tuple[int, str]] = []        # every unreadable image met, each once, in order
        self._named: set[int] = set()
        self._earlier = list(skipped)
        self.hooks: list[Progress] = [progress] if progress is not None else []
        self.on_skip = on_skip
        self.cache_bytes = cache_bytes
        self._cache: list[ImageBatch] | None = None
        self.label, self.summary = label, summary

    def path(self, i: int) -> str:
        return str(self.dataset.images.paths[i])

    def _loader(self) -> DataLoader:
        return image_loader(self.dataset, batch_size=self.batch_size, workers=self.workers, device=self.device,
                            indices=self.indices[self.start:],
                            pin_memory=self.device.type == "cuda" and not self.cache_bytes)

    def _skip(self, skipped: Iterable[tuple[int, str]]) -> None:
        for i, message in skipped:
            if i in self._named:
                continue
            self._named.add(i)
            self.skipped.append((i, message))
            if self.on_skip is not None:
                self.on_skip(self.path(i), message)

    def __iter__(self) -> Iterator[ImageBatch]:
        self._skip(self._earlier)
        self.done = self.start
        cache: list[ImageBatch] | None = [] if self._cache is None and self.cache_bytes else None
        size = 0
        shown = (progress_task(self.label, self.total, "images", self.summary, self.start) if self.label
                 else Task(None, "", self.total, "images", False, self.start))
        with shown:
            yield from self._pass(cache, size, shown)

    def _pass(self, cache: list[ImageBatch] | None, size: int, shown: Task) -> Iterator[ImageBatch]:
        for batch in self._cache if self._cache is not None else self._loader():
            self._skip(batch.skipped)
            if cache is not None:
                size += batch.x.numel() * batch.x.element_size()
                if size <= self.cache_bytes:
                    cache.append(batch)
                else:
                    cache = None  # does not fit: every pass reads the files
            yield batch
            self.done += int(batch.index.numel()) + len(batch.skipped)
            for hook in self.hooks:  # after the consumer used the batch: a checkpoint then includes it
                hook(self.done, self.total)
            shown.update(self.done)
        if cache is not None:
            self._cache = cache

    def over(self, indices: Sequence[int]) -> DatasetStream:
        """The same dataset read over ``indices`` (no progress hooks), sharing this stream's skipped files."""
        other = DatasetStream(self.dataset, batch_size=self.batch_size, workers=self.workers, device=self.device,
                              indices=indices, on_skip=self.on_skip, label=None)
        other.skipped, other._named = self.skipped, self._named
        return other

    def image(self, i: int, device: torch.device | str, why: str = "now") -> torch.Tensor:
        """Image ``i`` alone, on ``device`` (an image read by an earlier pass must still be readable)."""
        x, _, _, error = self.dataset[i]
        if x is None:
            raise UserInputError(f"{self.path(i)}: was read in the scan but not {why}: {error}")
        return x.to(device)


def nothing_read(source: str | os.PathLike, listed: int, skipped: Sequence[tuple[str, str]]) -> UserInputError:
    """The one-line error of a scan that read no image at all (every file was unreadable): it says so and shows
    one reason, instead of a later step failing on empty results."""
    example = f" (e.g. {skipped[0][1]})" if skipped else ""
    if skipped and skipped[0][0] not in skipped[0][1]:
        example = f" (e.g. {skipped[0][0]}: {skipped[0][1]})"
    return UserInputError(f"none of the {listed} images of {os.fspath(source)} could be read{example}; nothing to "
                          "scan: check the files")


class StreamCounter:
    """Global indices for loaders that yield plain tensors: position in the stream."""

    def __init__(self, start: int = 0) -> None:
        self.next = start


def as_image_batch(batch: Any, counter: StreamCounter) -> ImageBatch:
    """An ``ImageBatch`` as is; a tensor (B, C, H, W) or an (x, labels, ...) pair from a user's DataLoader gets
    stream positions as indices and its labels when they are integers."""
    if isinstance(batch, ImageBatch):
        return batch
    x, label = batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        x = batch[0]
        if len(batch) > 1 and isinstance(batch[1], torch.Tensor) and not batch[1].is_floating_point():
            label = batch[1].reshape(-1).long()
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise UserInputError(f"mine: a batch must be an ImageBatch, a tensor (B, C, H, W) or (x, labels); got "
                             f"{type(batch).__name__}")
    n = x.shape[0]
    index = torch.arange(counter.next, counter.next + n, dtype=torch.int64)
    counter.next += n
    return ImageBatch(x, index, label if label is not None else torch.full((n,), -1, dtype=torch.int64), [])


def as_batches(data: Any, prep: Preprocessing | None, batch_size: int, workers: int, limit: int | None,
               device: torch.device) -> tuple[Iterable[Any], list | None, list[int] | None, list[str] | None]:
    """(batches, paths or None, labels or None, class names or None) for every kind of ``data`` the Python API
    takes: a folder or image-list file, an ``ImageList``/``ImageDataset``, a ``Dataset`` or any iterable of
    batches (a DataLoader's paths come from ``dataset.samples`` when it reads its dataset in order)."""
    if isinstance(data, (str, os.PathLike)):
        data = list_images(data, limit)
    if isinstance(data, ImageList):
        if prep is None:
            raise UserInputError("mine: reading image files needs prep= (a Preprocessing) or a LoadedModel")
        data = ImageDataset(data, prep)
    if isinstance(data, ImageDataset):
        images = data.images
        stream = DatasetStream(data, batch_size=batch_size, workers=workers, device=device)
        return stream, [str(p) for p in images.paths], images.labels, images.classes
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
