"""The mine gallery at scale and mine's dream and per-class views: every unit listed with lazy images, sorting,
finding and class filtering in headless Chromium; dream and per-class pages in the PDF; npz dream keys; the PDF's
size for a realistic configuration scaled down."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import CHROMIUM, FLAGS
from test_writer import texts

from vizkit.outputs.info import ReportInfo
from vizkit.project.mine_projection import TopEntry, UnitTopProjections
from vizkit.project.results import LayerDreams
from vizkit.render.kit.display import PICTURE_DPI, at_shown_size
from vizkit.render.kit.page import A4_PORTRAIT, MARGIN
from vizkit.render.mine import UNITS_PER_PAGE, mine_page_makers, read_dreams, render_mine_pdf, write_mine_outputs
from vizkit.render.mine_classes import MAX_CLASSES, class_rows
from vizkit.render.mine_pages import cell_side
from vizkit.scan.topk import LayerTopK, MineResult

CHANNELS = 120  # more cards than a 800 x 600 window shows: the rest must not load
CLASSES = ["cat", "dog", "emu"]
K = 4
RENDERED = [3, 7, 11]


def _photos(folder: Path, n: int) -> list[str]:
    """n small images with a different flat colour each (so a thumbnail says which image it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.new("RGB", (40, 30), (i * 9 % 256, 255 - i * 5 % 256, i * 31 % 256)).save(path)
        paths.append(str(path))
    return paths


def _result(paths: list[str], k: int = K, per_class: bool = True) -> MineResult:
    """A seeded scan of CHANNELS units over the images, with per-class top K (image i is of class i % 3)."""
    rng = np.random.default_rng(0)
    n, c = len(paths), CHANNELS
    values = -np.sort(-rng.random((c, k)).astype(np.float32), axis=1)
    index = rng.integers(0, n, (c, k))
    rate = rng.integers(0, 5, c).astype(np.float32) / 4  # ties in the rate: broken by channel number
    mean = rng.normal(size=c).astype(np.float32)
    class_values = -np.sort(-rng.random((len(CLASSES), c, k)).astype(np.float32), axis=2)
    class_index = np.stack([rng.integers(0, n // 3, (c, k)) * 3 + j for j in range(len(CLASSES))])
    class_index[1, ::2] = -1  # class "dog" never reached the even channels
    class_values[1, ::2] = -np.inf
    if not per_class:
        layer = LayerTopK(values, index, np.zeros((c, k, 2), np.int64), mean, rate)
        return MineResult(paths, {"conv": layer}, k, None, [], [], n)
    layer = LayerTopK(values, index, np.zeros((c, k, 2), np.int64), mean, rate, class_values, class_index)
    return MineResult(paths, {"conv": layer}, k, list(CLASSES), [i % 3 for i in range(n)], [], n)


def _units(result: MineResult) -> list[UnitTopProjections]:
    rng = np.random.default_rng(1)
    state = result.layers["conv"]
    return [UnitTopProjections("conv", ch, [
        TopEntry(int(state.image_index[ch, r]), result.paths[state.image_index[ch, r]], float(state.values[ch, r]),
                 (0, 0), (0, 24, 0, 24), rng.normal(size=(3, 24, 24)).astype(np.float32),
                 rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for r in range(K)]) for ch in RENDERED]


def _dreams() -> dict[str, LayerDreams]:
    rng = np.random.default_rng(2)
    return {"conv": LayerDreams(np.array(RENDERED), rng.random((len(RENDERED), 3, 16, 16)).astype(np.float32),
                                np.array([2.5, 1.5, 3.5], np.float32))}


def _info() -> ReportInfo:
    return ReportInfo(image_path=None, model="m", weights="none", weights_sha256=None, pretrained=False,
                      preprocessing={"resize": 32}, settings={"data": "data/"}, command="vizkit mine data/")


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> tuple[MineResult, list[UnitTopProjections], Path]:
    root = tmp_path_factory.mktemp("gallery")
    result = _result(_photos(root / "data", 30))
    units = _units(result)
    return result, units, write_mine_outputs(result, units, _info(), root / "out", {}, _dreams())


def _payload(folder: Path) -> dict:
    text = (folder / "html" / "layer00.html").read_text()
    return json.loads(re.search(r'id="units-data">(.*?)</script>', text, re.S).group(1).replace("<\\/", "</"))


def test_layer_page_lists_every_unit_with_its_numbers(mined) -> None:
    result, _, folder = mined
    state = result.layers["conv"]
    units = _payload(folder)["units"]
    assert [u["c"] for u in units] == list(range(CHANNELS))
    np.testing.assert_allclose([u["rate"] for u in units], state.rate, rtol=1e-4)
    np.testing.assert_allclose([u["top"] for u in units], state.values[:, 0], rtol=1e-4)
    assert [u["c"] for u in units if u["page"]] == RENDERED and [u["c"] for u in units if u["dimg"]] == RENDERED
    assert [u["dream"] for u in units if u["dream"] is not None] == [2.5, 1.5, 3.5]
    for u in units:  # every card has a picture on disk: the top patch when rendered, else the top image
        assert (folder / "html" / u["img"]).is_file()
        if u["c"] not in RENDERED:
            top = Image.open(folder / "html" / u["img"]).convert("RGB").getpixel((5, 5))
            want = Image.open(result.paths[state.image_index[u["c"], 0]]).getpixel((5, 5))
            assert np.abs(np.subtract(top, want)).max() <= 8  # JPEG of a flat colour
    dog = (folder / "html" / "layer00-classes" / "c0001.js").read_text()
    entries = json.loads(dog[dog.index("["): dog.rindex(")")])
    assert [e[0] is None for e in entries] == [ch % 2 == 0 for ch in range(CHANNELS)]
    assert entries[1][1] == state.class_image_index[1, 1, 0]


def test_npz_keeps_the_dreams(mined) -> None:
    _, _, folder = mined
    with np.load(folder / "mine.npz") as z:
        dreams = read_dreams({k: z[k] for k in z.files})
    want = _dreams()["conv"]
    np.testing.assert_array_equal(dreams["conv"].channels, want.channels)
    np.testing.assert_array_equal(dreams["conv"].images, want.images)
    np.testing.assert_array_equal(dreams["conv"].scores, want.scores)
    manifest = json.loads((folder / "mine.manifest.json").read_text())
    assert manifest["dream"]["objective"].startswith("channel")


def test_pdf_has_the_dreams_and_a_page_per_class(mined) -> None:
    result, units, folder = mined
    pages = mine_page_makers(result, units, _info(), dreams=_dreams())
    assert len(pages) == 1 + math.ceil(len(units) / UNITS_PER_PAGE) + len(CLASSES)
    unit_page = texts(pages[1]())
    assert unit_page.count("what it wants") == len(RENDERED) and "dream score 3.5" in unit_page
    dog = texts(pages[-2]())
    assert "Class 'dog'" in dog and "3 of 3 rendered units" in dog  # the rendered channels are odd: dog reached all
    state = result.layers["conv"]
    assert [ch for _, ch, _ in class_rows(result, units, 1)] == sorted(RENDERED,
                                                                        key=lambda ch: -state.class_values[1, ch, 0])
    assert all(f"{state.class_values[1, ch, r]:.4g}" in dog for ch in RENDERED for r in range(K))
    pdf = (folder / "mine.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == len(pages)
    assert len(CLASSES) <= MAX_CLASSES


def test_pictures_are_embedded_at_their_shown_size() -> None:
    y, x = np.mgrid[0 : 4 * PICTURE_DPI, 0 : 2 * PICTURE_DPI] / PICTURE_DPI
    photo = np.stack([127 + 120 * np.sin(y + c) * np.cos(x - c) for c in range(3)], axis=2).astype(np.uint8)
    small = at_shown_size(photo, 1.0, 1.0)  # 1 inch tall: PICTURE_DPI pixels, the aspect ratio kept
    assert small.shape == (PICTURE_DPI, PICTURE_DPI // 2, 3) and small.dtype == np.uint8
    box = photo.reshape(PICTURE_DPI, 4, PICTURE_DPI // 2, 4, 3).mean(axis=(1, 3))
    assert np.abs(small.astype(float) - box).max() < 3  # a resampling of the whole picture, not a crop
    tiny = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    assert at_shown_size(tiny, 1.0, 1.0) is tiny  # never blurred up
    signed = np.random.default_rng(2).normal(size=(300, 300)).astype(np.float32)
    out = at_shown_size(signed, 0.5, 0.5)
    assert out.shape == (PICTURE_DPI // 2, PICTURE_DPI // 2) and out.min() >= signed.min() and out.max() <= signed.max()


def _dom(tmp_path: Path, page: Path, fragment: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("VIZKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (VIZKIT_REQUIRE_CHROMIUM is set) but is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,600",
                           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri() + fragment],
                          capture_output=True, text=True, timeout=120).stdout


def _cards(dom: str) -> list[int]:
    return [int(c) for c in re.findall(r'<div class="unit[^"]*" data-channel="(\d+)"', dom)]


@pytest.mark.slow
def test_browsing_in_headless_chromium(mined, tmp_path: Path) -> None:
    result, _, folder = mined
    state = result.layers["conv"]
    page = folder / "html" / "layer00.html"
    dom = _dom(tmp_path, page, "#sort=rate")
    want = sorted(range(CHANNELS), key=lambda ch: (-state.rate[ch], ch))
    assert _cards(dom) == want
    ok, asked = map(int, re.search(r'data-loaded="(\d+)/(\d+)"', dom).groups())
    assert 0 < ok == asked < CHANNELS  # lazy: only what is near the view was requested, and all of it loaded
    dom = _dom(tmp_path, page, f"#sort=dream&find={CHANNELS - 1}")
    assert _cards(dom)[:3] == [11, 3, 7]  # dream scores 3.5, 2.5, 1.5; units without a dream after them
    found = re.search(rf'<div class="unit found" data-channel="{CHANNELS - 1}">.*?</div>', dom, re.S).group(0)
    assert re.search(r'(?<!-)src="', found)  # scrolled into view, so its image was requested
    ok, asked = map(int, re.search(r'data-loaded="(\d+)/(\d+)"', dom).groups())
    assert ok == asked
    dom = _dom(tmp_path, page, "#class=dog&sort=top")
    odd = sorted(range(1, CHANNELS, 2), key=lambda ch: (-float(f"{state.class_values[1, ch, 0]:.5g}"), ch))
    assert _cards(dom) == odd
    first = re.search(rf'data-channel="{odd[0]}">.*?(?<!-)src="([^"]+)"', dom, re.S).group(1)
    assert first == f"img/t{state.class_image_index[1, odd[0], 0]:07d}.jpg"
    assert "no channel 999" in _dom(tmp_path, page, "#find=999")


@pytest.mark.slow
def test_mine_pdf_size_for_a_realistic_configuration_scaled_down(tmp_path: Path) -> None:
    """6 units x 9 as on VGG16's deepest default layer (224 px patches and projections: the receptive field is the
    whole image), of noise, the incompressible worst case: the PDF holds no more than the pixels it shows (the 80 x
    9 figure on real photos is in benchmarks/README.md, bench_mine_pdf.py)."""
    rng = np.random.default_rng(0)
    paths = _photos(tmp_path / "data", 9)
    result = _result(paths, k=9, per_class=False)
    units = [UnitTopProjections("conv", ch, [
        TopEntry(r, paths[r], 1.0 - r / 10, (0, 0), (0, 224, 0, 224),
                 rng.normal(size=(3, 224, 224)).astype(np.float32),
                 rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for r in range(9)]) for ch in range(6)]
    render_mine_pdf(result, units, _info(), tmp_path / "mine.pdf")
    size = (tmp_path / "mine.pdf").stat().st_size
    page_w, page_h = A4_PORTRAIT
    slot = (page_h - 2 * MARGIN - 0.2) / UNITS_PER_PAGE - 0.15
    shown = math.ceil(cell_side(9, page_w - 2 * MARGIN, slot, dream=False) * PICTURE_DPI)
    assert size <= 6 * 18 * shown**2 * 3 + 150e3, (size, shown)  # RGB at the shown size, plus page 1 and text
    assert size < 6 * 18 * 224**2 * 3 / 4, size  # every source pixel: over 4 times more


@pytest.mark.slow
def test_cli_dream_scores_are_each_objective_on_its_stored_image(tmp_path: Path) -> None:
    """``vizkit mine --dream --per-class`` end to end on labnet: the npz's dream of every rendered unit, whose score
    is that channel's mean activation on the stored image (recomputed here with plain hooks); the per-class pages."""
    import torch
    from click.testing import CliRunner
    from vizkit_cli.main import main

    from vizkit.capture.recorder import Recorder
    from vizkit.load import load_model

    rng = np.random.default_rng(0)
    for i in range(6):
        path = tmp_path / "data" / f"c{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["mine", str(tmp_path / "data"), "--model", "labnet", "--layer", "features.relu2",
                                    "--units", "top:3", "-k", "2", "--per-class", "--dream", "--dream-steps", "3",
                                    "--dream-size", "24", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with np.load(out / "mine" / "mine.npz") as z:
        arrays = {k: z[k] for k in z.files}
    dreams = read_dreams(arrays)["features.relu2"]
    np.testing.assert_array_equal(dreams.channels, arrays["features.relu2/proj/channels"])
    assert dreams.images.shape == (3, 3, 24, 24) and dreams.images.min() >= 0 and dreams.images.max() <= 1
    loaded = load_model("labnet", None)
    mean = torch.tensor(loaded.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad(), Recorder(loaded.model.eval(), ["features.relu2"], stop=True) as rec:
        rec.run((torch.from_numpy(dreams.images) - mean) / std)
    acts = rec.outputs["features.relu2"]
    want = acts[torch.arange(3), torch.from_numpy(dreams.channels)].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(dreams.scores, want, rtol=1e-4, atol=1e-5)
    manifest = json.loads((out / "mine" / "mine.manifest.json").read_text())
    assert manifest["dream"]["steps"] == 3 and manifest["dream"]["size"] == 24
    pdf = (out / "mine" / "mine.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1 + 1 + 2  # summary, 3 units, 2 classes
    assert (out / "mine" / "html" / "layer00-classes" / "c0001.js").is_file()


def test_dream_units_fall_back_to_the_input_size_and_leave_the_model_as_it_was() -> None:
    """A Linear unit after a flatten needs the model's input size: its dreams are made at that size (the score is
    the unit on the image resized to it), a conv unit's at the canvas size; hooks, flags and state as they were."""
    import torch
    from torch import nn

    from vizkit.jobs.mine_dream import dream_units, mine_dream_settings, runs_at
    from vizkit.load.preprocessing import Preprocessing
    from vizkit.testing.model_state import flags, hook_count, state_fingerprint

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5)).train()
    prep = Preprocessing(16, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    before, state = flags(model), state_fingerprint(model)
    assert runs_at(model, "1", 12) and not runs_at(model, "3", 12) and runs_at(model, "3", 16)
    dreams = dream_units(model, prep, [("1", 2), ("3", 4), ("3", 1)], mine_dream_settings(steps=2, size=12))
    assert list(dreams["3"].channels) == [4, 1] and dreams["3"].images.shape == (2, 3, 12, 12)
    x = torch.nn.functional.interpolate(torch.from_numpy(dreams["3"].images), size=(16, 16), mode="bilinear",
                                        antialias=True)
    with torch.no_grad():
        want = model.eval()((x - 0.5) / 0.25)[torch.arange(2), torch.tensor([4, 1])]
    model.train()
    np.testing.assert_allclose(dreams["3"].scores, want.numpy(), rtol=1e-4, atol=1e-5)
    assert hook_count(model) == 0 and all(torch.equal(state[k], v) for k, v in state_fingerprint(model).items())
    after = flags(model)
    assert after[0] == before[0] and after[1] == before[1]


def test_dream_progress_counts_units_as_their_batches_finish() -> None:
    """On the one reporter: units done / total, a batch counted when its optimisation ends, the step under way in
    the detail; one summary line at the end."""
    import io
    from dataclasses import replace

    import torch
    from torch import nn

    from vizkit.jobs.mine_dream import dream_units, mine_dream_settings
    from vizkit.load.preprocessing import Preprocessing
    from vizkit.outputs.progress import Progress, reporting

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
    prep = Preprocessing(16, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    stream = io.StringIO()
    steps: list[tuple[int, int]] = []
    settings = replace(mine_dream_settings(steps=2, size=12), batch_size=2)
    with reporting(Progress(stream, live=True, interval=0.0)):
        dream_units(model, prep, [("1", 0), ("1", 1), ("1", 2), ("2", 4)], settings,
                    progress=lambda done, total: steps.append((done, total)))
    drawn = [part for part in stream.getvalue().split("\r\x1b[K") if part]
    counts = [re.match(r"dream: (\d+)/4 units", part) for part in drawn[:-1]]
    assert all(counts) and [int(m.group(1)) for m in counts if m] == [0, 2, 2, 3, 3, 4]
    assert "1 step 2/2" in drawn[1] and drawn[-1].startswith("dream: 4 units in ")
    assert steps == [(n, 6) for n in range(1, 7)]  # the caller's callback: optimisation steps of every layer
