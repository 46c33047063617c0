"""What every benchmark prints about where it ran, so its numbers can be compared only with like."""
from __future__ import annotations

import contextlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine(*anchors: str) -> str:
    """CPU model, threads, torch/torchvision and the anchors' versions, Python."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    libs = "; ".join(f"{name} {package_version(name)}" for name in ("torchvision", *anchors))
    return (f"{cpu}; {torch.get_num_threads()} threads; torch {torch.__version__}; {libs}; "
            f"Python {platform.python_version()}")
