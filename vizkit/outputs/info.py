"""What an output says about how it was made: ``ReportInfo`` (page 1 and the manifest) and library versions."""
from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field

#: Distributions whose versions every manifest records (None when not installed).
RECORDED_LIBRARIES = ("vizkit", "torch", "torchvision", "timm", "captum", "numpy", "matplotlib")


@dataclass
class ReportInfo:
    """Provenance shown on page 1 of a PDF and written to manifest.json.

    image_path: the image as the user named it; model: model name; weights: where the weights came from (a file
    path, a registry tag, or "random init"); weights_sha256: hash of the weights file when there is one;
    pretrained: False for randomly initialised weights, None when unknown; preprocessing: e.g. resize, crop, mean, std;
    settings: the run's options (layers, top_k, mode, device); command: argv list or the command string.
    seed: the seed of random-init weights (None when the weights came from a file or registry);
    checksum_match: whether the weights file matches its published checksum (None: nothing to compare with);
    notes: what every page 1 of the run must say (e.g. weights that look untrained), before each result's notes.
    Jobs build it once per image with ``RunContext.info`` (keywords); nothing else constructs it.
    """

    image_path: str | None  # None for model-level outputs (filters)
    model: str
    weights: str
    weights_sha256: str | None
    pretrained: bool | None
    preprocessing: dict
    settings: dict
    command: list[str] | str
    seed: int | None = None
    checksum_match: bool | None = None
    notes: list[str] = field(default_factory=list)


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def vizkit_version() -> str:
    return distribution_version("vizkit") or "unknown"


def library_versions() -> dict[str, str | None]:
    """Installed versions without importing the libraries (importing torch costs seconds)."""
    versions = {name: distribution_version(name) for name in RECORDED_LIBRARIES}
    versions["python"] = platform.python_version()
    return versions
