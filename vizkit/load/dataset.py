"""Image folders and image lists as a ``torch.utils.data`` dataset, for commands that scan many images.

``list_images(DATA)``: DATA is a folder, read recursively in sorted path order (first-level subfolders name the
classes, as in torchvision's ``ImageFolder``), a text file with one image path per line, or a single image file.
``ImageDataset`` never raises for an unreadable file: it returns the one-line reason instead, ``collate_images``
drops such samples from the batch and reports them, so a scan goes on past bad files.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vizkit.errors import UserInputError, VizkitError
from vizkit.load.images import load_image
from vizkit.load.preprocessing import Preprocessing, preprocess

__all__ = ["IMAGE_SUFFIXES", "ImageBatch", "ImageDataset", "ImageList", "collate_images", "list_images"]

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

Sample = tuple[torch.Tensor | None, int, int, str]


@dataclass(frozen=True)
class ImageList:
    """The images of one DATA argument, in scan order; ``labels[i]`` indexes ``classes`` (-1: no class)."""

    paths: list[Path]
    labels: list[int] | None
    classes: list[str] | None
    source: str

    def fingerprint(self) -> str:
        """sha256 over (path relative to DATA, size, mtime_ns) of every entry: changes when any file changes.
        Computed once per ImageList (a million files take seconds to stat)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = self._compute_fingerprint()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        root = Path(self.source)
        root = root if root.is_dir() else root.parent
        for path in self.paths:
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                rel = path.as_posix()
            try:
                st = path.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{rel}\0{stamp}\n".encode())
        return digest.hexdigest()


def list_images(data: str | os.PathLike, limit: int | None = None) -> ImageList:
    """List the images of ``data`` (folder, text file of paths, or one image file); ``limit`` keeps the first N."""
    if limit is not None and limit < 1:
        raise UserInputError(f"--limit must be at least 1, got {limit}")
    source = os.fspath(data)
    root = Path(source)
    if not root.exists():
        raise UserInputError(f"DATA not found: {root} (give a folder of images or a text file of image paths)")
    if root.is_dir():
        images = _list_folder(root, source)
    elif root.suffix.lower() in IMAGE_SUFFIXES:
        images = ImageList([root], None, None, source)
    else:
        images = _read_list_file(root, source)
    if not images.paths:
        raise UserInputError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit is not None:
        labels = images.labels[:limit] if images.labels is not None else None
        images = ImageList(images.paths[:limit], labels, images.classes, source)
    return images


def _list_folder(root: Path, source: str) -> ImageList:
    """Recursive, sorted by path components; hidden files and folders (``.name``) are ignored."""
    found: list[tuple[tuple[str, ...], Path]] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path.relative_to(root).parts, path))
    found.sort(key=lambda item: item[0])
    paths = [path for _, path in found]
    classes = sorted({parts[0] for parts, _ in found if len(parts) > 1})
    if not classes:
        return ImageList(paths, None, None, source)
    index = {name: i for i, name in enumerate(classes)}
    labels = [index[parts[0]] if len(parts) > 1 else -1 for parts, _ in found]  # files at the top: no class
    return ImageList(paths, labels, classes, source)


def _read_list_file(path: Path, source: str) -> ImageList:
    """One path per line; blank lines and ``#`` comments skipped; relative paths are relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"cannot read the image list {path}: {err}") from None
    paths = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            p = Path(entry).expanduser()
            paths.append(p if p.is_absolute() else path.parent / p)
    return ImageList(paths, None, None, source)


class ImageDataset(Dataset):
    """``dataset[i]`` -> (x (C, H, W) float32 or None, i, label or -1, "" or the reason the file is unreadable)."""

    def __init__(self, images: ImageList, prep: Preprocessing) -> None:
        self.images = images
        self.prep = prep

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, i: int) -> Sample:
        label = self.images.labels[i] if self.images.labels is not None else -1
        try:
            x = preprocess(load_image(self.images.paths[i]), self.prep)[0]
        except VizkitError as err:
            return None, i, label, str(err)
        except OSError as err:  # e.g. permission denied while opening
            return None, i, label, f"cannot read {self.images.paths[i]}: {err}"
        return x, i, label, ""


@dataclass
class ImageBatch:
    """The readable images of one batch, their global indices and labels, and the unreadable ones."""

    x: torch.Tensor                    # (B, C, H, W); shape (0,) when no image of the batch was readable
    index: torch.Tensor                # (B,) int64 global indices into ImageList.paths
    label: torch.Tensor                # (B,) int64, -1 when unknown
    skipped: list[tuple[int, str]]     # (global index, one-line reason)

    def pin_memory(self) -> ImageBatch:  # DataLoader(pin_memory=True) calls this on custom batch types
        return ImageBatch(self.x.pin_memory(), self.index.pin_memory(), self.label.pin_memory(), self.skipped)


def collate_images(samples: Sequence[Sample]) -> ImageBatch:
    """Stack the readable samples; unreadable ones go to ``skipped`` with their reason."""
    good = [s for s in samples if s[0] is not None]
    skipped = [(int(s[1]), s[3]) for s in samples if s[0] is None]
    x = torch.stack([s[0] for s in good]) if good else torch.empty(0)  # type: ignore[misc]
    index = torch.tensor([int(s[1]) for s in good], dtype=torch.int64)
    label = torch.tensor([int(s[2]) for s in good], dtype=torch.int64)
    return ImageBatch(x, index, label, skipped)
