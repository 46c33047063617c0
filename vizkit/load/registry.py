"""The zoo registry: one entry per model name holds its builder, preprocessing, class names and weights resolver.

A module adds its models with ``@register_model(...)`` on a builder that takes ``num_classes`` (as torchvision's
``register_model``). ``PROVIDERS`` names the modules that register zoo models; they are imported by name, on the
first lookup, so ``vizkit.load`` depends on none of them (``vizkit.lab.labnet`` registers ``labnet`` this way:
load never imports lab, docs/DESIGN.md "Layering").
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from vizkit.load.common import IMAGENET_PREP, names_for
from vizkit.load.preprocessing import Preprocessing

__all__ = ["PROVIDERS", "ZooModel", "ZooWeights", "get_zoo_model", "list_zoo_models", "register_model"]

#: Modules that register zoo models, imported on the first lookup; their order is the order of ``vizkit models``.
PROVIDERS: tuple[str, ...] = ("vizkit.load.zoo", "vizkit.lab.labnet")


@dataclass(frozen=True)
class ZooWeights:
    """What a ``weights`` argument names for one zoo model. ``file``: None or "none" for random init, else a
    state-dict path. ``shipped``: the file ships with vizkit (trained weights, reported as pretrained).
    ``known_sha256``: file name -> sha256 of the shipped files, so an altered copy is flagged."""

    file: str | None
    shipped: bool = False
    known_sha256: dict[str, str] | None = None


def _as_given(weights: str | None) -> ZooWeights:
    return ZooWeights(weights)


@dataclass(frozen=True)
class ZooModel:
    """One registered model: ``build(num_classes=...)``, its input, its class names and its weights keywords."""

    name: str
    build: Callable[..., nn.Module]
    preprocessing: Preprocessing = IMAGENET_PREP
    class_names: Callable[[nn.Module], list[str] | None] = names_for
    resolve_weights: Callable[[str | None], ZooWeights] = _as_given
    provider: str = field(default="", compare=False)


_REGISTRY: dict[str, ZooModel] = {}
_loaded = False


def register_model(name: str | None = None, *, preprocessing: Preprocessing = IMAGENET_PREP,
                   class_names: Callable[[nn.Module], list[str] | None] = names_for,
                   weights: Callable[[str | None], ZooWeights] = _as_given
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated builder under ``name`` (default: its function name). ``weights`` maps the user's
    ``weights`` argument to a ``ZooWeights`` (the default takes it as given: "none" or a file)."""

    def add(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = (name or build.__name__).lower()
        module = getattr(getattr(build, "func", build), "__module__", "")  # a partial: its function's module
        if key in _REGISTRY and _REGISTRY[key].provider != module:
            raise ValueError(f"zoo model {key!r} is registered twice ({_REGISTRY[key].provider} and {module})")
        _REGISTRY[key] = ZooModel(key, build, preprocessing, class_names, weights, provider=module or "")
        return build

    return add


def _load_providers() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in PROVIDERS:
            importlib.import_module(module)


def get_zoo_model(name: str) -> ZooModel | None:
    """The entry registered under ``name`` (case-insensitive), or None."""
    _load_providers()
    return _REGISTRY.get(name.strip().lower())


def list_zoo_models() -> list[str]:
    """Every registered name: providers in ``PROVIDERS`` order, each in its registration order."""
    _load_providers()
    rank = {module: i for i, module in enumerate(PROVIDERS)}
    entries = sorted(enumerate(_REGISTRY.values()), key=lambda e: (rank.get(e[1].provider, len(rank)), e[0]))
    return [entry.name for _, entry in entries]
