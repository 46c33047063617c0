"""Relevance-ranked mining (``mine --rank relevance``) against brute force through zennit-crp, and zennit-crp's
own ``FeatureVisualization`` (relevance mode) on a small VGG-style net."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.errors import UserInputError
from vizkit.load.dataset import ImageBatch
from vizkit.scan.relevance import RelevanceScoring, parse_class
from vizkit.scan.state import ScanState, scan_batches
from vizkit.scan.topk import MineResult, Ranking
from vizkit.testing.model_state import hook_count, state_fingerprint

LAYERS = ["2", "5", "8"]
TARGET = 1


def vgg_like() -> nn.Module:
    """Conv-ReLU blocks, max-pools, a classifier: VGG's shape at toy size (in-place ReLUs as torchvision's)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(40, 16), nn.ReLU(),
                         nn.Linear(16, 3)).eval()


def images(n: int = 14) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def scan(model: nn.Module, x: torch.Tensor, k: int, size: int, layers: list[str] = LAYERS) -> MineResult:
    state = ScanState(layers, k)
    batches = [ImageBatch(x[s:s + size], torch.arange(s, min(s + size, len(x))),
                          torch.full((min(size, len(x) - s),), -1), []) for s in range(0, len(x), size)]
    scan_batches(model, batches, state, scorer=RelevanceScoring(TARGET))
    return state.result([f"img{i}" for i in range(len(x))])


def crp_relevance(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute force, one image at a time: zennit-crp's CondAttribution relevance at ``layer`` for the class,
    reduced by its ChannelConcept (sum, abs-normalised) -> (N, C) values and (N, C) first argmax positions."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    attribution = CondAttribution(reference, no_param_grad=True)
    values, positions = [], []
    for i in range(len(x)):
        result = attribution(x[i:i + 1].clone().requires_grad_(True), [{"y": [TARGET]}],
                             EpsilonPlusFlat([SequentialMergeBatchNorm()]), record_layer=[layer])
        rel = result.relevances[layer]
        values.append(ChannelConcept().attribute(rel, abs_norm=True)[0].numpy())
        positions.append(rel[0].flatten(1).argmax(1).numpy())
    return np.stack(values), np.stack(positions)


@pytest.mark.parametrize("k,size", [(3, 4), (6, 14)])
def test_relevance_scan_equals_brute_force(k: int, size: int) -> None:
    model = vgg_like()
    x = images()
    before, inplace = state_fingerprint(model), [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    result = scan(model, x, k, size)
    assert hook_count(model) == 0 and all(torch.equal(before[key], v) for key, v in state_fingerprint(model).items())
    assert inplace == [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    for layer in LAYERS:
        values, positions = crp_relevance(model, x, layer)
        got = result.layers[layer]
        order = np.lexsort((np.broadcast_to(np.arange(len(x))[:, None], values.shape), -values), axis=0)[:k].T
        expected = np.take_along_axis(values.T, order, 1)
        np.testing.assert_allclose(got.values, expected, rtol=1e-5, atol=1e-6)
        width = {"2": 16, "5": 8, "8": 4}[layer]
        for c in range(got.channels):
            ranked = np.sort(values[:, c])[::-1]
            for slot in range(k):
                separated = all(abs(ranked[slot] - ranked[j]) > 1e-5 for j in (slot - 1, slot + 1)
                                if 0 <= j < len(ranked))
                if separated:  # (near-ties may swap between batched and one-image arithmetic)
                    i = order[c, slot]
                    assert got.image_index[c, slot] == i
                    assert tuple(got.positions[c, slot]) == divmod(int(positions[i, c]), width)
        np.testing.assert_allclose(got.mean, values.mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(got.rate, (values > 0).mean(0).astype(np.float32))


class TwoBranches(nn.Module):
    """A residual-style block: ``b`` reads the stem, not ``a``'s output (a layer off the first layer's path)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.stem, self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.head(torch.relu(self.a(h)) + self.b(h))


def test_parallel_branches_fall_back_to_the_full_graph() -> None:
    model, x = TwoBranches().eval(), images(6)
    result = scan(model, x, 6, 3, layers=["a", "b"])
    for layer in ("a", "b"):
        values, _ = crp_relevance(model, x, layer)
        np.testing.assert_allclose(result.layers[layer].values, -np.sort(-values, 0).T, rtol=1e-5, atol=1e-6)


def test_ties_go_to_the_smaller_index() -> None:
    model = vgg_like()
    x = images(1).expand(6, -1, -1, -1).contiguous()  # six equal images: every value ties
    result = scan(model, x, 6, 3)
    for layer in LAYERS:
        assert (result.layers[layer].image_index == np.arange(6)).all()


@pytest.mark.slow  # importing crp.visualization (torchvision transforms, tqdm) takes seconds on a loaded machine
def test_same_top_k_as_zennit_crp_feature_visualization(tmp_path: Path) -> None:
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.visualization import FeatureVisualization
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    model, x, k = vgg_like(), images(12), 5
    ours = scan(model, x, k, 4)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return x[i], TARGET  # the class every image is explained for

    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    fv = FeatureVisualization(CondAttribution(reference, no_param_grad=True), Pairs(),
                              {layer: ChannelConcept() for layer in LAYERS}, path=str(tmp_path / "crp"))
    fv.run(EpsilonPlusFlat([SequentialMergeBatchNorm()]), 0, len(x), batch_size=4)
    folder = tmp_path / "crp" / "RelMax_sum_normed"
    for layer in LAYERS:
        index = np.load(folder / f"{layer}_data.npy")[:k + 1].T  # the (k + 1)th: is the kth place tied?
        values = np.load(folder / f"{layer}_rel.npy")[:k + 1].T
        got = ours.layers[layer]
        np.testing.assert_allclose(got.values, values[:, :k], rtol=1e-5, atol=1e-6)
        gaps = np.abs(np.diff(values, axis=1)) > 1e-6
        distinct = np.ones_like(values, dtype=bool)  # zennit-crp's order among equal values is arbitrary
        distinct[:, 1:] &= gaps
        distinct[:, :-1] &= gaps
        distinct = distinct[:, :k]
        assert distinct.mean() > 0.5
        np.testing.assert_array_equal(got.image_index[distinct], index[:, :k][distinct])


def test_class_by_name_or_index_and_one_line_errors() -> None:
    names = ["cat", "dog", "Cardigan", "cardigan", "newt", "eft"]
    assert parse_class("dog", names, 6) == 1 and parse_class(4, names, 6) == 4
    assert parse_class("Cardigan", names, 6) == 2
    with pytest.raises(UserInputError, match="needs --class"):
        parse_class(None, names, 6)
    with pytest.raises(UserInputError, match=r"6 classes: 'cat', 'dog', 'Cardigan', 'cardigan', 'newt', \.\.\."):
        parse_class("zebra", names, 6)
    with pytest.raises(UserInputError, match="index 0-9"):
        parse_class("12", None, 10)


def test_ranking_round_trips_and_refuses_mixed_merges() -> None:
    model, x = vgg_like(), images(5)
    result = scan(model, x, 2, 5)
    result.ranking = Ranking("relevance", TARGET, "dog")
    arrays = result.to_arrays()
    assert str(arrays["rank"]) == "relevance" and int(arrays["rank_class"]) == TARGET
    back = MineResult.from_arrays(arrays, images_scanned=5)
    assert back.ranking == result.ranking
    plain = MineResult.from_arrays({k: v for k, v in arrays.items() if not k.startswith("rank")})
    assert plain.ranking == Ranking()  # files written before the ranking was recorded
    with pytest.raises(UserInputError, match="ranked differently"):
        result.merge(plain)
    assert result.merge(back).ranking == result.ranking


def test_heatmaps_are_zennit_crp_conditional_heatmaps() -> None:
    from crp.attribution import CondAttribution
    from mine_helpers import PREP, TensorImages
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    from vizkit.project.mine_heatmaps import unit_heatmaps

    model, x = vgg_like(), images(8)
    result = scan(model, x, 3, 4)
    (unit,) = unit_heatmaps(model, result, TensorImages(list(x)), "5", [4], TARGET, prep=PREP)
    index = result.layers["5"].image_index[4]
    assert [e.image_index for e in unit.entries] == index.tolist()
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    expected = CondAttribution(reference, no_param_grad=True)(
        x[index].clone().requires_grad_(True), [{"y": [TARGET], "5": [4]}],
        EpsilonPlusFlat([SequentialMergeBatchNorm()])).heatmap
    got = np.stack([e.heatmap for e in unit.entries])
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert unit.entries[0].image.shape == (16, 16, 3) and unit.entries[0].image.dtype == np.uint8
