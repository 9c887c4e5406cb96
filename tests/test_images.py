"""Tests for adkit.images: real files written with PIL into tmp_path, no mocks."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkit.images import MAX_PIXELS, ImageLoadError, load_image


def _noise(size=(64, 48), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _arr(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def _png_claiming(tmp_path: Path, width: int, height: int) -> Path:
    """A real 1x1 PNG whose IHDR is patched to claim width x height (tiny on disk)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1), 7).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    return path


# --- errors: what and where -------------------------------------------------


def test_missing_path_names_the_path(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError, match="no such file") as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(str(tmp_path))


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file") as e:
        load_image(p)
    assert str(p) in str(e.value)
    with pytest.raises(ImageLoadError, match=r"<bytes>: empty file"):
        load_image(b"")


def test_text_file_is_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not a PNG, whatever the name says\n")
    with pytest.raises(ImageLoadError, match="not a recognised image format") as e:
        load_image(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    p = _save(_noise((96, 96)), tmp_path / f"cut.{fmt.lower()}", format=fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt") as e:
        load_image(p)
    assert str(p) in str(e.value)
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never flipped globally


def test_truncated_lazy_pil_image_is_caught(tmp_path):
    p = _save(_noise((96, 96)), tmp_path / "cut.png")
    p.write_bytes(p.read_bytes()[:-200])
    with Image.open(p) as lazy, pytest.raises(ImageLoadError, match=r"<PIL.Image>: .*truncated or corrupt"):
        load_image(lazy)


def test_decompression_bomb_beyond_pil_limit(tmp_path):
    p = _png_claiming(tmp_path, 20000, 20000)
    assert p.stat().st_size < 200
    with pytest.raises(ImageLoadError, match="400000000") as e:
        load_image(p)
    assert str(p) in str(e.value) and "too large" in str(e.value)


def test_decompression_bomb_caught_by_our_limit_before_decoding(tmp_path):
    p = _png_claiming(tmp_path, 9000, 9000)  # 81 Mpx: under PIL's limit, over ours
    assert 9000 * 9000 > MAX_PIXELS
    with pytest.raises(ImageLoadError, match=r"9000x9000 = 81000000 pixels, over the limit of 67108864"):
        load_image(p)


def test_max_pixels_is_respected_both_ways(tmp_path):
    p = _save(_noise((10, 10)), tmp_path / "small.png")
    with pytest.raises(ImageLoadError, match="10x10 = 100 pixels, over the limit of 99"):
        load_image(p, max_pixels=99)
    assert load_image(p, max_pixels=100).size == (10, 10)
    with pytest.raises(ImageLoadError, match="<array>: .*over the limit"):
        load_image(np.zeros((10, 10), np.uint8), max_pixels=50)


def test_raised_limit_passes_size_check_then_fails_as_corrupt(tmp_path):
    # 10000x10000 = 1e8 px trips PIL's warning; a caller who allows it gets past
    # the size check and then a clear "corrupt" error (the data is 1 pixel).
    p = _png_claiming(tmp_path, 10000, 10000)
    with pytest.raises(ImageLoadError, match="over the limit|too large"):
        load_image(p)
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(p, max_pixels=10**8)


def test_wrong_source_type_is_a_type_error():
    with pytest.raises(TypeError, match="cannot read a int"):
        load_image(123)  # type: ignore[arg-type]


def test_text_mode_file_object(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("x")
    with open(p) as fh, pytest.raises(ImageLoadError, match="binary mode"):
        load_image(fh)


# --- mode conversion ------------------------------------------------------


def test_rgb_roundtrip_and_types(tmp_path):
    img = _noise((13, 7))
    p = _save(img, tmp_path / "rgb.png")
    expected = np.asarray(img)
    for source in (p, str(p), p.read_bytes(), io.BytesIO(p.read_bytes()), img):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (13, 7)
        np.testing.assert_array_equal(_arr(out), expected)
    with open(p, "rb") as fh:
        np.testing.assert_array_equal(_arr(load_image(fh)), expected)
    assert load_image(img) is not img  # a copy: callers can't alias the input


def test_grayscale_L(tmp_path):
    img = _noise((5, 4), "L")
    out = load_image(_save(img, tmp_path / "l.png"))
    g = np.asarray(img)
    np.testing.assert_array_equal(_arr(out), np.stack([g, g, g], axis=2))


def test_one_bit(tmp_path):
    img = Image.new("1", (3, 1))
    img.putpixel((1, 0), 1)
    out = load_image(_save(img, tmp_path / "b.png"))
    np.testing.assert_array_equal(_arr(out)[0, :, 0], [0, 255, 0])


def test_LA_composites_over_black(tmp_path):
    img = Image.new("LA", (3, 1))
    for x, (v, a) in enumerate([(200, 255), (200, 0), (200, 128)]):
        img.putpixel((x, 0), (v, a))
    out = _arr(load_image(_save(img, tmp_path / "la.png")))
    np.testing.assert_array_equal(out[0, :, 0], [200, 0, round(200 * 128 / 255)])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_RGBA_composites_over_black(tmp_path):
    img = Image.new("RGBA", (4, 1))
    pixels = [(10, 200, 30, 255), (255, 255, 255, 0), (255, 100, 0, 128), (90, 60, 30, 51)]
    for x, px in enumerate(pixels):
        img.putpixel((x, 0), px)
    out = _arr(load_image(_save(img, tmp_path / "rgba.png")))
    expected = [[round(c * px[3] / 255) for c in px[:3]] for px in pixels]
    np.testing.assert_array_equal(out[0], np.array(expected, np.uint8))


def test_palette_P(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    for x in range(3):
        img.putpixel((x, 0), x)
    out = _arr(load_image(_save(img, tmp_path / "p.png")))
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [40, 50, 60], [70, 80, 90]])


def test_palette_P_with_transparency(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    for x in range(3):
        img.putpixel((x, 0), x)
    for fmt in ("PNG", "GIF"):
        p = _save(img, tmp_path / f"pt.{fmt.lower()}", format=fmt, transparency=1)
        out = _arr(load_image(p))
        np.testing.assert_array_equal(out[0], [[10, 20, 30], [0, 0, 0], [70, 80, 90]], err_msg=fmt)


def test_16bit_png_gradient_scales_not_saturates(tmp_path):
    values = np.concatenate([np.arange(256) * 257, [128, 129, 385, 1000]]).astype(np.uint16)
    img = Image.fromarray(values.reshape(1, -1))
    p = _save(img, tmp_path / "g16.png")
    with Image.open(p) as raw:
        assert raw.mode.startswith("I")  # PIL keeps 16 bits on read
    out = _arr(load_image(p))
    expected = np.rint(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(out[0, :, 0], expected)
    np.testing.assert_array_equal(out[0, :256, 1], np.arange(256))  # a true 8-bit ramp
    assert out[0, 256 + 3, 2] == 4  # 1000/257 = 3.89, not clipped to 255


def test_16bit_big_endian_and_32bit_and_float_modes():
    be = Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 257 * 3, 65535))
    np.testing.assert_array_equal(_arr(load_image(be))[0, :, 0], [3, 255])
    i32 = Image.fromarray(np.array([[0, 257 * 10, 65535]], dtype=np.int32))
    assert i32.mode == "I"
    np.testing.assert_array_equal(_arr(load_image(i32))[0, :, 0], [0, 10, 255])
    wide = Image.fromarray(np.array([[-50, 0, 200]], dtype=np.int32))  # out of range: stretched
    np.testing.assert_array_equal(_arr(load_image(wide))[0, :, 0], [0, 51, 255])
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert f.mode == "F"
    np.testing.assert_array_equal(_arr(load_image(f))[0, :, 0], [0, 128, 255])


def test_one_by_one(tmp_path):
    out = load_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "1.png"))
    assert out.size == (1, 1) and out.getpixel((0, 0)) == (1, 2, 3)


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    p = _save(img, tmp_path / "cmyk.jpg", quality=95)
    with Image.open(p) as raw:
        assert raw.mode == "CMYK"
    out = _arr(load_image(p)).astype(int)
    assert np.abs(out - np.array([255, 0, 0])).max() <= 6


def test_exif_orientation_is_applied(tmp_path):
    img = _noise((4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = _save(img, tmp_path / "rot.png", exif=exif.tobytes())
    out = load_image(p)
    assert out.size == (2, 4)
    np.testing.assert_array_equal(_arr(out), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


# --- numpy arrays ---------------------------------------------------------


def test_arrays_uint8_all_shapes():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = np.stack([g, g + 1, g + 2], axis=2)
    for a in (g, g[..., None]):
        out = load_image(a)
        assert out.size == (4, 3)
        np.testing.assert_array_equal(_arr(out), np.stack([g, g, g], axis=2))
    np.testing.assert_array_equal(_arr(load_image(rgb)), rgb)
    rgba = np.concatenate([np.full((3, 4, 3), 200, np.uint8), np.full((3, 4, 1), 51, np.uint8)], axis=2)
    np.testing.assert_array_equal(_arr(load_image(rgba)), np.full((3, 4, 3), 40, np.uint8))
    np.testing.assert_array_equal(_arr(load_image(rgb[:, ::-1])), rgb[:, ::-1])  # non-contiguous


def test_arrays_uint16_float_bool():
    np.testing.assert_array_equal(_arr(load_image(np.array([[0, 257, 65535]], np.uint16)))[0, :, 0], [0, 1, 255])
    for dt in (np.float16, np.float32, np.float64):
        out = _arr(load_image(np.array([[0.0, 0.5, 1.0]], dt)))
        np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(_arr(load_image(np.array([[True, False]])))[0, :, 0], [255, 0])
    out = _arr(load_image(np.ones((2, 2, 3), np.float32) * 0.2))
    assert (out == 51).all()


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.array([[0.0, 1.5]]), r"must lie in \[0, 1\], found \[0, 1.5\]"),
        (np.array([[np.nan, 0.5]]), "NaN or infinity"),
        (np.zeros((2, 2), np.int64), "unsupported dtype int64"),
        (np.zeros((2, 2, 2), np.uint8), r"shape \(2, 2, 2\)"),
        (np.zeros((2,), np.uint8), r"shape \(2,\)"),
        (np.zeros((0, 3), np.uint8), "has no pixels"),
    ],
)
def test_bad_arrays(arr, message):
    with pytest.raises(ImageLoadError, match=r"<array>: .*" + message):
        load_image(arr)


# ----------------------------------------------------------------------------- regular files only


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused_without_reading(device):
    if not Path(device).exists():
        pytest.skip(f"{device} not on this system")
    with pytest.raises(ImageLoadError, match=rf"^{device}: is a character device; only regular image files"):
        load_image(device)


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # no writer: a blocking open would hang forever
    with pytest.raises(ImageLoadError, match=r"pipe.png: is a FIFO \(named pipe\)"):
        load_image(fifo)


def test_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(ImageLoadError, match=r"s.png: (is a socket|cannot read file)"):
            load_image(path)


def test_symlink_to_a_regular_image_is_followed_and_to_a_device_refused(tmp_path):
    real = _save(_noise(), tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to(real)
    assert load_image(tmp_path / "link.png").size == (64, 48)
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(ImageLoadError, match="zero.png: is a character device"):
        load_image(tmp_path / "zero.png")


def test_cli_refuses_a_device_and_a_fifo_in_one_line(tmp_path):
    """``adkit detect`` goes through load_image: one line naming the file, exit 2, no model load."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, reason in (("/dev/zero", "is a character device"), (str(fifo), "is a FIFO")):
        r = subprocess.run([sys.executable, "-m", "adkit.cli", "detect", path, "--preset", "tiny"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and path in lines[0] and reason in lines[0], r.stderr
