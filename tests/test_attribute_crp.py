"""CRP conditional relevance equals zennit-crp's ``CondAttribution`` with ``ChannelConcept``."""
from __future__ import annotations

import copy

import torch
from torch import nn

from vizkit.project.attribute import conditional_relevance
from vizkit.testing.model_state import hook_count, state_fingerprint


def cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 4)).eval()


def test_conditional_relevance_equals_zennit_crp() -> None:
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    model = cnn()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    units, target = [0, 3, 7], 2
    before = state_fingerprint(model)
    ours = conditional_relevance(model, x, "4", units, target)
    assert hook_count(model) == 0 and all(torch.equal(before[k], v) for k, v in state_fingerprint(model).items())

    reference = copy.deepcopy(model)
    attribution = CondAttribution(reference, no_param_grad=True)
    conditions = [{"y": [target], "4": [u]} for u in units]
    # exclude_parallel=False: with its default partial backward, zennit-crp's recorded ``.grad`` at the layer is
    # the relevance counted twice (the heatmap is the same either way; ours sums to it, see the last assert)
    result = attribution(x.clone().requires_grad_(True), conditions, EpsilonPlusFlat([SequentialMergeBatchNorm()]),
                         record_layer=["4"], exclude_parallel=False)
    theirs_rel = ChannelConcept().attribute(result.relevances["4"], abs_norm=False)
    expected = torch.stack([theirs_rel[i, u] for i, u in enumerate(units)])
    scale = float(expected.abs().max())
    assert float((ours.relevance[0] - expected).abs().max()) <= 1e-5 * scale
    heat = ours.heatmaps[0].sum(dim=1)  # zennit-crp's heatmap sums the input relevance over colour channels
    assert heat.shape == result.heatmap.shape
    assert float((heat - result.heatmap).abs().max()) <= 1e-5 * float(result.heatmap.abs().max())
    assert torch.equal(ours.layer_relevance[0, units], ours.relevance[0])
    # conservation: a unit's input heatmap carries (up to the epsilon/bias leaks) the unit's relevance
    assert torch.allclose(ours.heatmaps[0].sum(dim=(1, 2, 3)), ours.relevance[0], rtol=0.05)
