"""Every command's page 1 carries the same provenance block (``vizkit.render.kit.provenance``): model, weights,
sha256, seed, preprocessing, settings and the command, each value as the run recorded it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from test_render import make_layer, make_result
from test_writer import make_gradcam, make_grid, make_maps, texts

from vizkit.capture.filters import filter_stats
from vizkit.load.checkpoints import BY_NAME, CheckpointList
from vizkit.outputs.info import ReportInfo
from vizkit.project.invariance import InvarianceSweep
from vizkit.project.results import EvolveResult, InvarianceResult
from vizkit.project.shortcuts.result import ShortcutsResult
from vizkit.render.kit.pdf import PageMaker
from vizkit.scan.topk import LayerTopK, MineResult

SHA = "0123456789abcdef" * 4
#: Values no page shows by chance: each must come from the provenance block.
INFO = dict(model="probe-net-17", weights="weights/probe-net-17.pth", weights_sha256=SHA, pretrained=False, seed=4242,
            preprocessing={"resize": 37, "interpolation": "lanczos-probe"},
            settings={"layer": "features.3", "probe_option": "probe-value-9"},
            command=["vizkit", "probe-command", "--flag-probe"])


def _info(per_image: bool) -> ReportInfo:
    return ReportInfo(image_path="photos/cat.jpg" if per_image else None, **INFO)  # type: ignore[arg-type]


def _deconv(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.deconv import deconv_page_makers

    return deconv_page_makers(make_result([make_layer("features.3", 2, 8)]), info)


def _gradcam(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.gradcam import gradcam_pages

    return [lambda: gradcam_pages(make_gradcam(), info)[0]]


def _occlusion(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.occlusion import occlusion_pages

    image = make_result([]).image
    return [lambda: occlusion_pages(make_maps(), image, None, info=info)[0]]


def _activations(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.activations import activation_page_makers

    return activation_page_makers([make_grid()], make_result([]).image, info=info)


def _invariance(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.invariance import invariance_page_makers

    deconv = make_result([])
    sweep = InvarianceSweep(deconv.input, ["features.3"], 0, np.zeros((1, 3), np.float32), {"features.3": 1.0})
    return invariance_page_makers(InvarianceResult(sweep, deconv.image, {}, [], []), info)


def _filters(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.filters import filters_page_makers

    return filters_page_makers(filter_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))), info=info)


def _report(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.report import Section, _toc_page

    return [lambda: _toc_page("vizkit report: cat.jpg", "model probe-net-17", [Section("Summary")], [2], info)]


def _mine(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.mine import mine_page_makers

    state = LayerTopK(values=np.ones((2, 1), np.float32), image_index=np.zeros((2, 1), np.int64),
                      positions=np.zeros((2, 1, 2), np.int64), mean=np.ones(2, np.float32),
                      rate=np.ones(2, np.float32))
    return mine_page_makers(MineResult(["a.png"], {"features.3": state}, 1, images_scanned=1), [], info)


def _evolve(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.evolve import evolve_page_makers

    evo = EvolveResult(CheckpointList([Path("epoch_1.pt")], [1], BY_NAME), ["a.png"], [], {}, {}, [], [], {})
    return evolve_page_makers(evo, info)


def _shortcuts(info: ReportInfo) -> list[PageMaker]:
    from vizkit.render.shortcuts import summary_page

    result = ShortcutsResult([], "gradxinput", None, (8, 8), np.zeros(0, np.int64), np.zeros((0, 4, 4)),
                             np.zeros((0, 8, 8)), [])
    return [lambda: summary_page(result, info)]


#: command -> (page makers of its PDF, per-image output): every command with a document in the writer
DOCUMENTS: dict[str, tuple[Callable[[ReportInfo], list[PageMaker]], bool]] = {
    "deconv": (_deconv, True), "gradcam": (_gradcam, True), "occlusion": (_occlusion, True),
    "activations": (_activations, True), "invariance": (_invariance, True), "report": (_report, True),
    "filters": (_filters, False), "mine": (_mine, False), "evolve": (_evolve, False),
    "shortcuts": (_shortcuts, False),
}


@pytest.mark.parametrize("command", sorted(DOCUMENTS))
def test_page_one_carries_the_provenance_block(command: str) -> None:
    makers, per_image = DOCUMENTS[command]
    info = _info(per_image)
    page: Figure = makers(info)[0]()
    text = texts(page)
    assert f"vizkit {command}" in text
    assert "model: probe-net-17" in text
    assert "weights: weights/probe-net-17.pth" in text
    assert "sha256" in text and SHA in text.replace(" ", "")  # a narrow column wraps the hash
    assert "seed: 4242" in text
    assert "resize: 37" in text and "interpolation: lanczos-probe" in text
    assert "probe_option: probe-value-9" in text
    assert "command: vizkit probe-command --flag-probe" in text
    assert "pretrained: NO (random init weights, seed 4242)" in text
    if per_image:
        assert "image: photos/cat.jpg" in text
