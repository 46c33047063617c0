"""What every model source shares: the ``LoadedModel`` record, weights provenance, seeded random init, and
loading a state-dict file onto any builder. The sources themselves live in ``torchvision_models``,
``timm_models``, ``zoo_models`` and ``custom``; ``vizkit.load.models.load_model`` dispatches between them."""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vizkit.errors import ModelError
from vizkit.load.preprocessing import Preprocessing
from vizkit.load.weights import classifier_size, fit_state_dict, read_weights_file, sha256_file

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_PREP", "IMAGENET_STD", "RANDOM_INIT", "LoadedModel", "WeightsFile", "from_file",
    "hash_in_name", "imagenet_categories", "is_default", "is_none", "names_for", "random_init", "seeded",
]

RANDOM_INIT = "none (random init)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREP = Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


@dataclass
class LoadedModel:
    """A model ready for vizkit, with what is known about where its weights came from.

    ``pretrained``: True for published pretrained weights (a torchvision/timm/default-model file, or a file whose
    hash matches the published one), False for random init, None when unknown (a weights file of your own).
    ``checksum_match``: whether ``weights_file`` matches a published checksum (torch hub's sha256 prefix in the
    file name, the default model's known file); None when there is nothing to compare with.
    ``seed``: the torch seed of a random initialisation (None when weights were loaded).
    """

    name: str                     # as the user named it
    model: nn.Module              # eval mode, on the requested device
    preprocessing: Preprocessing
    class_names: list[str] | None
    weights: str                  # human-readable source of the weights
    weights_sha256: str | None    # sha256 of the weights file when one was read
    pretrained: bool | None       # see the class docstring
    weights_file: str | None = None
    checksum_match: bool | None = None
    seed: int | None = None


@dataclass(frozen=True)
class WeightsFile:
    """A weights file that was read: its absolute path, sha256, and whether it matches a published checksum."""

    path: str
    sha256: str
    checksum_match: bool | None

    def loaded(self, name: str, model: nn.Module, prep: Preprocessing, class_names: list[str] | None, *,
               source: str | None = None, known_pretrained: bool = False) -> LoadedModel:
        """The LoadedModel for weights read from this file: a file matching a published checksum (or one known to
        be published) is pretrained; any other file is unknown (None)."""
        pretrained = True if known_pretrained or self.checksum_match else None
        return LoadedModel(name, model, prep, class_names, source or self.path, self.sha256, pretrained,
                           weights_file=self.path, checksum_match=self.checksum_match)


def hash_in_name(path: Path, digest: str, known: dict[str, str] | None = None) -> bool | None:
    """Whether ``path`` is a published file: its full sha256 in ``known`` (file name -> sha256), else torch hub's
    naming rule ``name-<sha256 prefix>.ext``. None when the name carries no hash and the file is not known."""
    if known and path.name in known:
        return digest == known[path.name]
    m = re.search(r"-([a-f0-9]{8,})\.[A-Za-z]+$", path.name)
    return digest.startswith(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names in label order (torchvision metadata, offline)."""
    import torchvision.models as tvm

    return tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def is_none(weights: str | None) -> bool:
    return weights is not None and weights.lower() in ("none", "random")


def is_default(weights: str | None) -> bool:
    return weights is None or weights.upper() == "DEFAULT"


def names_for(model: nn.Module) -> list[str] | None:
    """ImageNet names when the model has 1000 outputs, else None."""
    params = list(model.parameters())
    return list(imagenet_categories()) if params and params[-1].shape[0] == 1000 else None


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random init from ``torch.manual_seed(seed)`` without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_init(name: str, build: Callable[[], nn.Module],
                prep: Preprocessing | Callable[[nn.Module], Preprocessing], seed: int) -> LoadedModel:
    """``build()`` under ``seed``: the same network every run (``--weights none --seed N``). ``prep`` may be
    computed from the built model."""
    with seeded(seed):
        model = build()
    prep = prep if isinstance(prep, Preprocessing) else prep(model)
    return LoadedModel(name, model, prep, names_for(model), RANDOM_INIT, None, False, seed=seed)


def from_file(
    build: Callable[[int | None], nn.Module],
    name: str,
    path: str,
    *,
    allow_pickle: bool,
    remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    known: dict[str, str] | None = None,
) -> tuple[nn.Module, WeightsFile]:
    """Build with ``build(num_classes or None)`` and load the state dict in ``path``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}")
    p = p.resolve()
    obj = read_weights_file(p, allow_pickle=allow_pickle)
    digest = sha256_file(p)
    info = WeightsFile(str(p), digest, hash_in_name(p, digest, known))
    if isinstance(obj, nn.Module):  # a whole pickled model (allow_pickle only)
        return obj, info
    sd = remap(obj) if remap else obj
    with seeded(0):  # the builder's init is overwritten by the file; seeded so nothing depends on global state
        model = build(None)
        n = classifier_size(model, sd)
        if n is not None:
            model = build(n)
    fit_state_dict(model, sd, name=name, source=str(p))
    return model, info
