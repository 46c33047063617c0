"""``vizkit lab train``: train ``labnet`` on a lab folder, deterministically, with a checkpoint after every epoch.

Recipe: Adam (lr 3e-3, cosine decay to 0 over the run), batch 32, cross-entropy, no augmentation (augmentation
would move the mark), images shuffled by a seeded generator, weights initialised from ``torch.manual_seed(seed)``.
Deterministic algorithms are switched on for the run and restored afterwards, and so is the thread count.

One thread by default: labnet is so small that a second intra-op thread costs more in synchronisation than it
saves (measured on a loaded 2-core machine: 2.0 CPU-s per epoch with one thread, 17 with two). With the same
thread count and torch build the run repeats bit for bit; another count can change the last bits of sums.

Writes into ``out`` (default ``DIR/labnet``): ``epoch_01.pt`` ... ``epoch_NN.pt`` and ``labnet.pt`` (state
dicts, ``torch.load(..., weights_only=True)``), ``metrics.json`` (the lab numbers, the training log and the
timings) and, last, ``manifest.json`` (versions, settings, sha256 of every file). Loading them:
``load_model("labnet", weights="DIR/labnet/labnet.pt")``.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.lab.dataset import read_lab
from vizkit.lab.labnet import LabNet, labnet_preprocessing

__all__ = ["TrainConfig", "TrainResult", "load_split", "train_labnet"]


@dataclass(frozen=True)
class TrainConfig:
    lab_dir: str
    out: str | None = None         # default: lab_dir/labnet
    epochs: int = 15
    seed: int = 0
    batch_size: int = 32
    lr: float = 3e-3
    half: bool = False             # store weights as float16 (half the size; how vizkit's shipped files are made)
    threads: int = 1               # torch threads while training (restored afterwards); see the module docstring


@dataclass
class TrainResult:
    out: Path
    checkpoints: list[Path]
    final: Path
    metrics: dict
    seconds: float
    cpu_seconds: float


def load_split(lab_dir: str | Path, split: str, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of ``split`` as labnet input (N, 3, 64, 64), their labels (N,) and paths relative to the lab.

    Images go through ``vizkit.load`` exactly as every vizkit command reads them."""
    from vizkit.load import load_image, preprocess

    prep = labnet_preprocessing()
    root = Path(lab_dir)
    xs, ys, paths = [], [], []
    for label, name in enumerate(classes):
        folder = root / split / name
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("*.png")):
            xs.append(preprocess(load_image(p), prep))
            ys.append(label)
            paths.append(p.relative_to(root).as_posix())
    if not xs:
        return torch.empty(0, 3, prep.crop, prep.crop), torch.empty(0, dtype=torch.long), []
    return torch.cat(xs), torch.tensor(ys, dtype=torch.long), paths


@contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    before, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(threads_before)


def _state(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    # float16 halves the files; integer buffers (BatchNorm's num_batches_tracked) keep their type
    return {k: (v.detach().half() if half and v.is_floating_point() else v.detach().clone())
            for k, v in model.state_dict().items()}


def train_labnet(config: TrainConfig, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train labnet on ``config.lab_dir``; checkpoints, final weights and ``metrics.json`` land in the out folder."""
    from vizkit.lab.metrics import evaluate_lab
    from vizkit.outputs.atomic import atomic_dir

    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0 or config.threads < 1:
        raise UserInputError(f"epochs, batch size and learning rate must be positive, got {config}")
    lab = read_lab(config.lab_dir)
    classes = list(lab["classes"])
    out = Path(config.out) if config.out else Path(config.lab_dir) / "labnet"
    t0, c0 = time.perf_counter(), time.process_time()
    x, y, _ = load_split(config.lab_dir, "train", classes)
    if len(y) == 0:
        raise UserInputError(f"no training images in {Path(config.lab_dir) / 'train'}")
    t_load = time.perf_counter() - t0
    history: list[dict[str, float]] = []
    with atomic_dir(out) as tmp, _deterministic(config.threads):
        torch.manual_seed(config.seed)
        model = LabNet(num_classes=len(classes))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        steps = config.epochs * math.ceil(len(y) / config.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        order = torch.Generator().manual_seed(config.seed)
        checkpoints = []
        for epoch in range(1, config.epochs + 1):
            loss, acc = _epoch(model, opt, sched, x, y, config.batch_size, order)
            history.append({"epoch": epoch, "loss": loss, "train_accuracy": acc})
            name = f"epoch_{epoch:02d}.pt"
            torch.save(_state(model, config.half), tmp / name)
            checkpoints.append(out / name)
            if log:
                log(f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, train accuracy {acc:.3f}")
        torch.save(_state(model, config.half), tmp / "labnet.pt")
        t_train = time.perf_counter() - t0 - t_load
        model.load_state_dict(torch.load(tmp / "labnet.pt", weights_only=True))  # evaluate what was written
        numbers = evaluate_lab(model.eval(), config.lab_dir)
        seconds = {"load": t_load, "train": t_train, "total": time.perf_counter() - t0}
        metrics = {
            "lab": numbers.to_dict(),
            "history": history,
            "config": asdict(config),
            "seconds": seconds,
            "cpu_seconds": time.process_time() - c0,
            "torch_threads": config.threads,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        _write_manifest(tmp, config, seconds)
    return TrainResult(out, checkpoints, out / "labnet.pt", metrics, time.perf_counter() - t0,
                       time.process_time() - c0)


def _write_manifest(folder: Path, config: TrainConfig, seconds: dict[str, float]) -> None:
    """manifest.json last: versions, settings and the sha256 of every checkpoint (vizkit.outputs.manifest)."""
    from vizkit.outputs.info import ReportInfo
    from vizkit.outputs.manifest import write_manifest

    info = ReportInfo(image_path=None, model="labnet", weights="trained by vizkit lab train", weights_sha256=None,
                      pretrained=True, preprocessing=labnet_preprocessing().to_dict(), settings=asdict(config),
                      command=["vizkit", "lab", "train", config.lab_dir])
    write_manifest(folder, info, seconds)


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
           x: torch.Tensor, y: torch.Tensor, batch: int, gen: torch.Generator) -> tuple[float, float]:
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    total, correct = 0.0, 0
    for i in range(0, len(y), batch):
        idx = perm[i:i + batch]
        logits = model(x[idx])
        loss = nn.functional.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y[idx]).sum())
    model.eval()
    return total / len(y), correct / len(y)
