"""Your own model: ``path/to/file.py:NAME`` or ``package.module:NAME``, where NAME is an ``nn.Module`` class or a
function returning one, called with ``model_kwargs``; and the input options for models without preprocessing of
their own (``input_size``, ``mean``, ``std``, ``classes``).

Loading a file by path EXECUTES it (as ``python file.py`` would, minus the ``__main__`` block): only for code you
trust. Importing ``package.module`` runs that module's import-time code, as any import does.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from vizkit.errors import ModelError, UserInputError, close_matches
from vizkit.load.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_INIT,
    LoadedModel,
    from_file,
    is_none,
    names_for,
    seeded,
)
from vizkit.load.preprocessing import Preprocessing
from vizkit.load.weights import looks_like_path

__all__ = ["apply_input_options", "is_custom_spec", "load_custom", "read_class_names"]


def is_custom_spec(name: str) -> bool:
    """``file.py:NAME`` or ``package.module:NAME`` (``timm:NAME`` is timm's)."""
    source, sep, attr = name.strip().rpartition(":")
    return bool(sep and source and attr) and source.lower() != "timm"


def load_custom(spec: str, weights: str | None, *, allow_pickle: bool, model_kwargs: dict[str, Any] | None,
                seed: int = 0) -> LoadedModel:
    """Build the model ``spec`` names under ``seed``, then load ``weights`` (a state-dict file) if given."""
    source, _, attr = spec.strip().rpartition(":")
    factory = _factory(_import_source(source), source, attr)
    kwargs = dict(model_kwargs or {})

    def build(_num_classes: int | None = None) -> nn.Module:
        return _call(factory, spec, kwargs)

    if weights is not None and not is_none(weights):
        if not looks_like_path(weights):
            raise ModelError(f"{spec} has no published weights (--weights {weights}): pass a state-dict file, or "
                             "none for the model as its code initialises it")
        model, info = from_file(build, spec, weights, allow_pickle=allow_pickle)
        return info.loaded(spec, model, default_preprocessing(model), names_for(model))
    with seeded(seed):
        model = build()
    # Without --weights the code may load trained weights itself: unknown, unless the user said none.
    pretrained = False if weights is not None else None
    source_text = RANDOM_INIT if weights is not None else f"as built by {spec} (seed {seed})"
    return LoadedModel(spec, model, default_preprocessing(model), names_for(model), source_text, None, pretrained,
                       seed=seed)


def _import_source(source: str) -> ModuleType:
    if source.endswith(".py") or "/" in source or "\\" in source:
        return _import_file(Path(source).expanduser())
    try:
        return importlib.import_module(source)
    except ImportError as e:
        raise ModelError(f"cannot import module '{source}' for --model: {e}") from e
    except Exception as e:  # the user's import-time code; one line, not a traceback
        raise ModelError(f"importing module '{source}' failed: {type(e).__name__}: {_line(e)}") from e


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    path = path.resolve()
    # A private, stable module name per file, registered so that classes defined there can be found by name.
    name = f"vizkit_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot load {path} as Python code (--model FILE.py:NAME)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file; one line, not a traceback
        sys.modules.pop(name, None)
        raise ModelError(f"running {path} failed: {type(e).__name__}: {_line(e)}") from e
    return module


def _factory(module: ModuleType, source: str, attr: str) -> Callable[..., Any]:
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        candidates = [k for k, v in vars(module).items() if not k.startswith("_") and _is_builder(v)]
        hint = close_matches(attr, candidates) or (f" It defines: {', '.join(candidates[:8])}." if candidates else "")
        what = "no" if factory is None else "no callable"
        raise ModelError(f"{source} has {what} '{attr}' (an nn.Module class or a function returning one).{hint}")
    return factory


def _is_builder(value: Any) -> bool:
    return (inspect.isclass(value) and issubclass(value, nn.Module)) or inspect.isfunction(value)


def _call(factory: Callable[..., Any], spec: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = factory(**kwargs)
    except Exception as e:  # the user's constructor; one line, not a traceback
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"building {spec}({args}) failed: {type(e).__name__}: {_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def default_preprocessing(model: nn.Module) -> Preprocessing:
    """A model without preprocessing of its own: a timm model's data config, else its first conv's channels at
    224x224 with ImageNet's mean/std (3 channels) or 0.5/0.5; --input-size/--mean/--std override it."""
    if getattr(model, "pretrained_cfg", None):
        from vizkit.load.timm_models import timm_preprocessing

        return timm_preprocessing(model)
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    channels = conv.in_channels if conv is not None and conv.in_channels in (1, 3) else 3
    if channels == 3:
        return Preprocessing(224, 224, IMAGENET_MEAN, IMAGENET_STD)
    return Preprocessing(224, 224, (0.5,), (0.5,), channels=1)


def apply_input_options(loaded: LoadedModel, *, input_size: Sequence[int] | None = None,
                        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        classes: str | Path | Sequence[str] | None = None) -> LoadedModel:
    """Override the preprocessing and class names (``--input-size C,H,W``, ``--mean``, ``--std``, ``--classes``)."""
    prep = loaded.preprocessing
    if input_size is not None:
        size = tuple(int(v) for v in input_size)
        if len(size) != 3 or size[0] not in (1, 3) or min(size) < 1:
            raise UserInputError(f"--input-size takes C,H,W with C 1 or 3, got {','.join(map(str, size))}")
        if size[1] != size[2]:
            raise UserInputError(f"--input-size {','.join(map(str, size))}: only square inputs (H == W) are "
                                 "supported")
        c, h = size[0], size[1]
        same = c == prep.channels
        prep = replace(prep, resize=h, crop=h, channels=c, mean=prep.mean if same else (0.5,) * c,
                       std=prep.std if same else (0.5,) * c)
    if mean is not None or std is not None:
        prep = _normalisation(prep, mean, std)
    loaded.preprocessing = prep
    if classes is not None:
        loaded.class_names = _checked_classes(read_class_names(classes), loaded.model)
    return loaded


def _normalisation(prep: Preprocessing, mean: Sequence[float] | None, std: Sequence[float] | None) -> Preprocessing:
    for flag, values in (("--mean", mean), ("--std", std)):
        if values is not None and len(values) != prep.channels:
            raise UserInputError(f"{flag} needs {prep.channels} comma-separated value(s), one per input channel, "
                                 f"got {len(values)}")
    if std is not None and any(v <= 0 for v in std):
        raise UserInputError(f"--std values must be positive, got {','.join(map(str, std))}")
    return replace(prep, mean=tuple(mean) if mean is not None else prep.mean,
                   std=tuple(std) if std is not None else prep.std)


def read_class_names(classes: str | Path | Sequence[str]) -> list[str]:
    """Class names from a file (one per line, blank lines at the end ignored) or a list."""
    if isinstance(classes, (str, Path)):
        path = Path(classes).expanduser()
        if not path.is_file():
            raise UserInputError(f"--classes file not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
    else:
        names = [str(n) for n in classes]
    if not names:
        raise UserInputError(f"--classes {classes}: no class names (one per line)")
    return names


def _checked_classes(names: list[str], model: nn.Module) -> list[str]:
    last = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    if last is not None and last.out_features != len(names):
        raise UserInputError(f"--classes gives {len(names)} names but the model's last Linear layer has "
                             f"{last.out_features} outputs")
    return names


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
