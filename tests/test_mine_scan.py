"""The dataset scan (pass 1 of ``vizkit mine``) against brute force over every stored maximum, ties included."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.errors import ModelError
from vizkit.load.dataset import ImageBatch
from vizkit.scan.state import ScanState, scan_batches
from vizkit.scan.topk import MineResult
from vizkit.testing.model_state import hook_count

LAYERS = ["0", "3"]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    # No padding: a constant image gives a constant map, so the first row-major position must win the tie.
    # In-place ReLUs right after the recorded convs: the scan must see the pre-ReLU values.
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(5, 6, 3),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()


def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 3, 14, 14, generator=g)
    x[7] = x[3]
    x[19] = x[3]           # three copies: equal maxima, the smaller indices must win
    x[10] = 0.5            # constant image: every position ties
    x[11] = -3.0
    labels = torch.tensor([i % 4 if i % 4 < 3 else -1 for i in range(23)])
    labels[20:] = 3        # class 3 has only 3 images: fewer than K entries
    return x, labels


def batches(x: torch.Tensor, labels: torch.Tensor, order: list[int], size: int) -> list[ImageBatch]:
    out = []
    for s in range(0, len(order), size):
        idx = torch.tensor(order[s:s + size])
        out.append(ImageBatch(x[idx], idx, labels[idx], []))
    return out


def reference(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image (one forward each) maxima, first argmax and spatial means of ``layer``, from a cloned output."""
    maxima, argmax, means = [], [], []
    seen: list[torch.Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    try:
        with torch.no_grad():
            for i in range(len(x)):
                seen.clear()
                model(x[i:i + 1])
                flat = seen[0][0].flatten(1).numpy()
                maxima.append(flat.max(1))
                argmax.append(flat.argmax(1))  # numpy: first occurrence
                means.append(flat.mean(1))
    finally:
        handle.remove()
    return np.stack(maxima), np.stack(argmax), np.stack(means)


def brute_topk(maxima: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: sort every image by (value desc, index asc) in plain Python; pad with (-inf, -1)."""
    n, channels = maxima.shape
    values = np.full((channels, k), -np.inf, np.float32)
    index = np.full((channels, k), -1, np.int64)
    for c in range(channels):
        ranked = sorted((i for i in range(n) if allowed is None or allowed[i]), key=lambda i: (-maxima[i, c], i))
        for slot, i in enumerate(ranked[:k]):
            values[c, slot], index[c, slot] = maxima[i, c], i
    return values, index


def run_scan(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, k: int, size: int,
             order: list[int] | None = None, n_classes: int = 4) -> MineResult:
    state = ScanState(LAYERS, k, n_classes=n_classes)
    scan_batches(model, batches(x, labels, order or list(range(len(x))), size), state)
    return state.result([f"img{i}" for i in range(len(x))], classes=[str(c) for c in range(n_classes)] or None)


@pytest.mark.parametrize("k,size", [(4, 5), (9, 23), (30, 7)])
def test_scan_equals_brute_force(k: int, size: int) -> None:
    model = tiny_net()
    x, labels = images()
    result = run_scan(model, x, labels, k, size)
    assert result.images_scanned == 23 and result.k == k
    for layer in LAYERS:
        maxima, argmax, means = reference(model, x, layer)
        got = result.layers[layer]
        values, index = brute_topk(maxima, k)
        np.testing.assert_array_equal(got.image_index, index)
        np.testing.assert_allclose(got.values, values, rtol=1e-6, atol=1e-6)
        kk = min(k, 23)
        top = torch.topk(torch.from_numpy(maxima), kk, dim=0).values.T.numpy()  # brute force over all maxima
        np.testing.assert_allclose(got.values[:, :kk], top, rtol=1e-6, atol=1e-6)
        width = {"0": 12, "3": 4}[layer]
        for c in range(got.channels):
            for slot in range(kk):
                i = index[c, slot]
                assert tuple(got.positions[c, slot]) == divmod(int(argmax[i, c]), width)
        if k > 23:
            assert (got.image_index[:, 23:] == -1).all() and (got.positions[:, 23:] == -1).all()
            assert np.isneginf(got.values[:, 23:]).all()
        np.testing.assert_allclose(got.mean, means.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.rate, (maxima > 0).mean(0).astype(np.float32))
        assert got.dead.dtype == bool and (got.dead == (maxima.max(0) <= 0)).all()
        for cls in range(4):
            cv, ci = brute_topk(maxima, k, allowed=(labels == cls).numpy())
            assert got.class_values is not None and got.class_image_index is not None
            np.testing.assert_array_equal(got.class_image_index[cls], ci)
            np.testing.assert_allclose(got.class_values[cls], cv, rtol=1e-6, atol=1e-6)


def test_tie_rule_duplicates_and_positions() -> None:
    model = tiny_net()
    x, labels = images()
    result = run_scan(model, x, labels, 23, 4, order=list(range(22, -1, -1)))  # reversed stream order
    for layer in LAYERS:
        got = result.layers[layer]
        for c in range(got.channels):
            row = list(got.image_index[c])
            assert sorted(row) == list(range(23))  # one slot per image
            assert row.index(3) < row.index(7) < row.index(19)  # equal maxima: smaller index first
            assert row.index(19) == row.index(3) + 2
            assert tuple(got.positions[c, row.index(10)]) == (0, 0)  # constant map: first row-major position


def test_duplicate_index_takes_one_slot() -> None:
    model = tiny_net()
    x, labels = images()
    order = [*range(23), 0, 1, 2, 0]  # padding-like repeats of the same global index
    state = ScanState(LAYERS, 23, n_classes=4)
    scan_batches(model, batches(x, labels, order, 6), state)
    for layer in LAYERS:
        index = state.result([""] * 23).layers[layer].image_index
        assert all(sorted(row) == list(range(23)) for row in index.tolist())


def test_merge_and_arrays_round_trip() -> None:
    model = tiny_net()
    x, labels = images()
    full = run_scan(model, x, labels, 5, 4)
    paths = [f"img{i}" for i in range(23)]
    classes = ["0", "1", "2", "3"]
    parts = []
    for order in ([i for i in range(23) if i % 3 == 0], [i for i in range(23) if i % 3 != 0]):
        state = ScanState(LAYERS, 5, n_classes=4)
        scan_batches(model, batches(x, labels, order, 4), state)
        parts.append(state.result(paths, classes=classes))
    merged = parts[1].merge(parts[0])
    assert merged.images_scanned == 23
    for layer in LAYERS:
        a, b = merged.layers[layer], full.layers[layer]
        np.testing.assert_array_equal(a.image_index, b.image_index)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.class_image_index, b.class_image_index)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)
        np.testing.assert_allclose(a.rate, b.rate, rtol=1e-6)
    arrays = full.to_arrays()
    assert set(arrays) == {"paths", "rank", "classes"} | {f"{layer}/{key}" for layer in LAYERS for key in (
        "values", "image_index", "positions", "mean", "rate", "ties", "ranked", "class_values",
        "class_image_index")}
    assert arrays["0/values"].dtype == np.float32 and arrays["0/image_index"].dtype == np.int64
    assert arrays["3/positions"].shape == (6, 5, 2)
    back = MineResult.from_arrays(arrays, images_scanned=23)
    assert back.paths == paths and back.classes == classes and back.k == 5 and list(back.layers) == LAYERS
    for layer in LAYERS:
        for key, value in full.layers[layer].__dict__.items():
            np.testing.assert_array_equal(getattr(back.layers[layer], key), value)
    other = MineResult.from_arrays(full.to_arrays(), images_scanned=23)
    other.paths = [f"other{i}" for i in range(23)]
    appended = full.merge(other)  # different path lists: the second dataset's indices follow the first's
    assert appended.paths == paths + other.paths and appended.images_scanned == 46
    for layer in LAYERS:
        got, one = appended.layers[layer], full.layers[layer]
        for c in range(one.channels):
            pairs = [(v, i + shift) for shift in (0, 23)
                     for v, i in zip(one.values[c], one.image_index[c], strict=True)]
            best = sorted(pairs, key=lambda p: (-p[0], p[1]))[:5]
            assert got.image_index[c].tolist() == [i for _, i in best]


def test_model_left_as_it_was_also_after_an_error() -> None:
    model = tiny_net().train()
    model[0].weight.requires_grad_(True)
    x, labels = images()
    run_scan(model, x, labels, 3, 8)
    assert model.training and hook_count(model) == 0 and model[0].weight.requires_grad

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = tiny_net()
            self.unused = nn.Conv2d(3, 3, 1)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.body(t)

    broken = Broken()
    with pytest.raises(ModelError, match="did not run"):
        scan_batches(broken, batches(x, labels, [0, 1], 2), ScanState(["body.0", "unused"], 3))
    assert hook_count(broken) == 0 and broken.training and not broken.body.training  # each flag restored


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scan_equals_cpu() -> None:
    model = tiny_net().double()
    x, labels = images()
    x = x.double()
    cpu = run_scan(model, x, labels, 6, 5)
    state = ScanState(LAYERS, 6, n_classes=4, device="cuda")
    scan_batches(model.cuda(), batches(x, labels, list(range(23)), 5), state)
    gpu = state.result([f"img{i}" for i in range(23)], classes=["0", "1", "2", "3"])
    for layer in LAYERS:  # float64: no TF32, so equal values and therefore equal ties
        np.testing.assert_array_equal(gpu.layers[layer].image_index, cpu.layers[layer].image_index)
        np.testing.assert_array_equal(gpu.layers[layer].positions, cpu.layers[layer].positions)
        np.testing.assert_allclose(gpu.layers[layer].values, cpu.layers[layer].values, rtol=1e-6)
