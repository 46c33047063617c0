"""The one writer and the one provenance block: notes said once, what is known about the weights, pages that
paginate and do not overlap, every command's files written through ``write_outputs``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_render import make_layer, make_result

from vizkit.capture.activations import ActivationGrid
from vizkit.load.checkpoints import BY_NAME, CheckpointList
from vizkit.outputs.info import ReportInfo
from vizkit.project.invariance import InvarianceSweep
from vizkit.project.occlusion import OcclusionMaps
from vizkit.project.results import (
    ActivationsResult,
    EvolveResult,
    FiltersResult,
    GradCamResult,
    InvarianceResult,
    OcclusionResult,
    Prediction,
    ReportResult,
)
from vizkit.render.activations import activation_page_makers
from vizkit.render.deconv import deconv_page_makers
from vizkit.render.deconv_pages import HEADER_H, layer_page_count, layer_page_makers, units_per_page
from vizkit.render.evolve import evolve_page_makers
from vizkit.render.gradcam import gradcam_pages, target_label
from vizkit.render.invariance import invariance_page_makers
from vizkit.render.kit.provenance import RANDOM_INIT_NOTE, page_notes, training_line
from vizkit.render.occlusion import occlusion_pages
from vizkit.render.writer import write_outputs

H = W = 32


def texts(fig: Figure) -> str:
    """Every string drawn on a page (figure texts, axes titles and texts), whitespace-normalised, so a note that
    was wrapped over several lines reads as one."""
    found = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        found += [ax.get_title(loc) for loc in ("left", "center", "right")] + [t.get_text() for t in ax.texts]
    return " ".join(" ".join(found).split())


def make_info(pretrained: bool | None = False, **kw: object) -> ReportInfo:
    return ReportInfo(image_path="photos/cat.jpg", model="m", weights="none (random init)" if not pretrained
                      else "w.pth", weights_sha256=None, pretrained=pretrained, preprocessing={"resize": 32},
                      settings={"layer": "features.3"}, command="vizkit x cat.jpg", **kw)  # type: ignore[arg-type]


def make_gradcam(notes: list[str] | None = None, class_names: list[str] | None = None) -> GradCamResult:
    rng = np.random.default_rng(0)
    return GradCamResult(input=rng.normal(size=(1, 3, H, W)).astype(np.float32),
                         image=rng.integers(0, 255, (H, W, 3), dtype=np.uint8), layer="features.3",
                         targets=np.array([9]), class_names=class_names or ["class 9"], scores=np.array([0.3]),
                         cam_raw=rng.random((1, 4, 4)).astype(np.float32), cam=rng.random((1, H, W)),
                         guided_backprop=rng.normal(size=(1, 3, H, W)), guided_gradcam=rng.normal(size=(1, 3, H, W)),
                         predictions=[Prediction(9, "class 9", 0.3)], notes=notes or [])


def make_maps(probability: np.ndarray | None = None) -> OcclusionMaps:
    rng = np.random.default_rng(1)
    probability = rng.random((5, 5)).astype(np.float32) if probability is None else probability
    return OcclusionMaps(input=rng.normal(size=(1, 3, H, W)).astype(np.float32), layer="features.3", channel=4,
                         position=(2, 3), target=1, window=(8, 8), stride=(6, 6), fill=0.0,
                         activity=rng.random((5, 5)).astype(np.float32), probability=probability,
                         label=rng.integers(0, 3, (5, 5)), projection=rng.normal(size=(3, H, W)).astype(np.float32),
                         base_activity=3.0, base_probability=0.5, base_label=1,
                         logits=rng.normal(size=(1, 3)).astype(np.float32))


def make_grid(layer: str = "features.3", n: int = 4) -> ActivationGrid:
    rng = np.random.default_rng(2)
    maps = rng.random((n, 8, 8)).astype(np.float32)
    return ActivationGrid(layer, np.arange(n), maps, maps.max(axis=(1, 2)), maps.mean(axis=(1, 2)), n, (0.0, 1.0))


# ---------------------------------------------------------------- notes: one owner, said once

def first_pages(info: ReportInfo, job_note: str) -> dict[str, str]:
    """Page 1 of every per-image PDF, as text, each result carrying ``job_note``."""
    deconv = make_result([make_layer("features.3", 2, 8)])
    deconv.notes = [job_note]
    occ = OcclusionResult(make_maps(), deconv.image, [], None, [job_note], None)
    acts = ActivationsResult(deconv.input, deconv.image, [make_grid()], notes=[job_note])
    sweep = InvarianceSweep(deconv.input, ["features.3"], 0, np.zeros((1, 3), np.float32), {"features.3": 1.0})
    inv = InvarianceResult(sweep, deconv.image, {}, [], [job_note])
    evo = EvolveResult(CheckpointList([Path("epoch_1.pt")], [1], BY_NAME), ["a.png"], [], {}, {}, [], [], {},
                       notes=[job_note])
    return {
        "deconv": texts(deconv_page_makers(deconv, info)[0]()),
        "gradcam": texts(gradcam_pages(make_gradcam([job_note]), info)[0]),
        "occlusion": texts(occlusion_pages(occ.maps, occ.image, None, info=info, notes=occ.notes)[0]),
        "activations": texts(activation_page_makers(acts.grids, acts.image, info=info, notes=acts.notes)[0]()),
        "invariance": texts(invariance_page_makers(inv, info)[0]()),
        "evolve": texts(evolve_page_makers(evo, info)[0]()),
    }


def test_random_init_warning_is_said_exactly_once_on_every_first_page() -> None:
    job_note = "the layer has no max-pool before it"
    for command, page in first_pages(make_info(pretrained=False, seed=7), job_note).items():
        assert page.count(RANDOM_INIT_NOTE) == 1, command
        assert page.count("random init weights: the") == 1, command  # no second phrasing of the warning
        assert page.count(job_note) == 1, command  # the command's own note too, once
        assert "pretrained: NO (random init weights, seed 7)" in page, command
    for command, page in first_pages(make_info(pretrained=True, checksum_match=True), job_note).items():
        assert RANDOM_INIT_NOTE not in page and page.count(job_note) == 1, command
        assert "pretrained: yes" in page, command


def test_page_notes_drop_a_second_random_init_warning_and_duplicates() -> None:
    info = make_info(pretrained=False, notes=["run note"])
    notes = page_notes(info, ["random init weights (not pretrained): old wording", "a", "a"], ["run note"])
    assert notes == [RANDOM_INIT_NOTE, "run note", "a"]
    assert page_notes(make_info(pretrained=True), ["a"]) == ["a"]


@pytest.mark.parametrize(("pretrained", "match", "expected"), [
    (False, None, "pretrained: NO"), (True, True, "pretrained: yes"), (True, False, "does NOT match"),
    (True, None, "published weights"), (None, None, "not verified")])
def test_pretrained_yes_only_when_the_checksum_says_so(pretrained: bool | None, match: bool | None,
                                                       expected: str) -> None:
    # yes: only a file matching its published checksum. Weights the loader resolved by a published name (shipped with
    # vizkit, a registry's cache) say so but are not verified; a file of unknown origin is "not verified"
    line, _ = training_line(make_info(pretrained=pretrained, checksum_match=match))  # type: ignore[arg-type]
    assert expected in line and (("yes" in line) == (pretrained is True and match is True))


def test_manifest_records_seed_and_checksum_only_when_known(tmp_path: Path) -> None:
    from vizkit.outputs.manifest import manifest_content

    known = manifest_content(tmp_path, make_info(pretrained=False, seed=3, checksum_match=False), {})
    assert known["seed"] == 3 and known["weights"]["checksum_match"] is False
    unknown = manifest_content(tmp_path, make_info(pretrained=False), {})
    assert "seed" not in unknown and "checksum_match" not in unknown["weights"]


def test_target_title_names_a_class_once() -> None:
    assert target_label(9, "class 9") == "class 9"
    assert target_label(281, "tabby") == "class 281 tabby"
    page = texts(gradcam_pages(make_gradcam(), make_info())[0])
    assert "class 9 class 9" not in page and "target 1: class 9" in page


# ---------------------------------------------------------------- layout defects

def _extents(fig: Figure, items: list) -> list:
    renderer = FigureCanvasAgg(fig).get_renderer()
    return [t.get_window_extent(renderer) for t in items if t.get_text()]


def _overlaps(boxes: list) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1) if a.overlaps(b)]


@pytest.mark.parametrize("k", [9, 32, 64])
def test_large_top_k_paginates_without_overlap_or_loss(k: int) -> None:
    result = make_result([make_layer("features.3", k, 8, seed=1)])
    lp = result.layers[0]
    makers = layer_page_makers(lp, result.image)
    assert len(makers) == layer_page_count(lp) == -(-k // units_per_page())
    shown = []
    for make in makers:
        fig = make()
        labels = [t for t in fig.texts if t.get_text().startswith("#")]
        shown += [t.get_text().split()[0] for t in labels]
        headers = [t for t in fig.texts if t.get_text() in ("projection (box)", "image patch", "activation map")]
        assert headers and not _overlaps(_extents(fig, headers))  # column headers side by side, apart
        assert not _overlaps(_extents(fig, labels))
    assert shown == [f"#{i + 1}" for i in range(k)]  # every unit, in rank order, none cut
    assert HEADER_H > 0
    summary = texts(deconv_page_makers(result, make_info())[0]())
    assert "features.3" in summary


def test_occlusion_titles_and_colour_bars_do_not_overlap_when_probabilities_are_flat() -> None:
    flat = (0.93 + 1e-7 * np.random.default_rng(3).random((5, 5))).astype(np.float32)
    fig = occlusion_pages(make_maps(flat), np.zeros((H, W, 3), np.uint8), None, info=make_info(),
                          name="cat.jpg")[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    titles = [ax.title for ax in fig.axes] + [ax._left_title for ax in fig.axes]
    bars = [t for ax in fig.axes for t in [*ax.get_yticklabels(), ax.yaxis.get_offset_text()]]
    boxes = _extents(fig, titles) + _extents(fig, bars)
    assert not _overlaps(boxes)
    assert all(not ax.yaxis.get_offset_text().get_text() for ax in fig.axes)  # no "1e-7 + 0.93" above a bar
    assert "vizkit occlusion: cat.jpg" in texts(fig)


def test_report_occlusion_page_is_titled_with_the_file_name() -> None:
    import torch

    from vizkit.capture.filters import filter_stats
    from vizkit.render.report import report_sections

    deconv = make_result([make_layer("features.3", 2, 8)])
    occ = OcclusionResult(make_maps(), deconv.image, [], None, [], None)
    stats = filter_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)))
    result = ReportResult(deconv, [make_grid()], make_gradcam(), occ, FiltersResult(stats, ["0"]))
    sections = {s.title: s for s in report_sections(result, make_info())}
    assert "vizkit occlusion: cat.jpg" in texts(sections["Occlusion"].pages[0]())
    summary = texts(sections["Summary"].pages[0]())
    assert summary.count(RANDOM_INIT_NOTE) == 1


# ---------------------------------------------------------------- one writer for every command

def test_every_result_type_is_written_by_the_one_writer(tmp_path: Path) -> None:
    import torch

    from vizkit.capture.filters import filter_stats

    deconv = make_result([make_layer("features.3", 2, 8)])
    deconv.switches = {"features.2": np.arange(16, dtype=np.int64).reshape(1, 1, 4, 4)}
    info = make_info()
    expected = {
        "deconv": (deconv, {"deconv.npz", "deconv.pdf", "manifest.json"}),
        "gradcam": (make_gradcam(), {"gradcam.npz", "gradcam.pdf", "gradcam.manifest.json"}),
        "activations": (ActivationsResult(deconv.input, deconv.image, [make_grid()]),
                        {"activations.npz", "activations.pdf", "activations.manifest.json"}),
        "occlusion": (OcclusionResult(make_maps(), deconv.image, [], None),
                      {"occlusion.npz", "occlusion.pdf", "occlusion.manifest.json"}),
    }
    for stem, (result, files) in expected.items():
        folder = write_outputs(result, info, tmp_path, stem, {"project": 1.0})
        assert {p.name for p in folder.iterdir()} == files, stem
        manifest = json.loads((folder / sorted(f for f in files if f.endswith("manifest.json"))[0]).read_text())
        assert {f["path"] for f in manifest["files"]} == {f for f in files if not f.endswith("manifest.json")}
        assert manifest["timings"]["project"] == 1.0 and manifest["timings"]["render"] > 0
    with np.load(tmp_path / "deconv" / "deconv.npz") as npz:
        assert np.array_equal(npz["switches/features.2"], deconv.switches["features.2"])
    stats = filter_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)))
    folder = write_outputs(FiltersResult(stats, ["0"]), make_info(), tmp_path)
    assert folder == tmp_path / "filters" and (folder / "filters.manifest.json").exists()
    with pytest.raises(TypeError, match="no writer"):
        write_outputs(object(), info, tmp_path, "x")  # type: ignore[arg-type]
