"""Tests for seethrough.images: every input kind and mode to RGB, and every refusal typed."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seethrough.errors import ImageTooLargeError, InvalidImageError, InvalidParameterError
from seethrough.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    is_raw_image,
    list_samples,
    load_image,
    sample_image,
    to_array,
)


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _fake_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with a tiny (far too short) IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(body)
    return path


def _rgb(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    assert image.mode == "RGB"
    return tuple(image.getpixel((x, y)))


# ------------------------------------------------------------------------------------ modes


def test_grayscale_l(tmp_path):
    image = load_image(_save(Image.new("L", (4, 3), 100), tmp_path / "l.png"))
    assert image.mode == "RGB" and image.size == (4, 3)
    assert _rgb(image, 0, 0) == (100, 100, 100)


def test_la_transparent_becomes_white(tmp_path):
    source = Image.new("LA", (2, 1), (0, 255))
    source.putpixel((1, 0), (0, 0))  # fully transparent black
    image = load_image(_save(source, tmp_path / "la.png"))
    assert _rgb(image, 0, 0) == (0, 0, 0)
    assert _rgb(image, 1, 0) == (255, 255, 255)


def test_rgba_composited_on_white(tmp_path):
    pixels = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    image = load_image(_save(Image.fromarray(pixels, "RGBA"), tmp_path / "rgba.png"))
    assert _rgb(image, 0, 0) == (255, 255, 255)  # transparent red -> white
    assert _rgb(image, 1, 0) == (0, 0, 255)  # opaque blue stays
    assert all(abs(v - 127) <= 1 for v in _rgb(image, 2, 0))  # half-transparent black -> grey


@pytest.mark.parametrize("transparent", [False, True])
def test_palette(tmp_path, transparent):
    source = Image.new("P", (2, 1))
    source.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    source.putpixel((0, 0), 0)
    source.putpixel((1, 0), 1)
    kwargs = {"transparency": 0} if transparent else {}
    image = load_image(_save(source, tmp_path / "p.png", **kwargs))
    assert _rgb(image, 0, 0) == ((255, 255, 255) if transparent else (10, 20, 30))
    assert _rgb(image, 1, 0) == (200, 100, 50)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    pixels = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    path = _save(Image.fromarray(pixels), tmp_path / "i16.png")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    values = to_array(path)[0, :, 0].tolist()
    assert values[0] == 255 and abs(values[1] - 128) <= 1 and values[2] == 0 and values[3] == 1


def test_sixteen_bit_pil_modes():
    values = np.array([[65535, 0, 32768]], dtype=np.uint16)
    big_endian = Image.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    int32 = Image.fromarray(values).convert("I")
    for source, mode in ((big_endian, "I;16B"), (int32, "I")):
        assert source.mode == mode
        assert to_array(source)[0, :, 0].tolist() == [255, 0, 128]


def test_float_mode_f():
    source = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert source.mode == "F"
    assert to_array(source)[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_and_bilevel(tmp_path):
    cmyk = load_image(_save(Image.new("CMYK", (3, 3), (0, 0, 0, 0)), tmp_path / "c.jpg"))
    assert all(v >= 250 for v in _rgb(cmyk, 1, 1))
    bilevel = load_image(Image.new("1", (2, 2), 1))
    assert _rgb(bilevel, 0, 0) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path):
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)  # 80 wide, 40 high
    pixels[:16, :16] = (255, 0, 0)  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(Image.fromarray(pixels), tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (40, 80)  # width and height swapped
    array = np.asarray(image).astype(int)
    assert array[:10, -10:, 0].mean() > 200 and array[:10, -10:, 1:].mean() < 50  # now top-right
    assert array[:10, :10].mean() < 50  # top-left is black


# ------------------------------------------------------------------------------ other sources


def test_bytes_file_object_and_pil(tmp_path):
    path = _save(Image.new("RGB", (5, 4), (1, 2, 3)), tmp_path / "x.png")
    data = path.read_bytes()
    for source in (data, bytearray(data), io.BytesIO(data), str(path), Image.open(path)):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (5, 4) and _rgb(image, 0, 0) == (1, 2, 3)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((3, 4), 7, np.uint8), (7, 7, 7)),
        (np.full((3, 4, 1), 7, np.uint8), (7, 7, 7)),
        (np.full((3, 4, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.full((3, 4, 4), (1, 2, 3, 255), np.uint8), (1, 2, 3)),
        (np.full((3, 4, 4), (1, 2, 3, 0), np.uint8), (255, 255, 255)),
        (np.full((3, 4), 65535, np.uint16), (255, 255, 255)),
        (np.ones((3, 4), bool), (255, 255, 255)),
        (np.full((3, 4, 3), 0.5, np.float32), (128, 128, 128)),
        (np.full((3, 4), 1.0, np.float64), (255, 255, 255)),
    ],
)
def test_numpy_inputs(array, expected):
    result = to_array(array)
    assert result.shape == (3, 4, 3) and result.dtype == np.uint8
    assert tuple(result[0, 0]) == expected


# ---------------------------------------------------------------------------------- refusals


def test_truncated_png(tmp_path):
    good = _save(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
        tmp_path / "g.png",
    )
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InvalidImageError, match="cut.png") as info:
        load_image(cut)
    assert "\n" not in str(info.value) and "truncated or corrupt" in str(info.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(InvalidImageError, match=r"notes\.jpg.*not a recognised image"):
        load_image(path)


def test_huge_header_refused_before_decoding(tmp_path):
    path = _fake_png(tmp_path / "bomb.png", 30000, 30000)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="bomb.png") as info:
        load_image(path)
    assert time.perf_counter() - start < 2.0
    assert "30000x30000 = 900,000,000" in str(info.value)
    assert f"{DEFAULT_MAX_PIXELS:,}" in str(info.value) and "178956970" not in str(info.value)


def test_own_pixel_limit_checked_from_header(tmp_path, monkeypatch):
    # The IDAT is far too short: a decode attempt would fail as "corrupt", not "too large".
    path = _fake_png(tmp_path / "big.png", 5000, 4000)
    with pytest.raises(ImageTooLargeError, match=r"big\.png.*5000x4000.*1,000,000"):
        load_image(path, max_pixels=1_000_000)
    monkeypatch.setenv("SEETHROUGH_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError, match="1,000"):
        load_image(path)
    monkeypatch.setenv("SEETHROUGH_MAX_PIXELS", "lots")
    with pytest.raises(InvalidParameterError, match="SEETHROUGH_MAX_PIXELS"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InvalidImageError, match=r"nope\.png.*not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((2, 2, 3), 1.5, np.float32), r"outside \[0, 1\]"),
        (np.full((2, 2), -0.1), r"outside \[0, 1\]"),
        (np.full((2, 2), np.nan), r"outside \[0, 1\]"),
        (np.zeros((2, 2, 5), np.uint8), r"shape \(2, 2, 5\)"),
        (np.zeros((2, 2), np.int64), "unsupported dtype int64"),
        (np.zeros((0, 2), np.uint8), "empty"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(InvalidImageError, match=message) as info:
        load_image(array)
    assert "<array>" in str(info.value)


def test_unsupported_object():
    with pytest.raises(InvalidImageError, match="int"):
        load_image(42)  # type: ignore[arg-type]


def test_is_raw_image(tmp_path):
    for obj in ("x.png", tmp_path, b"..", Image.new("RGB", (1, 1)), np.zeros((2, 2)), io.BytesIO()):
        assert is_raw_image(obj)
    for obj in (torch.zeros(3, 4, 4), 3, None, [np.zeros((2, 2))]):
        assert not is_raw_image(obj)
    assert "png" in IMAGE_EXTENSIONS and "tiff" in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------- samples


def test_samples():
    names = list_samples()
    for name in (
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "camera",
        "coins",
        "horse",
        "stereo_motorcycle",
    ):
        assert name in names
    chelsea = sample_image("chelsea")
    assert chelsea.mode == "RGB" and chelsea.size == (451, 300)
    assert np.array_equal(np.asarray(load_image("sample:chelsea")), np.asarray(chelsea))
    for name, size in (
        ("camera", (512, 512)),
        ("horse", (400, 328)),
        ("stereo_motorcycle", (741, 500)),
    ):
        image = sample_image(name)
        assert image.mode == "RGB" and image.size == size


def test_unknown_sample_suggests():
    with pytest.raises(InvalidImageError, match="Did you mean: chelsea"):
        sample_image("chelsae")
    with pytest.raises(InvalidImageError, match="coffee"):
        load_image("sample:cofee")
