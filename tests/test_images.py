"""load_image / preprocess / deprocess: every failure is one ImageError naming the file; every mode reads as RGB."""
from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from vizkit.errors import ImageError, UserInputError
from vizkit.load import Preprocessing, deprocess, load_image, preprocess, sample_images


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


# ---- failures ---------------------------------------------------------------------------------------------

def _noise_jpeg(path, size=(64, 48)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def _assert_one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert str(path) in msg
    assert "\n" not in msg
    assert err.value.exit_code == 2


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="not found") as err:
        load_image(path)
    _assert_one_line_naming(err, path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as err:
        load_image(path)
    _assert_one_line_naming(err, path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(ImageError, match="not an image") as err:
        load_image(str(path))
    _assert_one_line_naming(err, path)


def test_folder(tmp_path):
    with pytest.raises(ImageError, match="folder") as err:
        load_image(tmp_path)
    _assert_one_line_naming(err, tmp_path)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_file(tmp_path, fmt):
    full = tmp_path / f"full.{fmt}"
    if fmt == "jpeg":
        _noise_jpeg(full)
    else:
        rng = np.random.default_rng(1)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as err:
        load_image(cut)
    _assert_one_line_naming(err, cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on globally
    assert load_image(full).size == (64, 48)


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (no pixel data): enough for Pillow's size check at open."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_decompression_bomb_default_limit(tmp_path):
    # 10000 x 10000 = 1e8 pixels: above PIL's default 89,478,485 (a warning in PIL), below twice that (an error).
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    path = tmp_path / "bomb.png"
    _png_header_only(path, 10_000, 10_000)
    filters_before = list(warnings.filters)
    with pytest.raises(ImageError, match="decompression-bomb") as err:
        load_image(path)
    _assert_one_line_naming(err, path)
    assert warnings.filters == filters_before  # the error filter was local to the call


def test_decompression_bomb_hard_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)  # 10,000 px > 2 x limit: PIL's DecompressionBombError
    with pytest.raises(ImageError, match="decompression-bomb") as err:
        load_image(path)
    _assert_one_line_naming(err, path)


# ---- conversions ------------------------------------------------------------------------------------------

def test_grayscale_l(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L").save(path)
    arr = _rgb(load_image(path))
    assert arr.tolist() == [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]


def test_grayscale_alpha_la_onto_white(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[0, 0], [0, 255], [100, 255]]], np.uint8), "LA").save(path)
    arr = _rgb(load_image(path))
    assert arr.tolist() == [[[255, 255, 255], [0, 0, 0], [100, 100, 100]]]


def test_rgba_onto_white(tmp_path):
    path = tmp_path / "rgba.png"
    px = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 0, 128]]], np.uint8)
    Image.fromarray(px, "RGBA").save(path)
    arr = _rgb(load_image(path))
    assert arr[0, 0].tolist() == [255, 0, 0]       # opaque red stays red
    assert arr[0, 1].tolist() == [255, 255, 255]   # fully transparent -> white, not black
    assert arr[0, 2].tolist() == [127, 127, 127]   # 50 % black over white


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "p.png"
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.putdata([0, 1])
    img.save(path, transparency=0)
    arr = _rgb(load_image(path))
    assert arr.tolist() == [[[255, 255, 255], [0, 255, 0]]]


def test_palette_gif(tmp_path):
    path = tmp_path / "p.gif"
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 0] + [0, 0, 0] * 254)
    img.putdata([0, 1])
    img.save(path)
    assert _rgb(load_image(path)).tolist() == [[[10, 20, 30], [200, 100, 0]]]


@pytest.mark.parametrize("mode,fmt", [("I;16", "png"), ("I;16", "tiff"), ("I;16B", "tiff")])
def test_sixteen_bit_scales_by_bit_depth(tmp_path, mode, fmt):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    byteorder = ">" if mode.endswith("B") else "<"
    img = Image.frombytes(mode, (4, 1), values.astype(byteorder + "u2").tobytes())
    path = tmp_path / f"deep.{fmt}"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really stored as 16 bit
    arr = _rgb(load_image(path))
    assert arr[0, :, 0].tolist() == [0, 1, 128, 255]  # divided by 257, not clipped at 255
    assert (arr == arr[..., :1]).all()


def test_32bit_integer_judged_by_values(tmp_path):
    path = tmp_path / "i32.tiff"
    Image.fromarray(np.array([[0, 65535]], np.int32), "I").save(path)
    assert _rgb(load_image(path))[0, :, 0].tolist() == [0, 255]


def test_declared_bit_depth_12():
    from vizkit.load.images import to_rgb

    img = Image.fromarray(np.array([[0, 2048, 4095]], np.uint16))
    assert np.asarray(to_rgb(img, bits=12))[0, :, 0].tolist() == [0, 128, 255]


def test_float_image():
    from vizkit.load.images import to_rgb

    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk(tmp_path):
    path = tmp_path / "cmyk.jpg"
    img = Image.new("CMYK", (16, 8), (0, 0, 0, 0))
    img.paste((255, 0, 0, 0), (8, 0, 16, 8))  # cyan on the right
    img.save(path, quality=100)
    arr = _rgb(load_image(path)).astype(int)
    assert np.abs(arr[4, 2] - [255, 255, 255]).max() <= 3
    assert np.abs(arr[4, 13] - [0, 255, 255]).max() <= 3


def test_exif_orientation_6_rotates(tmp_path):
    # Stored 32 wide x 16 tall, left half red, right half blue; orientation 6 = display rotated 90 deg clockwise.
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=100)
    out = _rgb(load_image(path)).astype(int)
    assert out.shape == (32, 16, 3)                  # now tall
    assert np.abs(out[4, 8] - [255, 0, 0]).max() < 10   # left half went to the top
    assert np.abs(out[28, 8] - [0, 0, 255]).max() < 10  # right half to the bottom


def test_loaded_image_is_detached_from_file(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (3, 2), (1, 2, 3)).save(path)
    img = load_image(path)
    path.unlink()  # the returned image must not read lazily from the file
    assert img.getpixel((0, 0)) == (1, 2, 3)


def test_sample_images_are_real_photos():
    paths = sample_images()
    assert [p.name for p in paths] == ["grace_hopper.jpg", "chelsea.png", "coffee.png"]
    sizes = [load_image(p).size for p in paths]
    assert sizes == [(512, 600), (451, 300), (600, 400)]


# ---- preprocess / deprocess -------------------------------------------------------------------------------

def test_preprocess_constant_image_by_hand():
    img = Image.new("RGB", (10, 20), (51, 102, 204))  # 0.2, 0.4, 0.8 of full scale
    prep = Preprocessing(resize=4, crop=4, mean=(0.2, 0.4, 0.6), std=(0.5, 0.5, 0.5))
    x = preprocess(img, prep)
    assert x.shape == (1, 3, 4, 4) and x.dtype == torch.float32
    expected = torch.tensor([0.0, 0.0, 0.4]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_preprocess_resizes_shorter_side_and_crops_centre():
    # 12 wide x 4 tall, pixel value = 10 * column: shorter side is already 4, the crop keeps columns 4..7.
    cols = np.tile((np.arange(12) * 10).astype(np.uint8), (4, 1))
    img = Image.fromarray(np.stack([cols] * 3, axis=-1))
    prep = Preprocessing(resize=4, crop=4, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="nearest")
    x = preprocess(img, prep)
    assert (x[0, 0, 0] * 255).round().tolist() == [40.0, 50.0, 60.0, 70.0]
    # Downscaling: 24 x 8 -> shorter side 4 -> 12 x 4 -> centre 4 x 4.
    big = img.resize((24, 8), Image.NEAREST)
    assert preprocess(big, prep).shape == (1, 3, 4, 4)


def test_preprocess_grayscale_channel():
    img = Image.new("RGB", (6, 6), (100, 150, 200))
    prep = Preprocessing(resize=6, crop=6, mean=(0.5,), std=(0.5,), channels=1)
    x = preprocess(img, prep)
    assert x.shape == (1, 1, 6, 6)
    luma = 0.299 * 100 + 0.587 * 150 + 0.114 * 200  # ITU-R 601-2, 140.75
    assert abs(float(x[0, 0, 0, 0]) - (luma / 255 - 0.5) / 0.5) < 1.5 / 255


def test_preprocess_matches_torchvision_transforms(sample_paths):
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2
    t = weights.transforms()
    prep = Preprocessing(t.resize_size[0], t.crop_size[0], tuple(t.mean), tuple(t.std), t.interpolation.value)
    img = load_image(sample_paths[1])
    assert torch.equal(preprocess(img, prep), t(img).unsqueeze(0))


def test_deprocess_round_trip():
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    prep = Preprocessing(8, 8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    out = deprocess(preprocess(Image.fromarray(arr), prep), prep)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert np.array_equal(out, arr)
    gray = Preprocessing(8, 8, (0.5,), (0.5,), channels=1)
    g = deprocess(preprocess(Image.fromarray(arr), gray)[0], gray)
    assert g.shape == (8, 8, 3) and (g == g[..., :1]).all()


def test_deprocess_clips_out_of_range():
    prep = Preprocessing(2, 2, (0.5,) * 3, (0.5,) * 3)
    x = torch.tensor([-5.0, 5.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert deprocess(x, prep)[0, 0].tolist() == [0, 255, 128]


def test_preprocessing_validation_and_dict():
    prep = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    assert prep.to_dict() == {
        "resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "interpolation": "bicubic", "channels": 3,
    }
    with pytest.raises(UserInputError, match="interpolation"):
        Preprocessing(256, 224, (0.5,) * 3, (0.5,) * 3, "lanczos")
    with pytest.raises(UserInputError, match="one per input channel"):
        Preprocessing(32, 32, (0.5,) * 3, (0.5,) * 3, channels=1)
    with pytest.raises(UserInputError, match="positive"):
        Preprocessing(32, 32, (0.5,), (0.0,), channels=1)
