"""``torch.distributed`` for dataset scans: one process per device (``torchrun``), shards by ``DistributedSampler``,
an exact all-gather merge of the per-rank top-K states.

Started by ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_ADDR`` in the environment), a run joins the
process group itself: NCCL when the ranks use CUDA, gloo on CPUs. Without those variables everything here is a
single process and no process group is created.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from vizkit.scan.state import ScanState

__all__ = ["Ranks", "barrier", "gather_objects", "gather_state", "process_group", "shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, requested: torch.device) -> torch.device:
        """Each rank takes its own GPU (``cuda:LOCAL_RANK``) when CUDA was asked for."""
        if self.active and requested.type == "cuda" and requested.index is None:
            return torch.device("cuda", self.local_rank)
        return requested


def _env_ranks() -> Ranks:
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def process_group(requested: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the ``torchrun`` process group for the block (if started by torchrun and none exists yet); yields the
    ranks and this rank's device. A group created here is destroyed on exit."""
    ranks = _env_ranks()
    device = ranks.device(requested)
    created = False
    if ranks.active and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    try:
        yield ranks, device
    finally:
        if created:
            dist.destroy_process_group()


class _Indices(Dataset[int]):
    """A stand-in dataset of length n: the sampler only needs its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def shard(n: int, ranks: Ranks) -> tuple[list[int], np.ndarray | None]:
    """This rank's global indices (``DistributedSampler``, no shuffling, padded to equal length) and which of
    them it owns for the means and rates (padding repeats an image another rank already counts)."""
    if not ranks.active:
        return list(range(n)), None
    sampler: DistributedSampler[int] = DistributedSampler(_Indices(n), num_replicas=ranks.world, rank=ranks.rank,
                                                          shuffle=False)
    indices = [int(i) for i in sampler]
    owned = np.zeros(n, dtype=bool)
    for i, global_index in enumerate(indices):  # padded-list position rank + i * world; >= n means padding
        if ranks.rank + i * ranks.world < n:
            owned[global_index] = True
    return indices, owned


def gather_objects(value: T, ranks: Ranks) -> list[T]:
    """Every rank's ``value`` in rank order (a one-element list without a process group)."""
    if not ranks.active:
        return [value]
    out: list[T] = [value] * ranks.world  # placeholders, overwritten by the gather
    dist.all_gather_object(out, value)
    return out


def gather_state(state: ScanState, ranks: Ranks) -> ScanState:
    """The exact merge of all ranks' states (values, global indices, positions, sums), on every rank."""
    if not ranks.active:
        return state
    parts = gather_objects(state.state_dict(), ranks)
    merged = ScanState(state.layers, state.k, n_classes=state.n_classes, device=state.device)
    for part in parts:
        other = ScanState(state.layers, state.k, n_classes=state.n_classes, device=state.device)
        other.load_state_dict(part)
        merged.merge(other)
    return merged


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()
