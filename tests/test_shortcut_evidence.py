"""Shortcut evidence: LRP against zennit, TCAV against Captum, transplant / consistency / region / merge against
hand-built models and hand-computed values, and the fitted verdict on seeded family labs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.lab.labnet import LabNet
from vizkit.project.shortcuts.evidence import (
    carriers,
    consistency,
    deletion,
    pattern_entries,
    pattern_transplant,
    pixel_mask,
    relevance_region,
    transplant,
)
from vizkit.project.shortcuts.lrp import lrp_maps
from vizkit.project.shortcuts.merge import merge_clusters
from vizkit.project.shortcuts.spray import spectral_clusters
from vizkit.testing.model_state import hook_count


@pytest.fixture(scope="module")
def bn_net() -> nn.Module:
    torch.manual_seed(0)
    model = LabNet(num_classes=3)
    with torch.no_grad():  # BatchNorm statistics that are not the identity: the merge must be done right
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["epsilon-plus-flat", "epsilon-alpha2-beta1-flat"])
def test_lrp_equals_zennit(bn_net: nn.Module, name: str) -> None:
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonPlusFlat

    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 1])
    bn_net.train()
    before = {k: v.clone() for k, v in bn_net.state_dict().items()}
    ours = lrp_maps(bn_net, x, y, name)
    assert bn_net.training and hook_count(bn_net) == 0
    assert all(torch.equal(v, bn_net.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad and p.grad is None for p in bn_net.parameters())
    bn_net.eval()
    cls = {"epsilon-plus-flat": EpsilonPlusFlat, "epsilon-alpha2-beta1-flat": EpsilonAlpha2Beta1Flat}[name]
    with torch.no_grad():
        logits = bn_net(x)
    with Gradient(model=bn_net, composite=cls(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        _, rel = attributor(x.clone().requires_grad_(True), torch.eye(3)[y] * logits)  # relevance starts at the score
    torch.testing.assert_close(ours, rel.sum(dim=1).clamp(min=0), rtol=1e-5, atol=1e-7)


class MarkNet(nn.Module):
    """Relies on a mark by construction: logit 1 = 8 x the mean of the pixels in the box; logits 0, 2 = 0."""

    def __init__(self, box: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.box = box
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, x0, y1, x1 = self.box
        mark = x[:, :, y0:y1, x0:x1].mean(dim=(1, 2, 3)) * self.scale
        zero = torch.zeros_like(mark)
        return torch.stack([zero, mark, zero], dim=1)


def test_transplant_gain_and_deletion_equal_hand_computed() -> None:
    box = (2, 2, 6, 6)
    model = MarkNet(box).eval()
    g = torch.Generator().manual_seed(0)
    recipients = torch.rand(10, 3, 16, 16, generator=g) * 0.2 - 0.2  # no recipient is class 1 before the paste
    members = torch.rand(6, 3, 16, 16, generator=g) * 0.2 - 0.1
    members[:, :, 2:6, 2:6] = 1.0  # the mark
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:6, 2:6] = True
    pattern = pattern_entries(members, recipients, mask)
    assert pattern.sum() == 3 * 16  # the mark's pixels, every channel: the members' only fixed content
    gain_own, flip_own, gain_mean, flip_mean = transplant(model, members, recipients, mask, 1)
    gain_pattern, flip_pattern = pattern_transplant(model, members, recipients, pattern, 1)

    def p1(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x), dim=1)[:, 1]

    base = recipients.clone()
    base[:, :, 2:6, 2:6] = recipients.roll(1, 0)[:, :, 2:6, 2:6]
    pasted = recipients.clone()
    pasted[:, :, 2:6, 2:6] = 1.0
    with torch.no_grad():
        expected = float(p1(pasted).mean() - p1(base).mean())
        flips = float((model(pasted).argmax(1) == 1).float().mean() - (model(base).argmax(1) == 1).float().mean())
    assert gain_own == pytest.approx(expected, abs=1e-6) and gain_mean == pytest.approx(expected, abs=1e-6)
    assert gain_pattern == pytest.approx(expected, abs=1e-6)
    assert flip_own == pytest.approx(flips, abs=1e-6) and flip_mean == pytest.approx(flips, abs=1e-6)
    assert flip_pattern == pytest.approx(flips, abs=1e-6) and flips == 1
    elsewhere = torch.zeros(16, 16, dtype=torch.bool)
    elsewhere[10:14, 10:14] = True  # a region the model ignores: no gain at all
    assert transplant(model, members, recipients, elsewhere, 1) == pytest.approx((0.0, 0.0, 0.0, 0.0), abs=1e-6)
    with torch.no_grad():
        removed = members.clone()
        removed[:, :, 2:6, 2:6] = 0
        drop = float(torch.median(p1(members) - p1(removed)))
    assert deletion(model, members, mask, 1) == pytest.approx(drop, abs=1e-6)


def test_pattern_is_the_fixed_part_and_an_object_without_one_pulls_nothing() -> None:
    """The pattern entries equal a brute-force numpy median-absolute-deviation comparison; content that pulls but
    varies from member to member (an object) has no pattern, so its pattern paste gains nothing while pasting each
    member's own patch flips every recipient."""
    box = (2, 2, 6, 6)
    model = MarkNet(box).eval()
    g = torch.Generator().manual_seed(3)
    recipients = torch.rand(10, 3, 16, 16, generator=g) * 0.2 - 0.2
    members = torch.rand(6, 3, 16, 16, generator=g) * 0.2 - 0.1
    members[:, :, 2:6, 2:6] = torch.rand(6, 3, 4, 4, generator=g) + 0.5  # bright, but different in every member
    members[:, 1, 2:4, 2:4] = 1.0  # one fixed piece, in one channel
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:6, 2:6] = True

    def mad(a: np.ndarray) -> np.ndarray:
        return np.median(np.abs(a - np.median(a, axis=0)), axis=0)

    m, r = members.numpy(), recipients.numpy()
    expected = np.zeros((3, 16, 16), bool)
    expected[:, 2:6, 2:6] = (mad(m) < 0.5 * mad(r))[:, 2:6, 2:6]
    pattern = pattern_entries(members, recipients, mask)
    assert np.array_equal(pattern.numpy(), expected) and expected.sum() == 4 and expected[1, 2:4, 2:4].all()
    members[:, 1, 2:4, 2:4] = torch.rand(6, 2, 2, generator=g) + 0.5  # no fixed piece left: the object alone
    pattern = pattern_entries(members, recipients, mask)
    assert not pattern.any()
    gain_own, flip_own, _, _ = transplant(model, members, recipients, mask, 1)
    assert flip_own == 1 and gain_own > 0.5 and pattern_transplant(model, members, recipients, pattern, 1) == (0, 0)


def test_consistency_identical_vs_varied_patches() -> None:
    g = torch.Generator().manual_seed(1)
    others = torch.rand(200, 3, 16, 16, generator=g)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[0:4, 12:16] = True
    same = torch.rand(12, 3, 16, 16, generator=g)
    same[:, :, 0:4, 12:16] = torch.rand(3, 4, 4, generator=g)
    varied = torch.rand(12, 3, 16, 16, generator=g)
    assert consistency(same, others, mask) == pytest.approx(1.0)
    assert abs(consistency(varied, others, mask)) < 0.25
    mixed = torch.cat([same[:8], varied[:4]])
    has = carriers(mixed, others, mask)  # a varied patch passes as a carrier with chance 5 %
    assert has[:8].all() and has[8:].sum() <= 1


def test_region_follows_a_frame_and_a_spot_whatever_their_area() -> None:
    frame = np.zeros((3, 16, 16))
    frame[:, 0, :] = frame[:, -1, :] = frame[:, :, 0] = frame[:, :, -1] = 1.0
    frame += 0.01
    frame /= frame.sum(axis=(1, 2), keepdims=True)
    region = relevance_region(frame, grow=0)
    ring = np.zeros((16, 16), bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    assert region.mean() > 0.1 and (region & ~ring).sum() == 0 and (region & ring).sum() >= ring.sum() // 2
    spot = np.full((2, 16, 16), 0.001)
    spot[:, 3, 4] = 1.0
    assert np.argwhere(relevance_region(spot, grow=0)).tolist() == [[3, 4]]
    assert relevance_region(spot).sum() == 9  # grown by one cell
    mask = pixel_mask(relevance_region(spot, grow=0), (32, 32))
    assert torch.nonzero(mask).min(0).values.tolist() == [6, 8] and int(mask.sum()) == 4


def test_merge_joins_same_place_and_pattern_only() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(12, 3, 16, 16, generator=g)
    reference = torch.rand(30, 3, 16, 16, generator=g)
    x[:8, :, 0:2, 0:2] = 1.0  # clusters 0 and 1: one mark at the same place
    x[8:, :, 0:2, 0:2] = -1.0  # cluster 2: same place, another pattern
    pooled = np.full((12, 8, 8), 0.01)
    pooled[:, 0, 0] = 1.0
    pooled /= pooled.sum(axis=(1, 2), keepdims=True)
    labels = np.repeat([0, 1, 2], 4)
    groups = merge_clusters(x, pooled, labels, reference, iou=0.5, similarity=0.5)
    assert [g.parts for g in groups] == [[0, 1], [2]] and groups[0].members.tolist() == list(range(8))
    pooled[8:, 0, 0] = 0.0
    pooled[8:, 7, 7] = 1.0  # elsewhere: never joined
    groups = merge_clusters(x, pooled, labels, reference, iou=0.01, similarity=-1.0)
    assert sorted(g.parts for g in groups) == [[0, 1], [2]]


def test_tcav_equals_captum_called_directly(bn_net: nn.Module) -> None:
    from captum.concept import TCAV
    from captum.concept._utils.classifier import DefaultClassifier

    from vizkit.project.shortcuts.tcav import concept_test, region_concepts, tcav_scores, tcav_sets

    g = torch.Generator().manual_seed(3)
    inputs, members, pool = (torch.randn(n, 3, 32, 32, generator=g) for n in (8, 10, 30))
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[24:30, 24:30] = True
    concept, randoms = region_concepts(members, pool, mask, repeats=3, seed=5)
    sets = tcav_sets(concept, randoms)
    ours = tcav_scores(bn_net, "features.relu3", inputs, sets, 1, seed=5)
    import random
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        random.seed(5)
        np.random.seed(5)
        torch.manual_seed(5)
        out = TCAV(bn_net, ["features.relu3"], classifier=DefaultClassifier(), save_path=tmp).interpret(
            inputs, experimental_sets=sets, target=1)
    ref = [float(out["-".join(str(c.id) for c in s)]["features.relu3"]["sign_count"][0]) for s in sets]
    np.testing.assert_array_equal(ours, ref)
    result = concept_test(bn_net, "features.relu3", inputs, members, pool, mask, 1, repeats=3, seed=5)
    np.testing.assert_array_equal(np.r_[result.scores, result.random_scores], ours)


def test_small_class_gets_a_warning_with_the_number() -> None:
    from vizkit.project.shortcuts.judge import MIN_CLASS_IMAGES, judge_class
    from vizkit.project.shortcuts.verdict import Thresholds

    model = MarkNet((0, 0, 4, 4)).eval()
    x = torch.rand(10, 3, 16, 16)
    v = judge_class(model, x, torch.rand(10, 16, 16), torch.rand(6, 3, 16, 16), 1, Thresholds())
    assert MIN_CLASS_IMAGES == 24 and v.warning is not None and "10 images" in v.warning and "24" in v.warning


def test_shipped_thresholds_were_fitted_by_code(tmp_path) -> None:
    """One fit per method in the shipped file, the default first; a method without a fit gets the default's; a
    file of one ``Thresholds`` is used for every method."""
    from vizkit.project.shortcuts.verdict import FEATURES, load_thresholds

    th = load_thresholds()
    assert set(th.weights) == set(FEATURES) and th.fitted["labs"] and 0 < th.flag < 1
    assert set(th.fitted["methods"]) == {"gradxinput", "lrp-epsilon-plus-flat"}
    lrp = load_thresholds(method="lrp-epsilon-plus-flat")
    assert lrp.method == "lrp-epsilon-plus-flat" and lrp.weights != th.weights
    assert lrp.fitted["labs"] == th.fitted["labs"]
    assert load_thresholds(method="gradcam") == th
    lrp.write(tmp_path / "mine.json")
    assert load_thresholds(tmp_path / "mine.json", method="gradxinput") == lrp


# --- the verdict on seeded family labs (everything pinned: single-threaded, deterministic, fixed seeds) ---

def _verdicts(spec):
    from vizkit.lab.family import build_lab, train_lab
    from vizkit.project.shortcuts.judge import judge
    from vizkit.project.shortcuts.verdict import load_thresholds

    data = build_lab(spec)
    model = train_lab(data)
    return judge(model, data.x_val, data.y_val, data.x_test, data.y_test, load_thresholds())


@pytest.mark.slow
def test_redundant_shortcut_is_flagged_first_over_seeds() -> None:
    """The issue's missed case: every image of the class carries a corner tag, and relabelled images of other
    classes carry it too; deletion on the class's own images barely hurts, yet the verdict must flag it."""
    from vizkit.lab.family import FamilyLab
    from vizkit.lab.marks import MarkSpec

    hits = 0
    for seed in (11, 12, 13):
        spec = FamilyLab(f"redundant{seed}", seed, MarkSpec("patch", "tl", 4, 1.0, (255, 0, 0)), 2, 1.0, 0.2)
        verdicts = _verdicts(spec)
        hits += verdicts[0].class_index == 2 and verdicts[0].flagged and not any(v.flagged for v in verdicts[1:])
    assert hits >= 2


@pytest.mark.slow
def test_clean_family_controls_are_not_flagged_over_seeds() -> None:
    from vizkit.lab.family import FamilyLab

    quiet = sum(not any(v.flagged for v in _verdicts(FamilyLab(f"clean{s}", s))) for s in (21, 22, 23))
    assert quiet >= 2


@pytest.mark.slow
def test_ignored_mark_controls_are_not_flagged_over_seeds() -> None:
    """A mark on the analysed images that the model never saw in training: spectral clustering groups the marked
    images and their region takes in the object, yet nothing may be flagged (the false flag of a clean model)."""
    from vizkit.lab.family import FamilyLab
    from vizkit.lab.marks import MarkSpec

    mark = MarkSpec("text", "br", 6, 0.9, (255, 255, 0), word="TM")
    quiet = sum(not any(v.flagged for v in _verdicts(FamilyLab(f"ignored{s}", s, mark, 1, 0.9, ignored=True)))
                for s in (31, 32, 33))
    assert quiet >= 2


# --- SpRAy on small classes (issue 13) ---

def test_clusters_capped_by_class_size_with_reason_and_no_sklearn_warnings() -> None:
    """Issue 13: --clusters 100 on 50 maps must not give 50 singletons nor leak scikit-learn's warnings; the number
    of clusters and why is said."""
    import warnings

    rng = np.random.default_rng(3)
    feats = np.concatenate([rng.normal(0, 1, (30, 5)), rng.normal(6, 1, (20, 5))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that leaks fails the test
        capped = spectral_clusters(feats, 100, embed=False)
        auto = spectral_clusters(feats[:7], embed=False)  # 7 maps: at most 2 clusters of 3
    assert capped.k == 50 // 3 and np.bincount(capped.labels).size == capped.k
    assert "capped" in capped.reason and "100" in capped.reason
    assert auto.k <= 2 and "eigengap" in auto.reason


def test_spectrum_plot_marks_the_gap_not_a_bar_of_height_zero() -> None:
    from matplotlib.figure import Figure

    from vizkit.project.shortcuts.judge import ClassVerdict
    from vizkit.project.shortcuts.spray import Spectral
    from vizkit.render.shortcuts_pages import spectrum

    ev = np.array([0.0, 0.0, 0.5, 0.7, 0.9])
    v = ClassVerdict(0, np.arange(9), Spectral(np.zeros(9, np.int64), ev, 2, 0.5, np.zeros((9, 2))))
    ax = Figure().add_subplot()
    spectrum(ax, v)
    assert not ax.patches  # points, no bars
    (line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert line.get_xdata()[0] == pytest.approx(2.5)  # the gap between l2 and l3


def test_quiet_report_details_the_most_suspicious_classes_not_class_0() -> None:
    from vizkit.project.shortcuts.evidence import Evidence
    from vizkit.project.shortcuts.judge import ClassVerdict, ClusterVerdict
    from vizkit.project.shortcuts.merge import Group
    from vizkit.project.shortcuts.result import ShortcutsResult
    from vizkit.project.shortcuts.spray import Spectral

    def verdict(cls: int, s: float) -> ClassVerdict:
        spectral = Spectral(np.zeros(4, np.int64), np.zeros(4), 1, 0.0, np.zeros((4, 2)))
        cluster = ClusterVerdict(Group(np.arange(4), [0], np.zeros((4, 4), bool)), Evidence(*[0.0] * 8), s)
        return ClassVerdict(cls, np.arange(4 * cls, 4 * cls + 4), spectral, [cluster], s, False)

    ranked = sorted([verdict(0, 0.01), verdict(1, 0.4), verdict(2, 0.2)], key=lambda v: -v.suspicion)
    result = ShortcutsResult([f"{i}.png" for i in range(12)], "gradxinput", None, (4, 4), np.repeat([0, 1, 2], 4),
                             np.zeros((12, 4, 4), np.float32), np.zeros((12, 4, 4), np.float32), ranked)
    assert [v.class_index for v in result.detailed()] == [1, 2]
    ranked[1].flagged = True
    assert [v.class_index for v in result.detailed()] == [2]
