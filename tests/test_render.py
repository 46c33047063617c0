"""render/: the per-image folder of `vizkit deconv` (npz, PDF, manifest) and its atomic writing."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import vizkit.render.deconv as deconv_module
import vizkit.render.writer as writer_module
from vizkit.errors import UserInputError
from vizkit.outputs import ReportInfo, atomic_dir, write_manifest
from vizkit.project.results import AuditEntry, DeconvResult, LayerProjections, Prediction, UnitProjection
from vizkit.render import normalise_projection, render_deconv_pdf, save_deconv_npz, write_deconv_outputs
from vizkit.render.deconv import summary_notes
from vizkit.render.deconv_pages import _unit_label, layer_title, render_layer_page
from vizkit.render.kit.provenance import RANDOM_INIT_NOTE

H = W = 32


def make_layer(name: str, k: int, grid: int, channels: int = 3, mode: str = "max", seed: int = 0,
               zero_unit: int | None = None) -> LayerProjections:
    rng = np.random.default_rng(seed)
    units = []
    for i in range(k):
        proj = rng.normal(scale=1e-6, size=(channels, H, W)).astype(np.float32)
        if i == zero_unit:
            proj[:] = 0
        box = (2 * i % H, min(H, 2 * i % H + 9), 0, 9) if mode == "max" else None
        units.append(UnitProjection(channel=10 * i + 1, position=(i % grid, (2 * i) % grid),
                                    activation=float(5.0 - 0.25 * i), projection=proj, box=box))
    maps = rng.random((k, grid, grid)).astype(np.float32)
    return LayerProjections(name, mode, units, maps, image_dependent=mode == "max", note="")


def make_result(layers: list[LayerProjections], channels: int = 3) -> DeconvResult:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    return DeconvResult(
        input=rng.normal(size=(1, channels, H, W)).astype(np.float32),
        image=image,
        layers=layers,
        predictions=[Prediction(i, f"class {i}", p) for i, p in enumerate([0.5, 0.2, 0.1, 0.05, 0.01, 0.001])],
        audit=[AuditEntry("relu", "deconvnet relu(grad)", 7), AuditEntry("max_pool2d", "switches, scatter-add", 2)],
        notes=["no max-pool before this layer: reconstructions do not depend on the image beyond which units "
               "fire; see guided backprop"],
    )


@pytest.fixture
def result() -> DeconvResult:
    return make_result([make_layer("features.3", 3, 8, seed=2, zero_unit=1),
                        make_layer("features.29", 3, 4, mode="map", seed=3)])


@pytest.fixture
def info() -> ReportInfo:
    return ReportInfo(image_path="photos/cat.jpg", model="vgg16", weights="random init", weights_sha256=None,
                      pretrained=False, preprocessing={"resize": 32, "mean": (0.5, 0.5, 0.5), "std": [0.5] * 3},
                      settings={"layers": ["features.3", "features.29"], "top_k": 3, "mode": "max",
                                "device": "cpu"},
                      command=["vizkit", "deconv", "photos/cat.jpg", "--top-k", "3"])


def pdf_page_count(path: Path) -> int:
    """Pages counted three ways from the file's uncompressed object dictionaries; they must agree."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    assert b"%%EOF" in data[-64:]
    page_objects = len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", data))
    (count,) = re.findall(rb"/Type\s*/Pages\b.*?/Count\s+(\d+)", data, flags=re.S)
    (kids,) = re.findall(rb"/Kids\s*\[([^\]]*)\]", data)
    assert page_objects == int(count) == len(re.findall(rb"\d+\s+\d+\s+R", kids))
    if shutil.which("pdfinfo"):  # independent parser when poppler is installed
        out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert int(re.search(r"^Pages:\s+(\d+)", out, flags=re.M).group(1)) == page_objects
    return page_objects


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- npz

def test_npz_has_exactly_the_specified_keys_and_round_trips_bit_exact(result, tmp_path):
    path = tmp_path / "deconv.npz"
    save_deconv_npz(result, path)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    expected = {"input"} | {f"{layer}/{name}" for layer in ("features.3", "features.29")
                            for name in ("channels", "positions", "activations", "projections")}
    assert set(arrays) == expected
    assert arrays["input"].dtype == np.float32 and arrays["input"].tobytes() == result.input.tobytes()
    for lp in result.layers:
        k = len(lp.units)
        got = {name: arrays[f"{lp.layer}/{name}"] for name in ("channels", "positions", "activations", "projections")}
        assert got["channels"].dtype == np.int64 and got["channels"].shape == (k,)
        assert got["positions"].dtype == np.int64 and got["positions"].shape == (k, 2)
        assert got["activations"].dtype == np.float32 and got["activations"].shape == (k,)
        assert got["projections"].dtype == np.float32 and got["projections"].shape == (k, 3, H, W)
        assert got["channels"].tolist() == [u.channel for u in lp.units]
        assert got["positions"].tolist() == [list(u.position) for u in lp.units]
        assert got["activations"].tolist() == [np.float32(u.activation) for u in lp.units]
        for i, u in enumerate(lp.units):
            assert got["projections"][i].tobytes() == u.projection.tobytes()  # raw, not normalised


def test_npz_is_compressed_and_keeps_its_name(result, tmp_path):
    path = tmp_path / "arrays.bin"
    save_deconv_npz(result, path)
    assert path.exists() and not (tmp_path / "arrays.bin.npz").exists()
    import zipfile

    with zipfile.ZipFile(path) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}


def test_npz_rejects_inconsistent_results(result, tmp_path):
    result.layers[0].units[0].projection = np.zeros((3, H, W + 1), np.float32)
    with pytest.raises(ValueError, match=r"features.3.*does not match"):
        save_deconv_npz(result, tmp_path / "a.npz")
    dup = make_result([make_layer("conv1", 1, 4), make_layer("conv1", 1, 4)])
    with pytest.raises(ValueError, match="twice"):
        save_deconv_npz(dup, tmp_path / "b.npz")


# ---------------------------------------------------------------- normalise_projection

def test_normalise_zero_projection_is_flat_grey_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalise_projection(np.zeros((3, 5, 7), np.float32))
    assert out.shape == (5, 7, 3) and out.dtype == np.float32
    assert np.all(out == 0.5)


def test_normalise_sign_symmetry_and_extremes():
    p = np.random.default_rng(0).normal(scale=1e-9, size=(3, 6, 6)).astype(np.float32)  # tiny, like real ones
    a, b = normalise_projection(p), normalise_projection(-p)
    np.testing.assert_allclose(a + b, 1.0, atol=1e-6)
    assert a.min() >= 0 and a.max() <= 1
    c, y, x = np.unravel_index(np.abs(p).argmax(), p.shape)
    assert a[y, x, c] in (0.0, 1.0)
    assert a[y, x, c] == (1.0 if p[c, y, x] > 0 else 0.0)
    np.testing.assert_allclose(a.transpose(2, 0, 1), 0.5 + 0.5 * p / np.abs(p).max(), atol=1e-6)


def test_normalise_one_channel_is_grey_and_bad_shapes_are_refused():
    p = np.arange(-8, 8, dtype=np.float32).reshape(1, 4, 4)
    out = normalise_projection(p)
    assert out.shape == (4, 4, 3)
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])
    assert out[0, 0, 0] == 0.0  # -8 is the largest magnitude
    with pytest.raises(ValueError, match="C = 1 or 3"):
        normalise_projection(np.zeros((4, 4, 4)))


# ---------------------------------------------------------------- PDF

def test_pdf_has_summary_plus_one_page_per_layer_and_metadata(result, info, tmp_path):
    path = tmp_path / "deconv.pdf"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a division by zero for the all-zero projection
        pages = render_deconv_pdf(result, info, path)
    assert pages == 1 + len(result.layers) == pdf_page_count(path)
    data = path.read_bytes()
    assert b"/Title (vizkit deconv: cat.jpg)" in data
    assert b"/Creator (vizkit 0.1" in data


@pytest.mark.parametrize("k", [9, 16])
def test_layer_pages_with_many_units_fit_on_a4_without_overlap(k, tmp_path):
    lp = make_layer("features.29", k, 14, seed=k)
    fig = render_layer_page(lp, make_result([lp]).image)
    w, h = fig.get_size_inches()
    assert (w, h) == pytest.approx((8.27, 11.69))
    (canvas,) = fig.axes  # every panel is framed on one page canvas in inches, y down
    boxes = [(r.get_x(), r.get_y(), r.get_x() + r.get_width(), r.get_y() + r.get_height()) for r in canvas.patches]
    assert len(boxes) == 3 * k and len(canvas.images) == 3 * k
    for x0, y0, x1, y1 in boxes:  # inside the page margins, square panels at least 0.9 in (23 mm) wide
        assert x0 >= 0.4 and x1 <= w - 0.4 and y0 >= 0.4 and y1 <= h - 0.4
        assert x1 - x0 >= 0.9
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    result = make_result([lp])
    info = ReportInfo("x.png", "m", "w", None, True, {}, {}, "vizkit deconv x.png")
    assert render_deconv_pdf(result, info, tmp_path / "d.pdf") == 2 == pdf_page_count(tmp_path / "d.pdf")


def test_one_channel_lenet_result_renders(info, tmp_path):
    lp = make_layer("conv2", 3, 10, channels=1, seed=4, zero_unit=0)
    result = make_result([lp, make_layer("conv1", 2, 28, channels=1, mode="map")], channels=1)
    result.image = result.image[:, :, 0]  # a grey display image is accepted too
    assert render_deconv_pdf(result, info, tmp_path / "deconv.pdf") == 3 == pdf_page_count(tmp_path / "deconv.pdf")
    save_deconv_npz(result, tmp_path / "deconv.npz")
    with np.load(tmp_path / "deconv.npz") as npz:
        assert npz["conv2/projections"].shape == (3, 1, H, W)


def test_labels_titles_and_notes(result, info):
    zero = result.layers[0].units[1]
    assert "zero projection" in _unit_label(1, zero, "max", zero=True)
    assert _unit_label(0, result.layers[0].units[0], "max", zero=False) == "#1  ch 1   act 5 at (0, 0)"
    assert "zero projection" not in _unit_label(0, result.layers[0].units[0], "max", zero=False)
    assert layer_title(result.layers[1]) == "features.29  \u00b7  mode map  \u00b7  output grid 4x4"
    assert summary_notes(result, info)[0] == RANDOM_INIT_NOTE and len(summary_notes(result, info)) == 2
    info.pretrained = True
    assert summary_notes(result, info) == result.notes


def test_box_outside_the_image_is_an_error_not_a_blank_panel(result):
    result.layers[0].units[0].box = (0, 0, 0, 5)
    with pytest.raises(ValueError, match="box"):
        render_layer_page(result.layers[0], result.image)


# ---------------------------------------------------------------- manifest and the folder

def test_manifest_records_provenance_and_hashes_every_file(info, tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello")
    path = write_manifest(tmp_path, info, {"project": 1.5})
    m = json.loads(path.read_text())
    assert set(m) == {"schema_version", "image", "model", "weights", "preprocessing", "versions", "command",
                      "settings", "timings", "files", "created"}
    assert m["schema_version"] == 1 and m["model"] == "vgg16" and m["image"] == "photos/cat.jpg"
    assert m["weights"] == {"source": "random init", "sha256": None, "pretrained": False}
    assert m["preprocessing"] == {"resize": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert m["command"] == info.command and m["settings"] == info.settings and m["timings"] == {"project": 1.5}
    assert set(m["versions"]) == {"vizkit", "torch", "torchvision", "timm", "captum", "numpy", "matplotlib",
                                  "python"}
    assert m["versions"]["numpy"] == np.__version__
    assert m["files"] == [{"path": "a.bin", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
                          {"path": "sub/b.txt", "bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}]
    assert datetime.fromisoformat(m["created"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def test_manifest_refuses_values_json_cannot_hold(info, tmp_path):
    info.settings = {"device": object()}
    with pytest.raises(TypeError, match="manifest"):
        write_manifest(tmp_path, info, {})
    assert not (tmp_path / "manifest.json").exists()


def test_write_deconv_outputs_writes_npz_pdf_then_manifest(result, info, tmp_path, monkeypatch):
    calls: list[tuple[str, set[str]]] = []
    for module, name in ((deconv_module, "save_deconv_npz"), (deconv_module, "render_deconv_pdf"),
                         (writer_module, "write_manifest")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            folder = next(a for a in args if isinstance(a, Path))
            folder = folder if folder.is_dir() else folder.parent
            calls.append((_name, {p.name for p in folder.iterdir()}))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    final = write_deconv_outputs(result, info, tmp_path / "out", "cat", {"project": 2.0})
    assert final == tmp_path / "out" / "cat"
    assert calls[-1] == ("write_manifest", {"deconv.npz", "deconv.pdf"})  # last, after the others exist
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat"]  # no temp folder left
    files = {p.name: p for p in final.iterdir()}
    assert set(files) == {"deconv.npz", "deconv.pdf", "manifest.json"}
    m = json.loads(files["manifest.json"].read_text())
    assert {f["path"]: f["sha256"] for f in m["files"]} == {n: sha256(files[n]) for n in ("deconv.npz", "deconv.pdf")}
    assert m["timings"]["project"] == 2.0 and m["timings"]["render"] > 0
    assert files["manifest.json"].stat().st_mtime_ns >= max(files[n].stat().st_mtime_ns
                                                            for n in ("deconv.npz", "deconv.pdf"))
    assert pdf_page_count(files["deconv.pdf"]) == 3


def test_failed_run_keeps_the_previous_good_result(result, info, tmp_path, monkeypatch):
    final = write_deconv_outputs(result, info, tmp_path, "cat", {})
    before = {p.name: p.read_bytes() for p in final.iterdir()}

    def broken(*args):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(deconv_module, "render_deconv_pdf", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_deconv_outputs(result, info, tmp_path, "cat", {})
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["cat"]


@pytest.mark.parametrize("stem", ["", ".", "..", "a/b", ".hidden"])
def test_write_deconv_outputs_refuses_odd_folder_names(result, info, tmp_path, stem):
    with pytest.raises(ValueError, match="folder name"):
        write_deconv_outputs(result, info, tmp_path, stem, {})


# ---------------------------------------------------------------- atomic_dir

def test_atomic_dir_builds_in_a_hidden_sibling_and_moves_into_place(tmp_path):
    final = tmp_path / "out" / "img"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".img.tmp-") and tmp.is_dir()
        assert not final.exists()
        (tmp / "x.txt").write_text("new")
    assert (final / "x.txt").read_text() == "new"
    assert not tmp.exists() and [p.name for p in final.parent.iterdir()] == ["img"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_failure_leaves_nothing_behind(tmp_path, error):
    final = tmp_path / "img"
    with pytest.raises(error), atomic_dir(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise error()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_failure_leaves_the_previous_folder_untouched(tmp_path):
    final = tmp_path / "img"
    final.mkdir()
    (final / "old.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "old.txt").write_text("bad")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["img"]
    assert [p.name for p in final.iterdir()] == ["old.txt"] and (final / "old.txt").read_text() == "good"


def test_atomic_dir_success_replaces_its_own_entries_and_keeps_other_commands_files(tmp_path):
    final = tmp_path / "img"
    (final / "html").mkdir(parents=True)
    (final / "html" / "stale.png").write_text("old")
    (final / "deconv.pdf").write_text("old deconv")
    (final / "gradcam.pdf").write_text("another command's result")
    with atomic_dir(final) as tmp:
        (tmp / "deconv.pdf").write_text("new deconv")
        (tmp / "html").mkdir()
        (tmp / "html" / "index.html").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["deconv.pdf", "gradcam.pdf", "html"]
    assert (final / "deconv.pdf").read_text() == "new deconv"
    assert (final / "gradcam.pdf").read_text() == "another command's result"
    assert [p.name for p in (final / "html").iterdir()] == ["index.html"]  # a folder entry is replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["img"]  # no temp or old folders left


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    final = tmp_path / "img"
    final.write_text("not a folder")
    with pytest.raises(UserInputError, match="not a folder"), atomic_dir(final):
        pass
    assert final.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["img"]
