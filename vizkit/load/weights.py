"""Read weight files safely and fit state dicts onto models, with one-line errors that say what to do.

Accepted files:
- ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (anything but ``.safetensors``): ``torch.load(weights_only=True)``,
  which refuses pickled Python objects. ``allow_pickle=True`` (CLI ``--unsafe-pickle``) uses
  ``weights_only=False``: it can load a whole pickled ``nn.Module`` and it can run arbitrary code from the file.
- ``.safetensors``: read with ``safetensors``.

The file may hold a plain state dict or a checkpoint dict with the state dict under ``state_dict``, ``model``
or ``model_state_dict``. A ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key is
stripped. Loading is strict: missing, unexpected or wrongly shaped entries raise ModelError naming the first few.
"""
from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vizkit.errors import ModelError
from vizkit.files import sha256_file

__all__ = ["WEIGHT_SUFFIXES", "fit_state_dict", "looks_like_path", "read_weights_file", "sha256_file"]

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar")
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")


def looks_like_path(weights: str) -> bool:
    """True when ``weights`` names a file rather than a keyword or torchvision enum name."""
    return (
        os.sep in weights
        or "/" in weights
        or weights.lower().endswith(WEIGHT_SUFFIXES)
        or os.path.isfile(weights)
    )


def read_weights_file(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """Return the state dict stored in ``path`` (or, with ``allow_pickle``, a pickled whole model)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}")
    if p.suffix.lower() == ".safetensors":
        return _read_safetensors(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        if allow_pickle:
            raise ModelError(f"cannot unpickle weights file {p}: {_first_line(e)}") from e
        if "unsupported global" in str(e).lower():  # torch's safe unpickler met a class or function
            raise ModelError(
                f"{p} is not a plain state dict (it holds pickled Python objects); --unsafe-pickle "
                "(allow_pickle=True in Python) loads it but can execute arbitrary code from the file - only for "
                "files you trust"
            ) from e
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unpickler error" in ln), _first_line(e))
        raise ModelError(
            f"cannot read weights file {p} with the safe loader ({detail}); if it is a Python pickle you trust, "
            "--unsafe-pickle (allow_pickle=True in Python) reads it but can execute arbitrary code"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ModuleNotFoundError, struct.error) as e:
        if _truncated(p, e):
            raise ModelError(f"weights file {p} is truncated or corrupt ({p.stat().st_size:,} bytes, the end of the "
                             "archive is missing); copy or save it again") from e
        raise ModelError(f"cannot read weights file {p}: {type(e).__name__}: {_first_line(e)}") from e
    return _extract_state_dict(obj, p)


def _truncated(p: Path, err: BaseException) -> bool:
    """A torch.save zip archive cut short (its central directory is missing; torch says "[Errno 22]" or "failed
    finding central directory"), or a legacy pickle that ends early (EOFError)."""
    import zipfile

    if isinstance(err, EOFError):
        return True
    with open(p, "rb") as f:
        zip_start = f.read(4) == b"PK\x03\x04"
    return zip_start and not zipfile.is_zipfile(p)


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"cannot read safetensors file {p}: {_first_line(e)}") from e


def _extract_state_dict(obj: object, p: Path) -> dict[str, torch.Tensor] | nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in _CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner
            if isinstance(inner, Mapping) and _is_state_dict(inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        found = f"a dict with keys {_preview(list(obj))}" if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(
            f"{p} holds {found}, not a state dict of tensors (nor a checkpoint with "
            f"{'/'.join(_CHECKPOINT_KEYS)}); save one with torch.save(model.state_dict(), path)"
        )
    return _strip_prefixes(dict(obj))


def _is_state_dict(d: Mapping) -> bool:
    return len(d) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def fit_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], *, name: str, source: str) -> None:
    """``model.load_state_dict(sd, strict=True)``, raising a one-line ModelError that names the misfits."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch (file vs model) {_preview(wrong)}")
        raise ModelError(
            f"weights {source} do not fit model {name}: {'; '.join(parts)} - "
            "is it the state dict of this architecture?"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelError(f"weights {source} do not fit model {name}: {_first_line(e)}") from e


def classifier_size(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes in ``sd`` when it differs from ``model``'s last layer (a fine-tuned head), else None."""
    params = list(model.named_parameters())
    if not params:
        return None
    key, param = params[-1]
    if key in sd and sd[key].dim() >= 1 and param.dim() >= 1 and sd[key].shape[1:] == param.shape[1:]:
        n = int(sd[key].shape[0])
        return n if n != param.shape[0] else None
    return None


def _preview(items: list, n: int = 3) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
