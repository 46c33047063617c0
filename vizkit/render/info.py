"""What a report says about how it was made."""
from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass

#: Distributions whose versions every manifest records (None when not installed).
RECORDED_LIBRARIES = ("vizkit", "torch", "torchvision", "timm", "captum", "numpy", "matplotlib")


@dataclass
class ReportInfo:
    """Provenance shown on page 1 of a PDF and written to manifest.json.

    image_path: the image as the user named it; model: model name; weights: where the weights came from (a file
    path, a registry tag, or "random init"); weights_sha256: hash of the weights file when there is one;
    pretrained: False for randomly initialised weights, None when unknown; preprocessing: e.g. resize, crop, mean, std;
    settings: the run's options (layers, top_k, mode, device); command: argv list or the command string.
    """

    image_path: str | None  # None for model-level outputs (filters)
    model: str
    weights: str
    weights_sha256: str | None
    pretrained: bool | None
    preprocessing: dict
    settings: dict
    command: list[str] | str


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
