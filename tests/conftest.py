"""Shared fixtures. Offline: nothing here downloads; model fixtures are session-scoped to keep runs short."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    """grace_hopper.jpg (matplotlib), chelsea.png and coffee.png (scikit-image)."""
    from vizkit.load import sample_images

    return sample_images()


@pytest.fixture(scope="session")
def default_model():
    """The offline ImageNet-pretrained default model (EfficientNet-Lite0), loaded once per session.

    Shared: do not modify its weights or flags in a test (copy.deepcopy it first)."""
    from vizkit.load import load_model

    return load_model()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """TORCH_HOME in tmp_path; returns the (created) hub checkpoints folder torchvision reads weights from."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints
