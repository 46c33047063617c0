"""vizkit shortcuts: maps against Captum, SpRAy pieces against explicit computations, and the detector on
synthetic shortcut labs with marks of different class, place and size (never the ones it was developed on only),
plus a clean control model."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _synthetic_lab import Mark, folder_tensors, make_images, tiny_cnn, train, write_folders
from click.testing import CliRunner
from vizkit_cli.main import main

from vizkit.jobs.shortcuts import ShortcutsConfig, run_shortcuts
from vizkit.project.shortcuts.maps import attribution_maps
from vizkit.project.shortcuts.result import box_share
from vizkit.project.shortcuts.spray import affinity, choose_clusters, laplacian_spectrum, pool_maps, spectral_clusters
from vizkit.testing.model_state import hook_count

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    model = tiny_cnn()
    with torch.no_grad():  # nonzero biases: rule bugs must not hide behind zero pre-activations
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _ = make_images(3, Mark(), seed=5)
    return x, y


def test_gradxinput_equals_captum(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from captum.attr import InputXGradient

    x, y = batch
    maps, cls = attribution_maps(net, x, y, "gradxinput")
    ref = InputXGradient(net).attribute(x.clone().requires_grad_(True), target=y).sum(dim=1).clamp(min=0)
    assert torch.equal(cls, y)
    torch.testing.assert_close(maps, ref.detach(), rtol=1e-5, atol=1e-7)


def test_predicted_class_when_no_label(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = batch
    _, cls = attribution_maps(net, x, torch.full((x.shape[0],), -1), "gradxinput")
    assert torch.equal(cls, net(x).argmax(dim=1))


def _unit_max(t: torch.Tensor) -> torch.Tensor:
    return t / t.flatten(1).amax(dim=1).clamp(min=1e-30).view(-1, 1, 1)


def test_gradcam_and_guided_maps_equal_captum(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam

    x, y = batch
    layer = net[6]  # conv3 (8x8)
    cam = LayerGradCam(net, layer).attribute(x, target=y, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")[:, 0]
    ours, _ = attribution_maps(net, x, y, "gradcam", "6")
    torch.testing.assert_close(ours, _unit_max(cam.detach()), rtol=1e-4, atol=1e-6)
    ggc = GuidedGradCam(net, layer).attribute(x, target=y, interpolate_mode="bilinear").abs().sum(dim=1)
    ours, _ = attribution_maps(net, x, y, "guided-gradcam", "6")
    torch.testing.assert_close(_unit_max(ours), _unit_max(ggc.detach()), rtol=1e-4, atol=1e-6)
    gbp = GuidedBackprop(net).attribute(x, target=y).abs().sum(dim=1)
    ours, _ = attribution_maps(net, x, y, "guided-backprop")
    torch.testing.assert_close(ours, gbp.detach(), rtol=1e-4, atol=1e-7)


def test_maps_leave_the_model_as_it_was(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for method in ("gradxinput", "gradcam", "guided-gradcam"):
        attribution_maps(net, x, y, method, "6")
    assert net.training and hook_count(net) == 0
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    net.eval()


def test_box_share_equals_explicit_and_quantus() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((5, 12, 10)).astype(np.float32)
    maps[2] = 0  # an all-zero map has no evidence anywhere: share 0
    box = (2, 3, 7, 6)
    explicit = [sum(maps[n, y, x] for y in range(2, 7) for x in range(3, 6)) / maps[n].sum() if maps[n].sum() else 0
                for n in range(5)]
    np.testing.assert_allclose(box_share(maps, box), explicit, rtol=1e-6)
    quantus = pytest.importorskip("quantus")
    mask = np.zeros((5, 1, 12, 10), np.float32)
    mask[:, :, 2:7, 3:6] = 1
    keep = [0, 1, 3, 4]
    ref = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(
        model=None, x_batch=maps[keep, None], y_batch=np.zeros(4, int), a_batch=maps[keep, None],
        s_batch=mask[keep], channel_first=True)
    np.testing.assert_allclose(box_share(maps[keep], box), np.array(ref, np.float64), rtol=1e-5)


def test_pool_maps_keeps_mass_and_normalises() -> None:
    maps = torch.zeros(2, 64, 64)
    maps[0, 10:12, 50:52] = 3.0  # a 2x2 mark between grid lines must not vanish
    pooled = pool_maps(maps, 16)
    assert pooled.shape == (2, 16, 16)
    assert float(pooled[0].sum()) == pytest.approx(1.0) and float(pooled[1].sum()) == 0.0
    assert float(pooled[0, 2, 12]) == pytest.approx(1.0)


def test_affinity_and_spectrum_equal_explicit() -> None:
    from sklearn.cluster import SpectralClustering

    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.normal(0, 1, (30, 5)), rng.normal(6, 1, (25, 5))])
    a = affinity(feats, k=10)
    ref = SpectralClustering(n_clusters=2, affinity="nearest_neighbors", n_neighbors=10, random_state=0).fit(feats)
    np.testing.assert_allclose(a, ref.affinity_matrix_.toarray())
    w = a - np.diag(np.diag(a))  # self-loops do not count in the Laplacian (scipy, scikit-learn)
    d = w.sum(axis=1)
    lap = np.eye(len(w)) - w / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(laplacian_spectrum(a), np.clip(np.linalg.eigvalsh(lap), 0, 2), atol=1e-10)
    result = spectral_clusters(feats, embed=False)
    assert result.k == 2 and sorted(np.bincount(result.labels)) == [25, 30]
    assert set(result.labels[:30]) != set(result.labels[30:])


def test_eigengap_counts_disconnected_groups() -> None:
    blocks = np.zeros((12, 12))
    for lo, hi in ((0, 4), (4, 9), (9, 12)):
        blocks[lo:hi, lo:hi] = 1 - np.eye(hi - lo)
    k, gap = choose_clusters(laplacian_spectrum(blocks))
    assert k == 3 and gap > 0.9


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


# --- the detector end to end on synthetic labs (LeNet-5 from the zoo, trained in the test, loaded by vizkit) ---

def _make_lab(root: Path, mark: Mark, test_rate: float, clean: bool = False) -> dict:
    from vizkit.load import load_model

    x, y, marked = make_images(200, mark, seed=0)
    write_folders(root / "train", x, y, marked)
    xt, yt, mt = make_images(60, Mark(mark.cls, mark.y, mark.x, mark.size, test_rate, mark.pattern), seed=1)
    lab = {"root": root, "mark": mark, "marked": set(write_folders(root / "test", xt, yt, mt))}
    loaded = load_model("lenet5")
    torch.manual_seed(0)
    xs, ys = folder_tensors(root / "train", loaded.preprocessing)
    torch.save(train(loaded.model, xs, ys, epochs=15).state_dict(), root / "marked.pt")
    if clean:  # the control: same objects, never a mark
        xc, yc, mc = make_images(200, None, seed=0)
        write_folders(root / "clean_train", xc, yc, mc)
        loaded = load_model("lenet5")
        xs, ys = folder_tensors(root / "clean_train", loaded.preprocessing)
        torch.save(train(loaded.model, xs, ys, epochs=15).state_dict(), root / "clean.pt")
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _make_lab(tmp_path_factory.mktemp("lab"), Mark(cls=1, y=2, x=2, size=4), test_rate=0.7, clean=True)


def _f1(members: list[str], marked: set[str]) -> float:
    hit = len(set(members) & marked)
    return 2 * hit / (len(members) + len(marked))


@pytest.fixture(scope="module")
def lab_run(lab: dict) -> Path:
    out = lab["root"] / "out"
    result = CliRunner().invoke(main, ["shortcuts", str(lab["root"] / "test"), "--model", "lenet5", "--weights",
                                       str(lab["root"] / "marked.pt"), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "shortcuts"


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")  # tests sharing a module fixture run on one xdist worker: built once
def test_lab_marked_class_ranked_first_and_its_cluster_is_the_marked_images(lab: dict, lab_run: Path) -> None:
    doc = json.loads((lab_run / "shortcuts.json").read_text())
    assert list(doc) == ["method", "layer", "verdict", "classes"] and doc["method"] == "gradxinput"
    classes = doc["classes"]
    assert [list(c) for c in classes] == [["class", "name", "images", "suspicion", "flagged", "eigengap", "k",
                                           "k_reason", "split_merge", "warning", "clusters"]] * 3
    assert all(list(k) == ["members", "size", "flagged", "score", "parts", "split", "box", "relevance_in_box",
                           "evidence", "contributions", "tcav"] for c in classes for k in c["clusters"])
    assert [c["suspicion"] for c in classes] == sorted((c["suspicion"] for c in classes), reverse=True)
    top = classes[0]
    assert top["class"] == lab["mark"].cls and top["flagged"] and not any(c["flagged"] for c in classes[1:])
    best = max(top["clusters"], key=lambda k: k["score"])
    assert best["flagged"] and best["score"] == top["suspicion"] and _f1(best["members"], lab["marked"]) >= 0.9
    y0, x0, y1, x1 = best["box"]
    my0, mx0, my1, mx1 = lab["mark"].box
    assert y0 <= my0 and x0 <= mx0 and my1 <= y1 and mx1 <= x1  # the region covers the mark
    ev = best["evidence"]
    assert ev["flip_mean"] > 0.5 and ev["consistency"] > 0  # the mark pulls others to the class; a pattern


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")
def test_lab_share_in_mark_box_per_image(lab: dict, lab_run: Path) -> None:
    """Each marked image's share of evidence inside the mark's box, from the saved maps; equals Quantus' RMA."""
    arrays = np.load(lab_run / "shortcuts.npz")
    assert {"maps", "display_maps", "cluster", "embedding", "explained", "share_in_box", "paths"} <= set(arrays.files)
    paths = [str(p) for p in arrays["paths"]]
    rows = [paths.index(p) for p in sorted(lab["marked"])]
    maps = arrays["display_maps"][rows]  # 32x32 input: display maps are the maps themselves
    share = box_share(maps, lab["mark"].box)
    other = box_share(arrays["display_maps"][[i for i, p in enumerate(paths) if "/0/" in p]], lab["mark"].box)
    assert np.median(share) > 0.25 > np.median(other) * 5  # 1.6 % of the image holds a quarter of the evidence
    quantus = pytest.importorskip("quantus")
    mask = np.zeros_like(maps)[:, None]
    y0, x0, y1, x1 = lab["mark"].box
    mask[:, :, y0:y1, x0:x1] = 1
    ref = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(
        model=None, x_batch=maps[:, None], y_batch=np.zeros(len(rows), int), a_batch=maps[:, None], s_batch=mask,
        channel_first=True)
    np.testing.assert_allclose(share, np.array(ref, np.float64), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")
def test_lab_outputs_pdf_manifest_and_npz(lab_run: Path) -> None:
    names = {p.name for p in lab_run.iterdir()}
    assert names == {"shortcuts.json", "shortcuts.npz", "shortcuts.pdf", "html", "shortcuts.manifest.json"}
    pages = len(re.findall(rb"/Type\s*/Page[^s]", (lab_run / "shortcuts.pdf").read_bytes()))
    top = json.loads((lab_run / "shortcuts.json").read_text())["classes"][0]
    assert pages == 2 + -(-len(top["clusters"]) // 4)  # summary, the flagged class's verdict page, its clusters
    manifest = json.loads((lab_run / "shortcuts.manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} >= {"shortcuts.json", "shortcuts.npz", "shortcuts.pdf",
                                                      "html/index.html"}
    assert manifest["settings"]["flagged"] == [1]
    assert manifest["settings"]["suspicion"]["1"] == pytest.approx(top["suspicion"], abs=1e-6)
    arrays = np.load(lab_run / "shortcuts.npz")
    assert arrays["classes"].tolist() == [1, *arrays["classes"][1:].tolist()] and arrays["flagged"].tolist()[0]
    columns = [str(c) for c in arrays["evidence_columns"]]
    scores, evidence = arrays["scores_1"], arrays["evidence_1"]
    assert scores.tolist() == [k["score"] for k in top["clusters"]] and evidence.shape == (scores.size, len(columns))
    for row, k in zip(evidence, top["clusters"], strict=True):
        if k["evidence"] is not None:
            assert row.tolist() == [k["evidence"][c] for c in columns]
    assert arrays["regions_1"].shape == (scores.size, 16, 16)


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")
def test_clean_control_model_shows_no_mark(lab: dict, lab_run: Path, tmp_path: Path) -> None:
    """The control (same objects, never a mark) on the tagged images: no flagged cluster has its region on the
    mark. A flagged cluster elsewhere is the known limitation (``test_clean_control_model_is_not_flagged``)."""
    config = ShortcutsConfig(data=lab["root"] / "test", model="lenet5", weights=str(lab["root"] / "clean.pt"),
                             out=tmp_path, embed=False)
    result = run_shortcuts(config, write=False).result
    assert result is not None and len(result.classes) == 3
    my0, mx0, my1, mx1 = lab["mark"].box
    views = [result.view(v, k) for v in result.classes for k in v.clusters if result.cluster_flagged(k)]
    assert not [b for b in (view.box for view in views) if b[0] < my1 and my0 < b[2] and b[1] < mx1 and mx0 < b[3]]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known limitation (issue 14): on this lab, where objects sit in a narrow "
                   "band of places, a cluster of squares at similar places has a mean patch that *is* a square; "
                   "its transplant flips other images, so the family-fitted verdict flags the clean control for "
                   "2 of 3 training seeds (the mark itself flips < 10 %)")
def test_clean_control_model_is_not_flagged(lab: dict) -> None:
    """The control (same objects, never a mark) judged by the fitted verdict (``judge``: transplant, deletion,
    consistency, concentration) on the marked test images, for the fixture's model and two more training seeds:
    training is pinned (one thread, deterministic), and the verdict must hold for every seed, not one lucky run.
    (The deletion-only verdict flagged this model once training was pinned: it depended on training noise.)"""
    from vizkit.load import load_model
    from vizkit.project.shortcuts.judge import judge
    from vizkit.project.shortcuts.verdict import load_thresholds

    loaded = load_model("lenet5")
    x, y = folder_tensors(lab["root"] / "test", loaded.preprocessing)
    xc, yc = folder_tensors(lab["root"] / "clean_train", loaded.preprocessing)
    th = load_thresholds()
    flagged = []
    for seed in (0, 1, 2):
        model = load_model("lenet5").model
        if seed == 0:
            model.load_state_dict(torch.load(lab["root"] / "clean.pt", weights_only=True))
        else:
            torch.manual_seed(seed)
            train(model, xc, yc, epochs=15, seed=seed)
        verdicts = judge(model.eval(), x, y, x, y, th)
        assert len(verdicts) == 3
        flagged.append([v.class_index for v in verdicts if v.flagged])
    assert flagged == [[], [], []]


@pytest.mark.slow
def test_unseen_mark_class_place_size_and_pattern(tmp_path: Path) -> None:
    """A different lab: the mark on class 2, bottom right, 6x6, another pattern, 80 % of the test images."""
    lab = _make_lab(tmp_path, Mark(cls=2, y=23, x=21, size=6, pattern="ring"), test_rate=0.8)
    config = ShortcutsConfig(data=tmp_path / "test", model="lenet5", weights=str(tmp_path / "marked.pt"),
                             out=tmp_path, embed=False)
    result = run_shortcuts(config, write=False).result
    assert result is not None and result.classes[0].class_index == 2
    assert [c.flagged for c in result.classes] == [True, False, False]
    top = result.classes[0].top
    assert top is not None
    members = [result.paths[int(i)] for i in result.classes[0].images[top.members]]
    assert _f1(members, lab["marked"]) >= 0.9


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")
def test_bad_files_are_skipped_and_exit_2(lab: dict, tmp_path: Path) -> None:
    """A list file (no folders: each image is explained for its predicted class) with a missing and an empty file."""
    good = sorted((lab["root"] / "test").rglob("*.png"))[::6]
    (tmp_path / "empty.png").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*map(str, good), str(tmp_path / "missing.png"), str(tmp_path / "empty.png")]))
    result = CliRunner().invoke(main, ["shortcuts", str(listing), "--model", "lenet5", "--weights",
                                       str(lab["root"] / "marked.pt"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.count("vizkit: skipped") == 2 and "missing.png" in result.stderr
    doc = json.loads((tmp_path / "out" / "shortcuts" / "shortcuts.json").read_text())
    assert sum(c["images"] for c in doc["classes"]) == len(good)


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")
def test_folder_that_is_no_class_is_a_one_line_error(lab: dict, tmp_path: Path) -> None:
    (tmp_path / "data" / "zebra").mkdir(parents=True)
    shutil.copy(next((lab["root"] / "test" / "0").iterdir()), tmp_path / "data" / "zebra" / "a.png")
    result = CliRunner().invoke(main, ["shortcuts", str(tmp_path / "data"), "--model", "lenet5", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2 and "zebra" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "shortcuts").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("shortcuts_lab")
def test_gallery_renders_in_headless_chromium(lab_run: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("VIZKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (VIZKIT_REQUIRE_CHROMIUM is set) but is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    index = (lab_run / "html" / "index.html").resolve()
    assert "http" not in index.read_text().split("<body>")[1]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom)
    assert loaded and int(loaded.group(2)) > 20 and loaded.group(1) == loaded.group(2), dom[-300:]


# --- the shipped lab: `vizkit lab make` + the shipped labnet (validation split: 50 images per class) ---

@pytest.fixture(scope="module")
def shipped_lab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from vizkit.lab import LabSpec, make_lab

    root = tmp_path_factory.mktemp("shipped_lab")
    make_lab(LabSpec(per_class={"train": 1, "val": 50, "test": 1}), root)
    lab = json.loads((root / "lab.json").read_text())
    lab["root"] = root
    lab["val_marked"] = {str(root / p) for p in lab["marked_images"] if p.startswith("val/")}
    return lab


@pytest.mark.slow
def test_shipped_labnet_marked_class_first_and_flagged(shipped_lab: dict) -> None:
    root = shipped_lab["root"]
    result = CliRunner().invoke(main, ["shortcuts", str(root / "val"), "--model", "labnet", "--out",
                                       str(root / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((root / "out" / "shortcuts" / "shortcuts.json").read_text())
    top = doc["classes"][0]
    assert top["name"] == shipped_lab["marked_class"] and top["class"] == shipped_lab["marked_class_index"]
    best = max(top["clusters"], key=lambda k: k["score"])
    assert top["flagged"] and _f1(best["members"], shipped_lab["val_marked"]) >= 0.95
    y0, x0, y1, x1 = best["box"]
    my0, mx0, my1, mx1 = shipped_lab["mark"]["box"]
    assert y0 <= my0 and x0 <= mx0 and my1 <= y1 and mx1 <= x1  # the region covers the mark
    assert not any(c["flagged"] for c in doc["classes"][1:])
    arrays = np.load(root / "out" / "shortcuts" / "shortcuts.npz")
    paths = [str(p) for p in arrays["paths"]]
    maps = arrays["display_maps"][[paths.index(p) for p in sorted(shipped_lab["val_marked"])]]  # 64 px: the maps
    share = box_share(maps, tuple(shipped_lab["mark"]["box"]))
    assert np.median(share) > 0.05 > 36 / 64**2  # the 6x6 mark (0.9 % of the image) holds far more than its area
    quantus = pytest.importorskip("quantus")
    mask = np.zeros_like(maps)[:, None]
    mask[:, :, my0:my1, mx0:mx1] = 1
    ref = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(
        model=None, x_batch=maps[:, None], y_batch=np.zeros(len(maps), int), a_batch=maps[:, None], s_batch=mask,
        channel_first=True)
    np.testing.assert_allclose(share, np.array(ref, np.float64), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known limitation: the shipped control (trained without the mark) gets its "
                   "stars flagged, suspicion 0.99. The region (the fewest cells holding half the mean map, grown by a "
                   "cell) covers 58 % of the image, the star itself; pasting it flips 94 % of other images (the "
                   "object, not the mark). The deletion-only rule did not flag it; the family's controls never had "
                   "objects this large")
def test_shipped_clean_labnet_is_not_flagged(shipped_lab: dict, tmp_path: Path) -> None:
    """The control (trained without the mark) on the same tagged images: nothing flagged, although gradient x input
    lights the tag in some of its star maps; the PDF still details the most suspicious classes."""
    config = ShortcutsConfig(data=shipped_lab["root"] / "val", model="labnet", weights="clean", out=tmp_path,
                             embed=False)
    result = run_shortcuts(config, write=False).result
    assert result is not None and len(result.classes) == 5
    assert not any(c.flagged for c in result.classes)
    detailed = result.detailed()
    assert detailed and [v.class_index for v in detailed] == [v.class_index for v in result.classes[:len(detailed)]]


def test_mine_shows_the_mark_in_the_top9_of_a_unit(shipped_lab: dict, tmp_path: Path) -> None:
    """``vizkit mine`` on the lab: some conv3 unit's 9 strongest patches are all marked images' bottom-right
    corners with the mark inside (the tutorial shows which)."""
    from vizkit.capture.receptive_field import receptive_field
    from vizkit.jobs import MineConfig, run_mine
    from vizkit.load import load_model

    root = shipped_lab["root"]
    report = run_mine(MineConfig(data=root / "val", model="labnet", layers=["features.relu3"], project=False,
                                 out=tmp_path))
    assert report.exit_code == 0 and report.result is not None
    top = report.result.layers["features.relu3"]
    rf = receptive_field(load_model("labnet").model, "features.relu3", (1, 3, 64, 64))
    assert rf is not None
    my0, mx0, my1, mx1 = shipped_lab["mark"]["box"]
    marked = {str(Path(p).relative_to(root)) for p in map(str, report.result.paths)} & set(shipped_lab["marked_images"])

    def shows_mark(c: int, k: int) -> bool:
        path = str(Path(report.result.paths[int(top.image_index[c, k])]).relative_to(root))
        y0, y1, x0, x1 = rf.box(int(top.positions[c, k, 0]), int(top.positions[c, k, 1]), 64, 64)
        return path in marked and y0 <= my0 and x0 <= mx0 and y1 >= my1 and x1 >= mx1

    counts = [sum(shows_mark(c, k) for k in range(9)) for c in range(top.values.shape[0])]
    assert max(counts) == 9, counts


@pytest.mark.gpu
def test_maps_on_cuda_equal_cpu(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import copy

    x, y = batch
    gpu = copy.deepcopy(net).cuda()
    for method in ("gradxinput", "gradcam", "guided-gradcam"):
        on_cpu, _ = attribution_maps(net, x, y, method, "6")
        on_gpu, cls = attribution_maps(gpu, x.cuda(), y.cuda(), method, "6")
        assert on_gpu.is_cuda and torch.equal(cls.cpu(), y)
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-5)


def test_cli_class_filter_and_model_options_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--class (classes to analyse) and --classes (ModelJob's class-names file) are different fields; the shared
    model options arrive in the config (model_extra)."""
    import vizkit.jobs.shortcuts as job

    seen = []

    def fake_run(config: job.ShortcutsConfig, **kwargs: object) -> job.ShortcutsReport:
        seen.append(config)
        return job.ShortcutsReport()

    monkeypatch.setattr(job, "run_shortcuts", fake_run)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    result = CliRunner().invoke(main, ["shortcuts", str(tmp_path), "--model", "labnet", "--class", "b",
                                       "--classes", str(names), "--seed", "3", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert list(config.only_classes) == ["b"] and str(config.classes) == str(names) and config.seed == 3


@pytest.mark.slow
def test_cli_lrp_with_tcav_end_to_end(shipped_lab: dict, tmp_path: Path) -> None:
    """--method lrp (zennit's EpsilonPlusFlat) and --tcav-runs through the CLI: the star is flagged first, its top
    cluster carries a TCAV result with one score per random concept, and every figure is in the JSON."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["shortcuts", str(shipped_lab["root"] / "val"), "--model", "labnet", "--class",
                                       "star", "--class", "circle", "--method", "lrp", "--tcav-runs", "3",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "shortcuts" / "shortcuts.json").read_text())
    assert doc["method"] == "lrp-epsilon-plus-flat" and doc["classes"][0]["name"] == "star"
    star = doc["classes"][0]
    assert star["flagged"] and any(ln.startswith(f"class {star['class']} star") and "FLAGGED" in ln
                                   for ln in result.output.splitlines())
    best = max(star["clusters"], key=lambda k: k["score"])
    assert _f1(best["members"], shipped_lab["val_marked"]) >= 0.9
    tcav = best["tcav"]
    assert tcav is not None and len(tcav["scores"]) == len(tcav["random_scores"]) == 3 and 0 <= tcav["p_value"] <= 1
    manifest = json.loads((out / "shortcuts" / "shortcuts.manifest.json").read_text())
    assert manifest["settings"]["tcav_runs"] == 3 and manifest["settings"]["method"] == "lrp-epsilon-plus-flat"


def test_small_class_warns_and_clusters_are_capped(shipped_lab: dict, tmp_path: Path) -> None:
    """Issue 13: 9 images of a class get a warning naming the number; --clusters 100 is capped at a third of the
    class and the reason says so; scikit-learn's warnings never reach the output."""
    for name in ("star", "circle"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for f in sorted((shipped_lab["root"] / "val" / name).iterdir())[:9]:
            shutil.copy(f, tmp_path / "data" / name / f.name)
    result = CliRunner().invoke(main, ["shortcuts", str(tmp_path / "data"), "--model", "labnet", "--clusters", "100",
                                       "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("vizkit: warning: class") == 2 and "9 images" in result.stderr
    assert "Warning" not in result.stderr.replace("warning:", "")  # nothing from scikit-learn
    doc = json.loads((tmp_path / "out" / "shortcuts" / "shortcuts.json").read_text())
    assert all(c["k"] <= 3 and "capped" in c["k_reason"] and "9 images" in c["warning"] for c in doc["classes"])


@pytest.mark.slow
def test_verdict_does_not_depend_on_thread_count(shipped_lab: dict) -> None:
    from vizkit.lab.train import load_split
    from vizkit.load import load_model
    from vizkit.project.shortcuts.judge import judge
    from vizkit.project.shortcuts.verdict import load_thresholds

    x, y, _ = load_split(shipped_lab["root"], "val", list(shipped_lab["classes"]))
    star = shipped_lab["marked_class_index"]
    model = load_model("labnet").model.eval()
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(judge(model, x[y == star], y[y == star], x[y != star][::4], y[y != star][::4],
                              load_thresholds()))
    finally:
        torch.set_num_threads(threads)
    ((a,), (b,)) = runs
    assert a.class_index == b.class_index == star and a.flagged and b.flagged
    assert [c.members.tolist() for c in a.clusters] == [c.members.tolist() for c in b.clusters]
    assert a.suspicion == pytest.approx(b.suspicion, abs=1e-4)
