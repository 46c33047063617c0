"""vizkit.scan: the one dataset stream (order, progress, skipped files named once, resume, cache), sharding that
covers every image once, checkpoints written by the stream's hook, and the exact merge of shards."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vizkit.load import Preprocessing
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.scan.checkpoint import CheckpointSaver, resume
from vizkit.scan.distributed import Ranks, gather_state, shard
from vizkit.scan.state import ScanState, scan_batches
from vizkit.scan.stream import DatasetStream, as_batches

PREP = Preprocessing(8, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _folder(root: Path, n: int, bad: tuple[int, ...] = ()) -> ImageDataset:
    """n constant images (image i has value 10 * i, so a batch names its images), the ``bad`` ones unreadable."""
    for i in range(n):
        path = root / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in bad:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((9, 11, 3), 10 * i, np.uint8)).save(path)
    return ImageDataset(list_images(root), PREP)


def _which(x: torch.Tensor) -> list[int]:
    """The image numbers of a batch, read back from the pixel values ((v / 255 - 0.5) / 0.5 = x)."""
    return [round(float((v * 0.5 + 0.5) * 255) / 10) for v in x.mean(dim=(1, 2, 3))]


def test_batches_in_order_bad_files_named_once_and_progress_after_use(tmp_path: Path) -> None:
    dataset = _folder(tmp_path, 7, bad=(2, 5))
    events: list[tuple] = []
    stream = DatasetStream(dataset, batch_size=3, progress=lambda done, total: events.append(("progress", done, total)),
                           on_skip=lambda path, why: events.append(("skip", Path(path).name)))
    for _ in range(2):  # a second pass (evolve: one per checkpoint) names nothing again
        seen = []
        for batch in stream:
            events.append(("used", batch.index.tolist()))
            seen += batch.index.tolist()
            assert _which(batch.x) == batch.index.tolist()
        assert seen == [0, 1, 3, 4, 6]
        assert stream.done == stream.total == 7
    assert [i for i, _ in stream.skipped] == [2, 5]
    assert all(dataset.images.paths[i].name in why for i, why in stream.skipped)  # the reason names the file
    first_pass = events[: events.index(("progress", 7, 7)) + 1]
    assert first_pass == [("skip", "02.png"), ("used", [0, 1]), ("progress", 3, 7), ("skip", "05.png"),
                          ("used", [3, 4]), ("progress", 6, 7), ("used", [6]), ("progress", 7, 7)]
    assert [e for e in events if e[0] == "skip"] == [("skip", "02.png"), ("skip", "05.png")]


def test_indices_start_and_earlier_skips_resume_a_pass(tmp_path: Path) -> None:
    dataset = _folder(tmp_path, 8)
    named: list[str] = []
    done: list[int] = []
    stream = DatasetStream(dataset, batch_size=2, indices=[7, 0, 5, 3, 1], start=2, skipped=[(6, "was unreadable")],
                           progress=lambda d, t: done.append(d), on_skip=lambda path, why: named.append(why))
    got = [i for batch in stream for i in batch.index.tolist()]
    assert got == [5, 3, 1]
    assert done == [4, 5] and stream.total == 5
    assert named == ["was unreadable"] and stream.skipped == [(6, "was unreadable")]


def test_cache_replays_the_first_pass_without_reading_files(tmp_path: Path) -> None:
    cached = DatasetStream(_folder(tmp_path / "a", 5), batch_size=2, cache_bytes=1 << 20)
    uncached = DatasetStream(_folder(tmp_path / "b", 5), batch_size=2, cache_bytes=8)  # one image does not fit
    first = [b.x.clone() for b in cached]
    list(uncached)
    for path in [*(tmp_path / "a").iterdir(), *(tmp_path / "b").iterdir()]:
        path.unlink()
    again = [b.x for b in cached]
    assert len(again) == len(first) and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert sum(b.index.numel() for b in uncached) == 0 and len(uncached.skipped) == 5  # read again: all gone


def test_over_shares_the_skipped_files(tmp_path: Path) -> None:
    named: list[str] = []
    stream = DatasetStream(_folder(tmp_path, 4, bad=(1,)), batch_size=4, on_skip=lambda p, why: named.append(p))
    list(stream)
    sub = stream.over([3, 1, 0])
    assert [i for b in sub for i in b.index.tolist()] == [3, 0]
    assert len(named) == 1 and sub.skipped is stream.skipped and len(stream.skipped) == 1
    x = stream.dataset[3][0]
    assert x is not None and torch.equal(stream.image(3, "cpu"), x)


@pytest.mark.parametrize("n,world", [(1, 1), (7, 2), (10, 3), (2, 4), (12, 4)])
def test_shards_cover_every_index_once(n: int, world: int) -> None:
    parts = [shard(n, Ranks(rank, world)) for rank in range(world)]
    lists = [indices for indices, _ in parts]
    assert all(len(indices) == math.ceil(n / world) for indices in lists)  # equal length: padded
    assert sorted({i for indices in lists for i in indices}) == list(range(n))
    if world == 1:
        assert parts[0][1] is None
        return
    owned = np.stack([o for _, o in parts if o is not None])  # (world, n): who counts image i in the means and rates
    assert (owned.sum(0) == 1).all()
    for indices, mask in zip(lists, owned, strict=True):
        assert set(np.flatnonzero(mask)) <= set(indices)


def test_shard_states_merge_to_the_single_process_scan(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3)).eval()
    dataset = _folder(tmp_path, 9, bad=(4,))
    paths = [str(p) for p in dataset.images.paths]
    whole = ScanState(["1", "2"], 3)
    scan_batches(model, DatasetStream(dataset, batch_size=1), whole)  # one image per forward: no batch-size rounding
    world = 3
    merged = ScanState(["1", "2"], 3)
    for rank in range(world):
        indices, owned = shard(len(paths), Ranks(rank, world))
        part = ScanState(["1", "2"], 3)
        scan_batches(model, DatasetStream(dataset, batch_size=1, indices=indices), part, owned=owned)
        merged.merge(part)
    a, b = whole.result(paths).to_arrays(), merged.result(paths).to_arrays()
    assert list(a) == list(b) and whole.count == merged.count == 8
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert gather_state(whole, Ranks()) is whole  # one process: nothing to gather


def test_checkpoint_hook_saves_every_n_and_resumes(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3)).eval()
    dataset = _folder(tmp_path / "data", 7, bad=(1,))
    identity = {"dataset": "d"}
    path = tmp_path / "checkpoint.pt"
    assert resume(path, identity, ScanState(["0"], 2), 7) == (0, [])  # none yet: from the start
    state = ScanState(["0"], 2)
    stream = DatasetStream(dataset, batch_size=2)
    saves: list[int] = []
    saver = CheckpointSaver(path, identity, 3, state, stream)
    stream.hooks += [saver, lambda done, total: saves.append(saver.saved)]
    scan_batches(model, stream, state)
    assert saves == [0, 4, 4, 7]  # saved whenever 3 entries have passed since the last save
    restored = ScanState(["0"], 2)
    start, skipped = resume(path, identity, restored, 7)
    assert start == 7 and [i for i, _ in skipped] == [1]
    np.testing.assert_array_equal(restored.result(["p"] * 7).to_arrays()["0/values"],
                                  state.result(["p"] * 7).to_arrays()["0/values"])


def test_as_batches_keeps_paths_of_image_data_and_positions_of_tensors(tmp_path: Path) -> None:
    dataset = _folder(tmp_path, 3)
    batches, paths, labels, names = as_batches(dataset.images, PREP, 2, 0, None, torch.device("cpu"))
    assert isinstance(batches, DatasetStream) and paths == [str(p) for p in dataset.images.paths]
    tensors = TensorDataset(torch.zeros(5, 3, 4, 4), torch.arange(5))
    batches, paths, labels, names = as_batches(tensors, None, 2, 0, None, torch.device("cpu"))
    assert isinstance(batches, DataLoader) and paths is None and labels is None and names is None
    assert [len(x) for x, _ in batches] == [2, 2, 1]
