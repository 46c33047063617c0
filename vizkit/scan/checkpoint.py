"""Checkpoints of a ``vizkit mine`` scan: the state after the first n images of this process's (fixed) order.

A checkpoint is written atomically (temporary file, then ``os.replace``) and holds tensors, ints and strings
only, so ``torch.load(weights_only=True)`` reads it. It records what it was made from -- dataset fingerprint,
model, a hash of the weights actually loaded, preprocessing, layers, K, per-class, ranks -- and ``--resume``
refuses a checkpoint whose record differs, naming the difference.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.outputs.progress import note
from vizkit.scan.distributed import Ranks

if TYPE_CHECKING:
    from vizkit.load.dataset import ImageList
    from vizkit.load.models import LoadedModel
    from vizkit.scan.state import ScanState
    from vizkit.scan.stream import DatasetStream

__all__ = ["Checkpoint", "CheckpointSaver", "checkpoint_path", "load_checkpoint", "model_digest", "resume",
           "save_checkpoint", "saved_positions", "scan_identity"]

log = logging.getLogger("vizkit")

FORMAT = 1


def checkpoint_path(mine_dir: Path, ranks: Ranks) -> Path:
    """``checkpoint.pt``; with several ranks one file per rank (each resumes its own shard)."""
    name = "checkpoint.pt" if not ranks.active else f"checkpoint-rank{ranks.rank}-of-{ranks.world}.pt"
    return Path(mine_dir) / name


def model_digest(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): catches changed weights, also random inits."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def scan_identity(images: ImageList, loaded: LoadedModel, layers: Sequence[str], top_k: int, per_class: bool,
                  ranks: Ranks, ranked: str = "activation") -> dict[str, str]:
    """What a checkpoint must match to be resumed (names are the words of the refusal message); ``ranked``: what
    the scan ranks (``activation``, or ``relevance for class C``)."""
    return {"dataset": images.fingerprint(), "model": loaded.name, "weights": model_digest(loaded.model),
            "preprocessing": json.dumps(loaded.preprocessing.to_dict(), sort_keys=True),
            "layer list": ",".join(layers), "top-k": str(top_k), "per-class": str(per_class),
            "number of ranks": str(ranks.world), "ranking": ranked}


@dataclass
class Checkpoint:
    identity: dict[str, str]                  # what the scan was made from (compared on resume)
    positions: int                            # images of this process's order already scanned (skipped included)
    skipped: list[tuple[int, str]]            # (global index, reason)
    state: dict                               # ScanState.state_dict()


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write atomically: a killed run leaves the previous checkpoint or the new one, never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "identity": json.dumps(ckpt.identity, sort_keys=True),
        "positions": int(ckpt.positions),
        "skipped_index": torch.tensor([i for i, _ in ckpt.skipped], dtype=torch.int64),
        "skipped_messages": [m for _, m in ckpt.skipped],
        "state": ckpt.state,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, identity: dict[str, str]) -> Checkpoint:
    """Read ``path`` and check it belongs to this run; a mismatch is one line naming what changed."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserInputError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}); rerun without "
                             "--resume to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a vizkit mine checkpoint of this version; rerun without --resume")
    saved = json.loads(payload["identity"])
    changed = [key for key in identity if saved.get(key) != identity[key]]
    if changed:
        raise UserInputError(f"checkpoint {path} was made with a different {', '.join(changed)}; refusing to "
                             "resume (rerun without --resume to start over)")
    skipped = list(zip(payload["skipped_index"].tolist(), payload["skipped_messages"], strict=True))
    return Checkpoint(saved, int(payload["positions"]), skipped, payload["state"])


def resume(path: Path, identity: dict[str, str], state: ScanState, total: int) -> tuple[int, list[tuple[int, str]]]:
    """Load the checkpoint at ``path`` into ``state``: (entries of this process's order done, skipped so far);
    (0, []) and a warning when there is none."""
    if not path.is_file():
        log.warning("vizkit: no checkpoint at %s; scanning from the start", path)
        return 0, []
    ckpt = load_checkpoint(path, identity)
    state.load_state_dict(ckpt.state)
    note(f"vizkit: resuming from {path}: {ckpt.positions} of {total} images were scanned before")
    return ckpt.positions, ckpt.skipped


def saved_positions(path: Path) -> int | None:
    """Images a checkpoint file says were done (None when it cannot be read): for the Ctrl-C line."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return int(payload["positions"])
    except Exception:  # noqa: BLE001 - only a hint for a message; the file is checked properly on --resume
        return None


class CheckpointSaver:
    """A ``DatasetStream`` hook: saves ``state`` every ``every`` entries of the stream (and on ``save()``)."""

    def __init__(self, path: Path, identity: dict[str, str], every: int, state: ScanState,
                 stream: DatasetStream) -> None:
        self.path, self.identity, self.every, self.state, self.stream = path, identity, every, state, stream
        self.saved = stream.done

    def __call__(self, done: int, total: int) -> None:
        if done - self.saved >= self.every:
            self.save()

    def save(self) -> None:
        done = self.stream.done
        save_checkpoint(self.path, Checkpoint(self.identity, done, list(self.stream.skipped), self.state.state_dict()))
        self.saved = done
