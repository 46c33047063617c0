"""`vizkit mine` outputs: mine.npz keys and packed projections, mine.pdf pages, the offline gallery in Chromium."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mine_helpers import PREP, TensorImages, brute_force_result, random_images, small_vgg
from test_report import CHROMIUM, FLAGS  # the report gallery's browser helper: same flags, same skip rule
from test_writer import texts

from vizkit.outputs.info import ReportInfo
from vizkit.project.mine_projection import UnitTopProjections, project_units, select_units
from vizkit.render import mine as mine_module
from vizkit.render.kit.provenance import RANDOM_INIT_NOTE
from vizkit.render.mine import UNITS_PER_PAGE, grid_shape, mine_page_makers, read_projections, write_mine_outputs
from vizkit.render.mine_html import histogram_svg
from vizkit.scan.topk import MineResult

LAYERS = ["5", "10"]


def _info() -> ReportInfo:
    return ReportInfo(image_path=None, model="small-vgg", weights="random init", weights_sha256=None,
                      pretrained=False, preprocessing=PREP.to_dict(),
                      settings={"data": "data/", "layers": LAYERS, "top_k": 4, "units": "top:5"},
                      command=["vizkit", "mine", "data/"], seed=0)


@pytest.fixture(scope="module")
def mined() -> tuple[MineResult, list[UnitTopProjections]]:
    model = small_vgg()
    images: list = random_images(7)
    images[2] = None  # an unreadable file: skipped in the scan, listed in the outputs
    result = brute_force_result(model, images, LAYERS, k=4)
    units = []
    for layer in LAYERS:
        units += project_units(model, result, TensorImages(images), layer, select_units(result, layer, "top:5"))
    return result, units


@pytest.fixture(scope="module")
def mine_dir(mined: tuple[MineResult, list[UnitTopProjections]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    (out / "mine").mkdir()
    (out / "mine" / "checkpoint.pt").write_bytes(b"scan state")  # an earlier checkpoint stays
    result, units = mined
    return write_mine_outputs(result, units, _info(), out, {"scan": 1.0, "project": 2.0})


def test_npz_has_exactly_the_scan_keys_plus_projection_keys(mine_dir: Path, mined) -> None:
    result, units = mined
    with np.load(mine_dir / "mine.npz") as z:
        arrays = {k: z[k] for k in z.files}
    proj = {f"{layer}/proj/{name}" for layer in LAYERS for name in ("channels", "boxes", "offsets", "scale", "data")}
    assert set(arrays) == set(result.to_arrays()) | proj
    assert list(arrays["paths"]) == result.paths
    for layer in LAYERS:
        assert arrays[f"{layer}/values"].dtype == np.float32 and arrays[f"{layer}/image_index"].dtype == np.int64
        np.testing.assert_array_equal(arrays[f"{layer}/image_index"], result.layers[layer].image_index)
        decoded = read_projections(arrays, layer)
        rendered = [u for u in units if u.layer == layer]
        assert list(decoded) == [u.channel for u in rendered]
        for unit in rendered:
            assert len(decoded[unit.channel]) == len(unit.entries)
            for (box, p), entry in zip(decoded[unit.channel], unit.entries, strict=True):
                assert box == entry.box and p.shape == entry.projection.shape
                peak = np.abs(entry.projection).max()
                assert np.abs(p - entry.projection).max() <= peak / 254 * 1.0001  # int8: half a step of peak/127


def test_pdf_pages_and_manifest_written_last(mine_dir: Path, mined) -> None:
    _, units = mined
    pdf = (mine_dir / "mine.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1 + math.ceil(len(units) / UNITS_PER_PAGE)
    manifest = json.loads((mine_dir / "mine.manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert {"mine.npz", "mine.pdf", "html/index.html"} <= listed and "checkpoint.pt" not in listed
    assert manifest["dataset"]["skipped"] == [{"path": "data/img002.png", "reason": "unreadable for the test"}]
    assert manifest["dataset"]["scanned"] == 6 and manifest["rendered_units"]["5"] == [u.channel for u in units
                                                                                       if u.layer == "5"]
    assert (mine_dir / "checkpoint.pt").read_bytes() == b"scan state"
    assert not [p for p in mine_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_gallery_links_resolve_and_nothing_is_remote(mine_dir: Path, mined) -> None:
    _, units = mined
    html_dir = mine_dir / "html"
    pages = sorted(html_dir.glob("*.html"))
    assert len(pages) == 1 + len(LAYERS) + len(units)
    for page in pages:
        text = page.read_text()
        assert "http:" not in text and "https:" not in text and "//" not in re.sub(r"<!--.*?-->", "", text)
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', text):
            assert (html_dir / ref).is_file(), (page.name, ref)
    unit = next(u for u in units if u.layer == "10")
    text = (html_dir / f"layer01-unit{unit.channel:05d}.html").read_text()
    assert text.count("<img") == 2 * len(unit.entries) and "<svg" in text
    assert all(e.path in text for e in unit.entries) and "data/img002.png" in (html_dir / "index.html").read_text()


def test_page_one_is_the_provenance_block_with_each_note_once(mined) -> None:
    result, units = mined
    note = "a note of this scan"
    page = texts(mine_page_makers(result, units, _info(), [note])[0]())
    assert page.count(RANDOM_INIT_NOTE) == 1 and page.count(note) == 1
    assert "pretrained: NO (random init weights, seed 0)" in page and "command: vizkit mine data/" in page
    own = ReportInfo(image_path=None, model="small-vgg", weights="mine.pth", weights_sha256="ab" * 32,
                     pretrained=None, preprocessing=PREP.to_dict(), settings={"data": "data/"}, command="vizkit mine")
    page = texts(mine_page_makers(result, units, own)[0]())  # your own weights file: unknown, not random
    assert RANDOM_INIT_NOTE not in page and "not verified" in page and "weights sha256: abab" in page


def test_histogram_counts_every_top_value() -> None:
    svg = histogram_svg(np.array([3.0, 2.0, 2.0, 1.0, -np.inf]), mean=0.5)
    counts = [int(c) for c in re.findall(r"<title>(\d+) in", svg)]
    assert sum(counts) == 4 and "dataset mean 0.5" in svg


def test_grid_shape_is_near_square() -> None:
    assert [grid_shape(k) for k in (1, 2, 4, 5, 9, 10, 16)] == [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4),
                                                                  (4, 4)]


def test_failure_while_writing_leaves_no_npz(mined, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, units = mined

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(mine_module, "render_mine_pdf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mine_outputs(result, units, _info(), tmp_path, {})
    assert list(tmp_path.iterdir()) == []


def test_no_projections_writes_the_scan_only(mined, tmp_path: Path) -> None:
    result, _ = mined
    folder = write_mine_outputs(result, [], _info(), tmp_path, {})
    with np.load(folder / "mine.npz") as z:
        assert set(z.files) == set(result.to_arrays())
    assert (folder / "html" / "index.html").is_file()


def test_gallery_renders_in_headless_chromium(mine_dir: Path, mined, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("VIZKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (VIZKIT_REQUIRE_CHROMIUM is set) but is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    _, units = mined
    unit = units[-1]
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    for name in ("index.html", "layer01.html", f"layer01-unit{unit.channel:05d}.html"):
        page = (mine_dir / "html" / name).resolve()
        dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom)
        assert loaded, f"{name}: the load script did not run"
        assert loaded.group(1) == loaded.group(2), (name, loaded.group(0))
        if name != "index.html":
            assert int(loaded.group(2)) > 0
    shot = tmp_path / "shot.png"
    page = (mine_dir / "html" / f"layer01-unit{unit.channel:05d}.html").resolve()
    subprocess.run([*common, "--window-size=1000,1000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10, "screenshot is blank"
