"""vizkit.load.dataset: listing rules, unreadable files reported (never raised), batching, fingerprint."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vizkit.errors import UserInputError
from vizkit.load import Preprocessing
from vizkit.load.dataset import ImageDataset, collate_images, list_images
from vizkit.scan.stream import image_loader

PREP = Preprocessing(8, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, np.uint8)).save(path)
    return path


def test_folder_is_recursive_sorted_with_classes(tmp_path: Path) -> None:
    for rel in ["dog/b.png", "cat/z/a.png", "cat/b.jpg", "dog/a.PNG", "top.png"]:
        _png(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    _png(tmp_path / ".hidden" / "x.png")
    _png(tmp_path / "cat" / ".x.png")
    images = list_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in images.paths]
    assert rel == ["cat/b.jpg", "cat/z/a.png", "dog/a.PNG", "dog/b.png", "top.png"]
    assert images.classes == ["cat", "dog"]
    assert images.labels == [0, 0, 1, 1, -1]
    assert images.source == str(tmp_path)


def test_flat_folder_has_no_classes_and_limit_keeps_first(tmp_path: Path) -> None:
    for name in ["c.png", "a.png", "b.png"]:
        _png(tmp_path / name)
    images = list_images(tmp_path, limit=2)
    assert [p.name for p in images.paths] == ["a.png", "b.png"]
    assert images.labels is None and images.classes is None
    with pytest.raises(UserInputError, match="--limit"):
        list_images(tmp_path, limit=0)


def test_text_file_in_file_order_relative_to_the_file(tmp_path: Path) -> None:
    a = _png(tmp_path / "imgs" / "a.png")
    b = _png(tmp_path / "b.png")
    listing = tmp_path / "lists" / "files.txt"
    listing.parent.mkdir()
    listing.write_text(f"# comment\n\n../b.png\n{a}\n  ../missing.png  \n")
    images = list_images(listing)
    assert images.paths == [listing.parent / "../b.png", a, listing.parent / "../missing.png"]
    assert images.paths[0].resolve() == b.resolve()
    assert images.labels is None and images.classes is None


def test_missing_or_empty_data_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found") as err:
        list_images(tmp_path / "nope")
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no images in"):
        list_images(tmp_path / "empty")


def test_unreadable_file_gives_message_not_exception(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 255)
    (tmp_path / "b.png").write_bytes(b"this is not a png")
    _png(tmp_path / "c.png", 0)
    dataset = ImageDataset(list_images(tmp_path), PREP)
    x, i, label, message = dataset[1]
    assert x is None and i == 1 and label == -1
    assert "b.png" in message and "\n" not in message
    x, i, label, message = dataset[0]
    assert x is not None and x.shape == (3, 8, 8) and x.dtype == torch.float32 and message == ""
    assert torch.allclose(x, torch.ones_like(x))  # white -> (1 - 0.5) / 0.5


def test_collate_drops_unreadable_and_reports_it(tmp_path: Path) -> None:
    for name, value in [("a.png", 0), ("c.png", 255)]:
        _png(tmp_path / "k" / name, value)
    (tmp_path / "k" / "b.png").write_bytes(b"")
    dataset = ImageDataset(list_images(tmp_path), PREP)
    batch = collate_images([dataset[i] for i in range(3)])
    assert batch.x.shape == (2, 3, 8, 8)
    assert batch.index.tolist() == [0, 2] and batch.label.tolist() == [0, 0]
    assert len(batch.skipped) == 1 and batch.skipped[0][0] == 1 and "empty" in batch.skipped[0][1]
    only_bad = collate_images([dataset[1]])
    assert only_bad.x.numel() == 0 and only_bad.index.numel() == 0 and len(only_bad.skipped) == 1


def test_loader_order_indices_and_workers(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / f"{i}.png", 40 * i)
    dataset = ImageDataset(list_images(tmp_path), PREP)
    batches = list(image_loader(dataset, batch_size=2, device=torch.device("cpu")))
    assert [b.index.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    subset = list(image_loader(dataset, batch_size=2, indices=[3, 4, 1], workers=1, device=torch.device("cpu")))
    assert [b.index.tolist() for b in subset] == [[3, 4], [1]]
    assert torch.equal(subset[0].x[0], dataset[3][0])


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png", 0)
    _png(tmp_path / "b.png", 0)
    first = list_images(tmp_path).fingerprint()
    assert list_images(tmp_path).fingerprint() == first
    _png(a, 200)  # same size possible; mtime moves
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 1_000_000))
    second = list_images(tmp_path).fingerprint()
    assert second != first
    _png(tmp_path / "c.png")
    assert list_images(tmp_path).fingerprint() != second
    assert list_images(tmp_path, limit=2).fingerprint() == second
