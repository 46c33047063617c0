"""torchvision classification models: the weights enum, torch hub's cache, weights files with builder flags."""
from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from vizkit.errors import ModelError
from vizkit.load.common import (
    LoadedModel,
    WeightsFile,
    from_file,
    hash_in_name,
    is_default,
    is_none,
    names_for,
    random_init,
)
from vizkit.load.preprocessing import Preprocessing
from vizkit.load.weights import fit_state_dict, looks_like_path, sha256_file

__all__ = ["densenet_remap", "load_torchvision", "torchvision_names"]


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    return tuple(tvm.list_models(module=tvm))


def load_torchvision(name: str, arch: str, weights: str | None, *, allow_pickle: bool, allow_download: bool,
                     seed: int = 0) -> LoadedModel:
    enum_cls = tvm.get_model_weights(arch)
    default = enum_cls.DEFAULT
    remap = densenet_remap if arch.startswith("densenet") else None
    if is_none(weights):
        # init_weights=True: torchvision's current random init for these two, without its FutureWarning.
        kw = {"init_weights": True} if arch in ("googlenet", "inception_v3") else {}
        return random_init(name, lambda: tvm.get_model(arch, weights=None, **kw), _tv_prep(default), seed)
    if weights is not None and looks_like_path(weights):
        enum = _enum_for_file(enum_cls, weights)

        def build(n: int | None) -> nn.Module:
            kw = _tv_kwargs(arch, enum) if enum is not None else {}
            if n is not None:
                kw["num_classes"] = n
            return _quiet_build(arch, **kw)

        model, info = from_file(build, name, weights, allow_pickle=allow_pickle, remap=remap)
        if enum is not None:
            _tv_after_load(arch, model)
        return info.loaded(name, model, _tv_prep(enum or default), names_for(model))

    enum = default if weights is None or is_default(weights) else _tv_enum(enum_cls, arch, weights)
    cached = _tv_cached_file(arch, enum, allow_download)
    try:
        sd = enum.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:  # corrupt cache file, failed download
        raise ModelError(f"cannot read {arch} weights {enum.name} from {cached}: {e}") from e
    model = _quiet_build(arch, **_tv_kwargs(arch, enum))
    fit_state_dict(model, remap(sd) if remap else sd, name=name, source=str(cached))
    _tv_after_load(arch, model)
    digest = sha256_file(cached)
    match = hash_in_name(cached, digest)
    if match is False:
        warnings.warn(f"{cached} does not match the sha256 prefix in its name: it is not the file torchvision "
                      "publishes under that name", UserWarning, stacklevel=3)
    info = WeightsFile(str(cached), digest, match)
    return info.loaded(name, model, _tv_prep(enum), list(enum.meta["categories"]), source=enum.name,
                       known_pretrained=match is not False)


def _quiet_build(arch: str, **kw: Any) -> nn.Module:
    """``tvm.get_model`` without the FutureWarning GoogLeNet/Inception print when ``init_weights`` is unset
    (the weights are overwritten by the file anyway)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*default weight initialization.*", category=FutureWarning)
        return tvm.get_model(arch, weights=None, **kw)


def _tv_enum(enum_cls: Any, arch: str, weights: str) -> Any:
    member = weights.split(".")[-1]  # "ResNet50_Weights.IMAGENET1K_V2" -> "IMAGENET1K_V2"
    valid = list(enum_cls.__members__)
    for candidate in (member, member.upper()):
        if candidate in enum_cls.__members__:
            return enum_cls[candidate]
    raise ModelError(
        f"unknown weights '{weights}' for {arch}: use --weights with one of {', '.join(valid)}, none (random "
        "init) or a file path"
    )


def _tv_cached_file(arch: str, enum: Any, allow_download: bool) -> Path:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / os.path.basename(urlparse(enum.url).path)
    if not cached.is_file() and not allow_download:
        raise ModelError(
            f"weights file {cached.name} for {arch} ({enum.name}) is not in {folder}: download {enum.url} into "
            "that folder, or allow downloading (--download; allow_download=True in Python), or use --weights none"
        )
    return cached


def _enum_for_file(enum_cls: Any, path: str) -> Any:
    base = os.path.basename(path)
    for member in enum_cls:
        if os.path.basename(urlparse(member.url).path) == base:
            return member
    return None


def _tv_kwargs(arch: str, enum: Any) -> dict[str, Any]:
    """The builder arguments torchvision's own builder sets when it loads ``enum``."""
    kw: dict[str, Any] = {"num_classes": len(enum.meta["categories"])}
    if arch.startswith("vgg"):
        kw["init_weights"] = False
    if arch in ("googlenet", "inception_v3"):
        kw.update(transform_input=True, aux_logits=True, init_weights=False)
    if arch.startswith("vit_"):
        kw["image_size"] = enum.meta["min_size"][0]
    if arch.startswith("maxvit"):
        kw["input_size"] = enum.meta["min_size"]
    return kw


def _tv_after_load(arch: str, model: nn.Module) -> None:
    if arch == "googlenet":  # torchvision drops the untrained auxiliary heads after loading (inception keeps them)
        net = cast(Any, model)
        net.aux_logits = False
        net.aux1 = None
        net.aux2 = None


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def densenet_remap(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's DenseNet files use old keys like ``norm.1``; its builder renames them to ``norm1``."""
    out = {}
    for k, v in sd.items():
        m = _DENSENET_OLD_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _tv_prep(enum: Any) -> Preprocessing:
    t = enum.transforms()
    return Preprocessing(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
    )
