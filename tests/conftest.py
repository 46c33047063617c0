"""Shared fixtures. Offline: nothing here downloads; model fixtures are session-scoped to keep runs short.

Under pytest-xdist (README's test command runs one worker per core) each worker uses one torch thread, and so do
the processes its tests start: more threads than cores make every worker wait on the others. Tests must give the
same result at any thread count; training in a test pins its own thread count."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        import torch

        torch.set_num_threads(1)


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
