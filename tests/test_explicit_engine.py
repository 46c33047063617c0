"""The explicit layer-by-layer deconvnet as a public engine, and max-pool switches recorded only when asked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from vizkit_cli.main import main

from vizkit.capture.recorder import Recorder
from vizkit.errors import UserInputError
from vizkit.project.deconv import deconv
from vizkit.project.gradcam import gradcam
from vizkit.testing.model_state import hook_count


def chain(pool: nn.Module | None = None) -> nn.Module:
    """A small VGG/AlexNet-like chain with an overlapping pool, BN and LRN; random weights, nonzero biases."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                          pool or nn.MaxPool2d(3, 2), nn.LocalResponseNorm(3), nn.Conv2d(6, 8, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 5))
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    return model.double().eval()


@pytest.mark.parametrize("mode", ["max", "map"])
@pytest.mark.parametrize("layer", ["3", "6", "7"])
def test_explicit_engine_equals_the_default_engine(layer: str, mode: str) -> None:
    model, x = chain(), torch.randn(1, 3, 13, 13, dtype=torch.float64)
    ref = deconv(model, x, [layer], top_k=4, mode=mode, crop=False)
    got = deconv(model, x, [layer], top_k=4, mode=mode, engine="explicit")
    assert [u.channel for u in got.layers[0].units] == [u.channel for u in ref.layers[0].units]
    for a, b in zip(got.layers[0].units, ref.layers[0].units, strict=True):
        scale = np.abs(b.projection).max()
        assert scale > 0 and np.abs(a.projection - b.projection).max() <= 1e-10 * scale
    assert hook_count(model) == 0


def test_switches_are_returned_only_when_asked_and_match_max_pool_indices() -> None:
    model, x = chain(), torch.randn(1, 3, 13, 13, dtype=torch.float64)
    assert deconv(model, x, ["6"], top_k=1).switches == {}
    out = deconv(model, x, ["6"], top_k=1, switches=True)
    assert set(out.switches) == {"3"}  # the pool after the last requested layer did not run
    with torch.no_grad():
        before = model[2](model[1](model[0](x)))
    _, idx = F.max_pool2d(before, 3, 2, return_indices=True)
    assert torch.equal(out.switches["3"], idx)


def test_recorder_computes_no_switches_unless_asked_so_max_pool_3d_models_run_gradcam() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)), nn.Conv2d(4, 4, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(1, 3, 16, 16)
    with Recorder(model, ["3"]) as rec:
        rec.run(x)
    assert rec.switches == {}
    cams = gradcam(model, x, "3", [[0]])
    assert np.isfinite(cams.cam).all()
    with Recorder(model, ["3"], switches=True) as rec:
        rec.run(x)
    assert rec.switches["2"].shape == (1, 4, 8, 8) and hook_count(model) == 0


def test_explicit_engine_refuses_a_model_that_is_not_a_chain() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv(x) + x)

    with pytest.raises(UserInputError, match=r"chain model.*'relu'.*default engine"):
        deconv(Residual().eval(), torch.randn(1, 3, 8, 8), ["relu"], top_k=1, engine="explicit")
    with pytest.raises(UserInputError, match="unknown engine"):
        deconv(chain(), torch.randn(1, 3, 13, 13, dtype=torch.float64), ["3"], engine="fast")


def test_cli_explicit_engine_and_saved_switches(sample_paths: list[Path], tmp_path: Path) -> None:
    common = [str(sample_paths[1]), "--model", "lenet5", "--weights", "none", "--top-k", "3"]
    runner = CliRunner()
    for engine, out in (("autograd", "a"), ("explicit", "e")):
        torch.manual_seed(0)  # the same random-init LeNet both times
        result = runner.invoke(main, ["deconv", *common, "--engine", engine, "--save-switches", "--out",
                                      str(tmp_path / out)], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "a" / "chelsea" / "deconv.npz") as a, np.load(tmp_path / "e" / "chelsea" /
                                                                            "deconv.npz") as e:
        assert sorted(k for k in e.files if k.startswith("switches/")) == ["switches/features.pool1",
                                                                            "switches/features.pool2"]
        for key in a.files:
            assert np.allclose(a[key], e[key], rtol=1e-5, atol=1e-6 * np.abs(a[key]).max()), key
        assert e["switches/features.pool1"].shape == (1, 6, 14, 14)
    result = runner.invoke(main, ["deconv", *common, "--out", str(tmp_path / "plain")], catch_exceptions=False)
    with np.load(tmp_path / "plain" / "chelsea" / "deconv.npz") as plain:
        assert not any(k.startswith("switches/") for k in plain.files)


def test_cli_refuses_the_explicit_engine_on_a_graph_once(sample_paths: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["deconv", *map(str, sample_paths[:2]), "--model", "resnet18", "--weights",
                                       "none", "--engine", "explicit", "--out", str(tmp_path)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "default engine" in lines[0]
    assert not list(tmp_path.iterdir())
