"""Test oracles for `vizkit mine` pass 2 and rendering: an in-memory image source and a brute-force scan."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vizkit.capture.recorder import Recorder
from vizkit.load.preprocessing import Preprocessing
from vizkit.scan.topk import LayerTopK, MineResult

PREP = Preprocessing(resize=32, crop=32, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))


class TensorImages:
    """``source[i]`` -> (x, i, -1, "") like ImageDataset, from tensors; None marks an unreadable file."""

    def __init__(self, images: Sequence[torch.Tensor | None], prep: Preprocessing = PREP) -> None:
        self.images, self.prep = list(images), prep

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int, str]:
        x = self.images[i]
        return (x, i, -1, "") if x is not None else (None, i, -1, "unreadable for the test")


def brute_force_result(model: nn.Module, images: Sequence[torch.Tensor | None], layers: Sequence[str],
                       k: int) -> MineResult:
    """Top-K by spatial maximum, one image at a time, sorted in Python: value desc, then image index; position:
    the first maximum in row-major order."""
    maxima: dict[str, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {name: [] for name in layers}
    for i, x in enumerate(images):
        if x is None:
            continue
        with torch.no_grad(), Recorder(model.eval(), layers, stop=True) as rec:
            rec.run(x[None])
        for name in layers:
            a = rec.outputs[name][0].float()
            flat = a.flatten(1)
            peak = flat.max(dim=1).values
            first = (flat == peak[:, None]).float().argmax(dim=1)
            pos = np.stack([first.numpy() // a.shape[2], first.numpy() % a.shape[2]], axis=1)
            maxima[name].append((i, peak.numpy(), pos, a.mean(dim=(1, 2)).numpy()))
    result_layers = {}
    for name, rows in maxima.items():
        c = rows[0][1].shape[0]
        values = np.full((c, k), -np.inf, np.float32)
        index = np.full((c, k), -1, np.int64)
        positions = np.full((c, k, 2), -1, np.int64)
        for ch in range(c):
            ranked = sorted(rows, key=lambda r: (-float(r[1][ch]), r[0]))[:k]
            for j, (i, peak, pos, _) in enumerate(ranked):
                values[ch, j], index[ch, j], positions[ch, j] = peak[ch], i, pos[ch]
        mean = np.mean([r[3] for r in rows], axis=0).astype(np.float32)
        rate = np.mean([r[1] > 0 for r in rows], axis=0).astype(np.float32)
        result_layers[name] = LayerTopK(values, index, positions, mean, rate)
    paths = [f"data/img{i:03d}.png" for i in range(len(images))]
    skipped = [(paths[i], "unreadable for the test") for i, x in enumerate(images) if x is None]
    return MineResult(paths, result_layers, k, skipped=skipped,
                      images_scanned=sum(x is not None for x in images))


def small_vgg() -> nn.Sequential:
    """Conv/BN/ReLU/max-pool chain with nonzero biases and BN statistics (rule mistakes must show)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(12, 16, 3, padding=1, dilation=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(8, generator=g) + 0.5)
            elif isinstance(m, nn.Conv2d):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def random_images(n: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, size, size, generator=g) for _ in range(n)]
