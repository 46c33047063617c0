"""What mine ranks: a layer whose output saturates is ranked by the value before its cap, and the scan still equals
a brute force on that value; ties in a unit's top K are counted; default layers that duplicate another's top-K
images are dropped; tiny activations of a random network are flagged."""
from __future__ import annotations

import copy
import html
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mine_helpers import brute_force_result
from PIL import Image
from torch import nn
from vizkit_cli.main import main

from vizkit.capture.stages import default_layers
from vizkit.errors import UserInputError
from vizkit.jobs.mine import mine_dataset
from vizkit.jobs.mine_notes import mine_notes, plan_notes, tie_note
from vizkit.scan.saturation import plan_ranking, probe_batch
from vizkit.scan.scorer import Source
from vizkit.scan.topk import LayerTopK, MineResult
from vizkit.testing.model_state import hook_count, state_fingerprint


class Clamp(nn.Module):
    """A cap written by hand (no saturating type): the probe must find it from the numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(max=0.5)


class Inline(nn.Module):
    """A cap written inline in ``forward``, with no module of its own (``capped`` False: the brute force's model)."""

    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn()
        self.in_place, self.capped = in_place, True
        with torch.no_grad():
            self.conv.weight.mul_(10)  # the probe's noise must reach the cap: only the numbers can find this one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if not self.capped:
            return y
        return y.clamp_(max=0.5) if self.in_place else torch.nn.functional.relu6(y)


def _conv_bn() -> list[nn.Module]:
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return [nn.Conv2d(3, 6, 3, padding=1), bn]


def _bn_act() -> nn.Module:
    from timm.layers import BatchNormAct2d

    bn = BatchNormAct2d(6, act_layer=nn.ReLU6)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), bn, nn.Conv2d(6, 4, 3))


# (model, layer, the module call whose input is ranked, how to remove the cap for the brute force)
Case = tuple[nn.Module, str, str, Callable[[nn.Module], None]]


def _uncap(path: str) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, nn.Identity())
    return apply


def cases() -> dict[str, Case]:
    torch.manual_seed(0)
    block = nn.Sequential(*_conv_bn(), nn.ReLU6(inplace=True), nn.Dropout(0.3))  # dropout: passes through in eval
    return {
        "timm BatchNormAct2d": (_bn_act(), "1", "1.act", _uncap("1.act")),
        "block ending in ReLU6": (nn.Sequential(block, nn.Conv2d(6, 4, 3)), "0", "0.2", _uncap("0.2")),
        "the ReLU6 itself": (nn.Sequential(*_conv_bn(), nn.ReLU6(inplace=True)), "2", "2", _uncap("2")),
        "hardtanh": (nn.Sequential(*_conv_bn(), nn.Hardtanh(-1, 1)), "2", "2", _uncap("2")),
        "a hand-made clamp": (nn.Sequential(nn.Sequential(*_conv_bn(), Clamp())), "0", "0.2", _uncap("0.2")),
        "inline F.relu6": (nn.Sequential(Inline(False)), "0", "output of 0.bn", _no_cap),
        "inline in-place clamp_": (nn.Sequential(Inline(True)), "0", "output of 0.bn", _no_cap),
    }


def _no_cap(model: nn.Module) -> None:
    model[0].capped = False


def _images(n: int = 12) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randn(3, 12, 12, generator=g) * 10 for _ in range(n)]  # strong inputs: the caps are reached


@pytest.mark.parametrize("case", list(cases()))
def test_capped_layer_is_ranked_before_the_cap_and_equals_brute_force(case: str) -> None:
    model, layer, module, uncap = cases()[case]
    model.eval()
    images = _images()
    before = state_fingerprint(model)
    result = mine_dataset(model, [torch.stack(images[:5]), torch.stack(images[5:])], [layer], k=4)
    after = state_fingerprint(model)
    assert all(torch.equal(before[key], after[key]) for key in before) and hook_count(model) == 0
    got = result.layers[layer]
    assert got.ranked == (f"pre-activation: {module}" if module.startswith("output of") else
                          f"pre-activation of {module}")
    uncapped = copy.deepcopy(model)
    uncap(uncapped)
    capped = brute_force_result(model, images, [layer], k=4).layers[layer]
    assert (capped.ties > 0).any(), "the test data must reach the cap, or it proves nothing"
    ref = brute_force_result(uncapped, images, [layer], k=4).layers[layer]
    np.testing.assert_array_equal(got.image_index, ref.image_index)
    np.testing.assert_array_equal(got.positions, ref.positions)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-6)
    np.testing.assert_array_equal(got.ties, ref.ties)
    assert "ranked by the value before the cap" in mine_notes(result, projected=True)[0]


def test_uncap_false_ranks_the_output_as_before() -> None:
    model, layer, _, _ = cases()["timm BatchNormAct2d"]
    images = _images()
    result = mine_dataset(model.eval(), [torch.stack(images)], [layer], k=4, uncap=False)
    ref = brute_force_result(model, images, [layer], k=4).layers[layer]
    assert result.layers[layer].ranked == "activation"
    np.testing.assert_array_equal(result.layers[layer].image_index, ref.image_index)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv(x))  # the cap is not the last word: nothing to look before


def test_layers_that_do_not_end_in_a_cap_rank_their_output() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Residual(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU6(),
                                                                                   nn.Conv2d(4, 4, 1))).eval()
    plan = plan_ranking(model, ["0", "1", "2", "3"], probe_batch(model, (1, 3, 10, 10)) * 3)
    assert plan.sources == {} and plan.layers == ["0", "1", "2", "3"]


def test_a_reused_cap_is_ranked_at_the_call_that_made_the_output() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.b(self.act(self.a(x))))

    torch.manual_seed(0)
    model = nn.Sequential(Twice()).eval()
    images = [x * 2 for x in _images(8)]
    plan = plan_ranking(model, ["0"], probe_batch(model, (1, 3, 12, 12)) * 3)
    assert plan.sources == {"0": Source("0.act", 1)}
    result = mine_dataset(model, [torch.stack(images)], ["0"], k=3)

    class Before(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model[0].b(model[0].act(model[0].a(x)))

    ref = brute_force_result(nn.Sequential(Before()), images, ["0"], k=3).layers["0"]
    np.testing.assert_array_equal(result.layers["0"].image_index, ref.image_index)
    np.testing.assert_allclose(result.layers["0"].values, ref.values, rtol=1e-6)


def test_duplicate_default_layers_are_dropped_and_asked_ones_kept() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3)).eval()
    shape = (1, 3, 16, 16)
    layers = default_layers(model, shape)
    assert layers == ["3", "6", "7"]  # 16x16, 8x8 and the final 2x2 pool, which misses the last two rows/cols
    x = probe_batch(model, shape)
    # 4 = a 2x2 pool over the whole 16x16 map: the same maxima as 3; 7 = a 3x3 pool of an 8x8 map: not the same
    assert plan_ranking(model, ["3", "4", "6", "7"], x, dedupe=True).duplicates == {"4": "3"}
    assert plan_ranking(model, ["3", "4", "6", "7"], x, dedupe=True).layers == ["3", "6", "7"]
    assert plan_ranking(model, ["3", "4"], x).layers == ["3", "4"]  # asked for by name: kept
    (note,) = plan_notes({"4": "3"})
    assert "4 (= 3)" in note and "--layer" in note


def test_ties_counted_per_unit_and_named_in_the_note() -> None:
    values = np.array([[6, 6, 6], [5, 4, 4], [3, 2, 1], [2, 2, -np.inf], [1, -np.inf, -np.inf]], np.float32)
    index = np.where(np.isfinite(values), np.arange(3), -1)
    rate = np.array([1, 1, 1, 0, 1], np.float32)  # unit 3 never fired
    layer = LayerTopK(values, index, np.zeros((5, 3, 2), np.int64), np.zeros(5, np.float32), rate)
    np.testing.assert_array_equal(layer.ties, [3, 2, 0, 2, 0])
    np.testing.assert_array_equal(layer.filled, [3, 3, 3, 2, 1])
    (note,) = tie_note(MineResult([f"i{i}" for i in range(3)], {"x": layer}, 3))
    assert "x 3 of 5 units (2 with all 3 entries tied, 1 of them dead)" in note and "smaller image index" in note


def test_random_googlenet_is_flagged_untrained() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False).eval()
    g = torch.Generator().manual_seed(0)
    result = mine_dataset(model, [torch.randn(2, 3, 64, 64, generator=g)], ["conv1", "inception4e"], k=2)
    peaks = [float(np.abs(layer.values).max()) for layer in result.layers.values()]
    assert peaks[0] > 1e-3  # the first layer alone looks alive: a fixed threshold misses the network
    assert any("untrained" in note for note in mine_notes(result, projected=True))
    trained_like = MineResult(result.paths, {"a": result.layers["conv1"]}, 2)
    assert not any("untrained" in note for note in mine_notes(trained_like, projected=True))


CAPNET = textwrap.dedent('''
    from torch import nn


    class CapNet(nn.Sequential):
        """No max-pool; both stages end in ReLU6."""

        def __init__(self) -> None:
            super().__init__(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(inplace=True),
                             nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 4))
''')
INPUT = ["--input-size", "3,32,32", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]


@pytest.fixture()
def capnet(tmp_path: Path) -> tuple[list[str], Path]:
    (tmp_path / "capnet.py").write_text(CAPNET)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
    return ["--model", f"{tmp_path / 'capnet.py'}:CapNet", *INPUT], data


def test_mine_says_what_it_ranked_caps_k_and_notes_image_independence(capnet: tuple[list[str], Path],
                                                                       tmp_path: Path) -> None:
    model, data = capnet
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["mine", str(data), *model, "--top-k", "100", "--units", "0,1", "--dream-steps",
                                    "2", "--dream-size", "16", "--out", str(out)])  # small dreams: a fast test
    assert res.exit_code == 0, res.output
    with np.load(out / "mine" / "mine.npz") as npz:
        assert str(npz["2/ranked"]) == "pre-activation of 2" and str(npz["4/ranked"]) == "pre-activation of 4"
        assert npz["2/values"].shape == (6, 5) and npz["2/ties"].shape == (6,)  # K capped at the 5 images
    index = (out / "mine" / "html" / "index.html").read_text()
    for said in ("would tie at it: 2 (pre-activation of 2), 4 (pre-activation of 4)",
                 "--top-k 100 asks for more than the 5 images listed: K = 5",
                 "no max-pool, gate or normalisation statistic before 2, 4: their projections"):
        assert html.escape(said) in index, said
    assert "ranked by the pre-activation of 2" in (out / "mine" / "html" / "layer00.html").read_text()
    # no max-pool before 2 and 4: the dream is on by default, says why, and reports its progress on stderr
    manifest = json.loads((out / "mine" / "mine.manifest.json").read_text())
    why = "on by default: the deconvnet projections of 2, 4 do not depend on the image"
    assert manifest["dream"]["reason"].startswith(why) and html.escape(why) in index
    assert "dream: 4 units in " in res.stderr
    with np.load(out / "mine" / "mine.npz") as npz:
        assert [list(npz[f"{layer}/dream/channels"]) for layer in "24"] == [[0, 1], [0, 1]]
    off = CliRunner().invoke(main, ["mine", str(data), *model, "--units", "0", "--no-dream", "--out",
                                    str(tmp_path / "off")])
    assert off.exit_code == 0 and json.loads((tmp_path / "off" / "mine" / "mine.manifest.json").read_text())[
        "dream"] is None and "dream:" not in off.stderr


def test_evolve_ranks_before_the_cap_as_mine_does(capnet: tuple[list[str], Path], tmp_path: Path) -> None:
    """evolve's top-1 per unit and checkpoint is the brute-force maximum of the ReLU6's input, and its pages say
    what was ranked."""
    model, data = capnet
    ckpts = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(inplace=True),
                            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 4))
        nn.init.normal_(net[3].weight, std=2.0)  # strong enough to reach the cap of 6
        ckpts.append(tmp_path / f"epoch_{seed}.pt")
        torch.save(net.state_dict(), ckpts[-1])
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["evolve", *map(str, ckpts), "--data", str(data), *model, "--layer", "4",
                                    "--units", "all", "--out", str(out)])
    assert res.exit_code == 0, res.output
    x = torch.stack([(torch.from_numpy(np.asarray(Image.open(data / f"{i}.png"), np.float32) / 255).permute(2, 0, 1)
                      - 0.5) / 0.25 for i in range(5)])
    with np.load(out / "evolve" / "evolve.npz") as npz:
        for t, path in enumerate(ckpts):
            net.load_state_dict(torch.load(path, weights_only=True))
            with torch.no_grad():
                before = net.eval()[:4](x)  # the input of the ReLU6 (module 4)
            want = before.flatten(2).amax(dim=2).amax(dim=0)
            assert float(want.max()) > 6  # the outputs would tie at the cap
            np.testing.assert_allclose(npz["4/values"][t, :, 0], want.numpy(), rtol=1e-5)
    assert "4 (pre-activation of 4)" in html.unescape((out / "evolve" / "html" / "index.html").read_text())


def test_dream_is_on_by_default_only_where_projections_ignore_the_image() -> None:
    from vizkit.jobs.mine_dream import check_dream, dream_reason

    assert dream_reason(None, []) is None and dream_reason(False, ["bn1"]) is None
    assert dream_reason(True, []) == "asked (--dream)"
    assert "bn1, bn2" in str(dream_reason(None, ["bn1", "bn2"]))
    assert dream_reason(None, ["bn1"], channels=1) is None  # a dream is an RGB canvas
    check_dream(None, 1)
    with pytest.raises(UserInputError, match="1-channel input; drop --dream"):
        check_dream(True, 1)


def test_mine_and_deconv_refuse_a_linear_layer_alike(capnet: tuple[list[str], Path], tmp_path: Path,
                                                    sample_paths: list[Path]) -> None:
    model, data = capnet
    runner = CliRunner()
    mine = runner.invoke(main, ["mine", str(data), *model, "--layer", "7", "--out", str(tmp_path / "m")])
    deconv = runner.invoke(main, ["deconv", str(sample_paths[0]), *model, "--layer", "7", "--out",
                                  str(tmp_path / "d")])
    assert mine.exit_code == deconv.exit_code != 0
    assert mine.stderr.strip() == deconv.stderr.strip() and "layer '7'" in mine.stderr
    assert len(mine.stderr.strip().splitlines()) == 1
    scan = runner.invoke(main, ["mine", str(data), *model, "--layer", "7", "--no-project", "--out",
                                str(tmp_path / "s")])
    assert scan.exit_code == 0, scan.output  # nothing to project: the scan of a Linear layer is fine


def test_ranked_quantity_survives_checkpoints_and_rank_merges() -> None:
    from vizkit.errors import UserInputError
    from vizkit.scan.state import ScanState, scan_batches

    model, layer, module, _ = cases()["timm BatchNormAct2d"]
    model.eval()
    x = torch.stack(_images())
    sources = {layer: Source(module)}
    parts = []
    for half in (x[:6], x[6:]):
        state = ScanState([layer], 3, sources=sources)
        scan_batches(model, [half], state)
        parts.append(state.state_dict())
    merged = ScanState([layer], 3)  # what gather_state builds: the sources come with the gathered states
    for part in parts:
        other = ScanState([layer], 3)
        other.load_state_dict(part)
        merged.merge(other)
    assert merged.result([]).layers[layer].ranked == f"pre-activation of {module}"
    with pytest.raises(UserInputError, match="rerun without --resume"):
        ScanState([layer], 3, sources={layer: Source("1", 0)}).load_state_dict(parts[0])
    older = {key: value for key, value in parts[0].items() if key != "sources"}  # saved before rankings were
    with pytest.raises(UserInputError, match="ranked every layer by its output"):
        ScanState([layer], 3, sources=sources).load_state_dict(older)


def test_evolve_notes_the_layers_whose_projections_do_not_depend_on_the_image(capnet: tuple[list[str], Path],
                                                                             tmp_path: Path) -> None:
    from vizkit.jobs.evolve import EvolveConfig, evolve_checkpoints

    model, data = capnet
    spec = model[1]
    namespace: dict[str, object] = {}
    exec(compile(CAPNET, "capnet.py", "exec"), namespace)  # the same class, to write its checkpoints
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        torch.save(namespace["CapNet"]().state_dict(), tmp_path / f"epoch_{epoch}.pt")  # type: ignore[operator]
    result, _, _ = evolve_checkpoints(EvolveConfig(
        checkpoints=[str(tmp_path / "epoch_1.pt"), str(tmp_path / "epoch_2.pt")], data=str(data), model=spec,
        input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), layers=["2", "4"], units="0",
        command="test"))
    assert result is not None
    assert any(note.startswith("no max-pool, gate or normalisation statistic before 2, 4:") for note in result.notes)
