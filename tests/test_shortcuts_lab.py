"""vizkit shortcuts on the shipped lab (`vizkit lab make` + the shipped labnet and its control): the verdict, the
CLI with LRP and TCAV, small classes, thread-count independence, and `vizkit mine` finding the mark."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from vizkit_cli.main import main

from vizkit.jobs.shortcuts import ShortcutsConfig, run_shortcuts
from vizkit.project.shortcuts.result import box_share


def _f1(members: list[str], marked: set[str]) -> float:
    hit = len(set(members) & marked)
    return 2 * hit / (len(members) + len(marked))


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
                   "stars flagged, suspicion 1.0. The region (the fewest cells holding half the mean map, grown by a "
                   "cell) covers 55 % of the image, the star itself; pasting it flips 86 % of other images (the "
                   "object, not the mark). The deletion-only rule did not flag it; no control of the lab family "
                   "(clean or with an ignored mark) has an object cluster that strong")
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


@pytest.mark.slow
def test_cli_lrp_with_tcav_end_to_end(shipped_lab: dict, tmp_path: Path) -> None:
    """--method lrp (zennit's EpsilonPlusFlat) and --tcav-runs through the CLI: the star ranks first of the two
    classes asked for, its top cluster is tagged stars and carries a TCAV result with one score per random concept.
    (LRP's own fitted thresholds do not flag it: its figures on this lab are weaker than gradient x input's, the
    default's; see benchmarks/README.md.)"""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["shortcuts", str(shipped_lab["root"] / "val"), "--model", "labnet", "--class",
                                       "star", "--class", "circle", "--method", "lrp", "--tcav-runs", "3",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "shortcuts" / "shortcuts.json").read_text())
    assert doc["method"] == "lrp-epsilon-plus-flat" and doc["classes"][0]["name"] == "star"
    star = doc["classes"][0]
    assert doc["verdict"]["fitted_method"] == "lrp-epsilon-plus-flat"  # LRP's own thresholds, not the default's
    assert any(ln.startswith(f"class {star['class']} star") for ln in result.output.splitlines())
    best = max(star["clusters"], key=lambda k: k["score"])
    tagged = len(set(best["members"]) & shipped_lab["val_marked"]) / len(best["members"])
    assert tagged >= 0.9, tagged  # LRP's maps cut the tagged stars into more clusters: precision, not F1
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


@pytest.mark.gpu
def test_job_on_cuda_gives_the_cpu_verdict(shipped_lab: dict, tmp_path: Path) -> None:
    """Transplant, deletion and TCAV move the class's images to the model's device."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    runs = []
    for device in ("cpu", "cuda"):
        config = ShortcutsConfig(data=shipped_lab["root"] / "val", model="labnet", out=tmp_path, embed=False,
                                 only_classes=["star", "circle"], device=device, tcav_runs=2)
        result = run_shortcuts(config, write=False).result
        assert result is not None
        runs.append(result)
    cpu, gpu = runs
    assert [v.class_index for v in cpu.classes] == [v.class_index for v in gpu.classes]
    assert [v.flagged for v in cpu.classes] == [v.flagged for v in gpu.classes]
    np.testing.assert_allclose([v.suspicion for v in cpu.classes], [v.suspicion for v in gpu.classes], atol=1e-3)
    assert all(v.top is None or v.top.tcav is not None for v in gpu.detailed())
