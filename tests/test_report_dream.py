"""The report's dream column: on by default where the deconvnet's projections do not depend on the image, forced
by --dream/--no-dream, equal to the dream command's own images, and each unit dreamt once per run."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from vizkit_cli.main import main

from vizkit.jobs.context import RunContext
from vizkit.jobs.deconv import deconv_tensor
from vizkit.jobs.dream import dream_tensor
from vizkit.jobs.report_dream import ReportDreams, dream_wanted
from vizkit.load import load_model
from vizkit.project.dream import DreamSettings
from vizkit.testing.model_state import hook_count, state_fingerprint

NO_POOL = textwrap.dedent('''
    from torch import nn


    def strided(num_classes: int = 4) -> nn.Module:
        """Convolutions with strides, no max-pool: the deconvnet's projections do not depend on the image."""
        return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
''')
INPUT = ["--input-size", "3,32,32", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
CHEAP = DreamSettings(steps=2, size=32, batch_size=4)


def _report(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *args], catch_exceptions=False)
    return result.exit_code, result.stderr


@pytest.mark.slow
def test_on_by_default_without_max_pools_and_when_asked(tmp_path: Path, sample_paths: list[Path]) -> None:
    (tmp_path / "net.py").write_text(NO_POOL)
    image = str(sample_paths[1])
    code, err = _report([image, "--model", f"{tmp_path / 'net.py'}:strided", *INPUT, "--top-k", "2",
                         "--out", str(tmp_path / "a")])
    assert code == 0, err
    html = (tmp_path / "a" / "chelsea" / "html" / "index.html").read_text()
    manifest = json.loads((tmp_path / "a" / "chelsea" / "report.manifest.json").read_text())
    assert "What the units want (dream)" in html and manifest["settings"]["dream"] == "auto"
    assert manifest["timings"]["dream"] > 0
    # lenet5 has max-pools: off by default (the unit test below), on when asked, at lenet5's own 32 px input
    code, err = _report([image, "--model", "lenet5", "--weights", "none", "--top-k", "2", "--dream", "--out",
                         str(tmp_path / "c")])
    assert code == 0, err
    assert "What the units want" in (tmp_path / "c" / "chelsea" / "html" / "index.html").read_text()


def test_the_column_is_the_dream_commands_images_and_each_unit_is_dreamt_once(sample_paths: list[Path]) -> None:
    lm = load_model("lenet5", "none")
    ctx = RunContext.from_loaded(lm)
    before = state_fingerprint(lm.model)
    layers = ctx.spatial_layers(None)
    deconv = deconv_tensor(ctx, ctx.input(sample_paths[0]), layers, top_k=3)
    assert not dream_wanted(None, deconv) and dream_wanted(True, deconv)  # lenet5 has max-pools
    dreams = ReportDreams(ctx, True, CHEAP, units=2)
    assert ReportDreams(ctx, False, CHEAP)(deconv, 3) is None
    column = dreams(deconv, 3)
    assert column is not None
    expected = [f"{lp.layer}:{u.channel}" for lp in deconv.layers for u in lp.units[:2]] + ["class:3"]
    assert column.objectives == expected
    alone = dream_tensor(ctx, None, dreams.objectives(deconv, 3), CHEAP)
    np.testing.assert_array_equal(column.images, alone.images)
    np.testing.assert_array_equal(column.scores, alone.scores)
    made = dreams._made
    again = dreams(deconv_tensor(ctx, ctx.input(sample_paths[0]), layers, top_k=3), 3)
    assert again is not None and dreams._made == made  # nothing new to dream
    np.testing.assert_array_equal(again.images, column.images)
    assert hook_count(lm.model) == 0
    after = state_fingerprint(lm.model)
    assert all(torch.equal(after[k], before[k]) for k in before)
