"""timm models (``timm:NAME``): pretrained weights from the Hugging Face or torch hub cache, or a weights file."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn

from vizkit.errors import ModelError, close_matches
from vizkit.load.common import LoadedModel, WeightsFile, from_file, is_default, is_none, names_for, random_init
from vizkit.load.preprocessing import Preprocessing
from vizkit.load.weights import looks_like_path, sha256_file

__all__ = ["load_timm", "timm_preprocessing"]


def load_timm(name: str, arch: str, weights: str | None, *, allow_pickle: bool, allow_download: bool,
              seed: int = 0) -> LoadedModel:
    import timm

    if not arch or not timm.is_model(arch):
        raise ModelError(
            f"unknown timm model '{arch}'.{close_matches(arch, timm.list_models())} "
            "List them with python -c 'import timm; print(timm.list_models())'."
        )
    if is_none(weights):
        return random_init(name, lambda: timm.create_model(arch, pretrained=False), timm_preprocessing, seed)
    if weights is not None and looks_like_path(weights):
        def build(n: int | None) -> nn.Module:
            kwargs: dict[str, Any] = {"num_classes": n} if n is not None else {}
            return timm.create_model(arch, pretrained=False, **kwargs)

        model, info = from_file(build, name, weights, allow_pickle=allow_pickle)
        return info.loaded(name, model, timm_preprocessing(model), names_for(model))
    if not is_default(weights):
        raise ModelError(f"unknown weights '{weights}' for timm:{arch}: use --weights DEFAULT, none or a file path")

    probe = timm.create_model(arch, pretrained=False)
    cfg = cast(dict[str, Any], getattr(probe, "pretrained_cfg", None) or {})
    cached = _timm_cached_file(cfg)
    tag = cfg.get("hf_hub_id") or cfg.get("url") or arch
    read: WeightsFile | None = None
    if cached is not None:
        model = _timm_pretrained(arch, {"file": str(cached)}, f"cached file {cached}")
        read = WeightsFile(str(cached), sha256_file(cached), None)  # the hub publishes no checksum to compare
    elif allow_download:
        model = _timm_pretrained(arch, None, "download")
    else:
        raise ModelError(
            f"timm:{arch} pretrained weights ({tag}) are not in the Hugging Face or torch hub cache and "
            "downloading is off: pass a weights file, allow downloading (--download; allow_download=True in "
            "Python), or use --weights none"
        )
    return LoadedModel(name, model, timm_preprocessing(model), names_for(model), f"timm pretrained ({tag})",
                       read.sha256 if read else None, True, weights_file=read.path if read else None)


def _timm_pretrained(arch: str, overlay: dict[str, Any] | None, how: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"cannot load timm:{arch} pretrained weights ({how}): {e}") from e


def _timm_cached_file(cfg: Any) -> Path | None:
    """Pretrained weights already in the Hugging Face cache or the torch hub cache, if any."""
    hub_id = cfg.get("hf_hub_id")
    hit = _hf_cached(hub_id, cfg.get("hf_hub_filename")) if hub_id else None
    if hit is not None:
        return hit
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if cached.is_file():
            return cached
    return None


def _hf_cached(hub_id: str, filename: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname in filter(None, (filename, "model.safetensors", "pytorch_model.bin")):
        hit = try_to_load_from_cache(hub_id, fname)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    """The model's own data config (timm ``resolve_data_config``) as a Preprocessing."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    channels, height, _width = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if channels == 1 and len(mean) == 3:
        mean, std = mean[:1], std[:1]
    return Preprocessing(math.floor(height / crop_pct), height, mean, std, interpolation, channels=channels)
