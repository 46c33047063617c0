"""Defects found by trying vizkit as a new user would, each pinned: seeded random init, honest weights provenance,
layers that run, ZFNet's paper layers, a closed pipe, a silent GoogLeNet, errors that read like CLI options."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from vizkit_cli.main import main

from vizkit.capture.stages import default_layers
from vizkit.errors import ModelError
from vizkit.jobs.filters import FiltersConfig, run_filters
from vizkit.load import load_model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "timm:resnet18", "efficientnet_lite0"])
def test_random_init_is_seeded_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(42)
    state = torch.get_rng_state()
    first = load_model(name, weights="none")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert first.seed == 0 and first.pretrained is False
    assert _same(first.model, load_model(name, weights="none").model)
    assert not _same(first.model, load_model(name, weights="none", seed=1).model)


def test_same_command_twice_picks_the_same_channels_and_filters_shows_that_network(
        tmp_path: Path, sample_paths: list[Path]) -> None:
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        result = CliRunner().invoke(main, ["deconv", str(sample_paths[0]), "--model", "lenet5", "--layer",
                                           "features.relu2", "--weights", "none", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs.append(np.load(out / "grace_hopper" / "deconv.npz"))
    assert np.array_equal(runs[0]["features.relu2/channels"], runs[1]["features.relu2/channels"])
    assert np.array_equal(runs[0]["features.relu2/projections"], runs[1]["features.relu2/projections"])
    result = CliRunner().invoke(main, ["filters", "--model", "lenet5", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    pictured = np.load(tmp_path / "f" / "filters" / "filters.npz")["features.conv1/weights"]
    assert np.array_equal(pictured, load_model("lenet5").model.features.conv1.weight.detach().numpy())


def test_weights_provenance_says_what_is_known(tmp_path: Path, default_model) -> None:
    torch.manual_seed(3)
    sd = torchvision.models.resnet18().state_dict()
    own = tmp_path / "my_resnet.pth"
    torch.save(sd, own)
    lm = load_model("resnet18", weights=str(own))
    assert (lm.pretrained, lm.checksum_match, lm.weights_file) == (None, None, str(own.resolve()))
    assert lm.weights_sha256 == hashlib.sha256(own.read_bytes()).hexdigest()
    digest = hashlib.sha256(own.read_bytes()).hexdigest()
    named = tmp_path / f"resnet18-{digest[:8]}.pth"  # torch hub's rule: the name carries the sha256 prefix
    own.rename(named)
    lm = load_model("resnet18", weights=str(named))
    assert lm.checksum_match is True and lm.pretrained is True
    wrong = tmp_path / "resnet18-f37072fd.pth"  # torchvision's published name, other content
    named.rename(wrong)
    lm = load_model("resnet18", weights=str(wrong))
    assert lm.checksum_match is False and lm.pretrained is None
    assert default_model.checksum_match is True and default_model.pretrained is True
    assert default_model.weights_file is not None and default_model.weights_file.endswith(".pth")


def test_googlenet_filters_picture_only_layers_that_run(tmp_path: Path) -> None:
    report = run_filters(FiltersConfig(model="googlenet", weights="none", max_pages=3, out=tmp_path))
    manifest = json.loads((report.written[0] / "filters.manifest.json").read_text())
    pictured = manifest["settings"]["pictured"]
    assert pictured[0] == "conv1.conv" and pictured[-1] == "inception5b.branch4.1.conv"
    assert not any(name.startswith("aux") for name in pictured)


def test_zfnet_default_layers_are_the_papers_layers_1_to_5() -> None:
    model = load_model("zfnet", weights="none").model
    assert default_layers(model, (1, 3, 224, 224)) == [
        "features.norm1", "features.norm2", "features.relu3", "features.relu4", "features.pool5"]


def test_closed_pipe_ends_quietly() -> None:
    """`vizkit models | head`: the reader goes away before vizkit writes."""
    proc = subprocess.Popen([sys.executable, "-m", "vizkit_cli.main", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "BrokenPipe" not in err and "error" not in err, err


def test_googlenet_weights_file_loads_without_future_warning(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "my_googlenet.pth"
    torch.save(torchvision.models.googlenet(weights=None, init_weights=True).state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        lm = load_model("googlenet", weights=str(path))
    assert lm.weights_file == str(path.resolve())


def test_errors_name_cli_options_not_python_syntax() -> None:
    with pytest.raises(ModelError) as err:
        load_model("lenet5", weights="DEFAULT")
    assert "--weights none" in str(err.value) and "weights=" not in str(err.value)
    with pytest.raises(ModelError) as err:
        load_model("efficientnet_lite0", weights="IMAGENET1K_V1")
    assert "--weights DEFAULT, none" in str(err.value) and "'none'" not in str(err.value)
