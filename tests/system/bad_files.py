"""Image files an unlucky user or an attacker sends, written for real into a folder.

Each entry is ``name -> (path, valid)``: ``valid`` files are odd but genuine images (grayscale,
16-bit, RGBA, palette, CMYK, EXIF-rotated, strips, 1 px, animated, big) that must be scored;
the others (empty, text, truncated, bombs, other formats, lies about their type) must be
refused with a clear message.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A small PNG declaring a huge canvas (rows of zeros compress to almost nothing)."""
    row = b"\0" + b"\0" * width  # filter byte + one grey byte per pixel
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()  # only the first rows: the rest is missing
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def image_files(folder: Path) -> dict[str, tuple[Path, bool]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    png, jpg = _encode(rgb, "PNG"), _encode(rgb, "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90°
    frames = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    valid = {
        "grayscale PNG": _encode(rgb.convert("L"), "PNG"),
        "16-bit PNG": _encode(Image.fromarray((rng.integers(0, 65536, (64, 80))).astype(np.uint16)), "PNG"),
        "RGBA PNG": _encode(rgb.convert("RGBA"), "PNG"),
        "grey + alpha PNG": _encode(rgb.convert("LA"), "PNG"),
        "palette PNG": _encode(rgb.convert("P"), "PNG"),
        "1-bit PNG": _encode(rgb.convert("1"), "PNG"),
        "CMYK JPEG": _encode(rgb.convert("CMYK"), "JPEG"),
        "EXIF-rotated JPEG": _encode(rgb, "JPEG", exif=exif),
        "progressive JPEG": _encode(rgb, "JPEG", progressive=True),
        "float TIFF": _encode(Image.fromarray(rng.random((48, 64)).astype(np.float32)), "TIFF"),
        "BMP": _encode(rgb, "BMP"),
        "WebP": _encode(rgb, "WEBP"),
        "animated GIF": gif.getvalue(),
        "1x1 PNG": _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "1x3000 strip": _encode(Image.new("RGB", (1, 3000), (9, 9, 9)), "PNG"),
        "3000x1 strip": _encode(Image.new("RGB", (3000, 1), (9, 9, 9)), "PNG"),
        "200000x1 strip": _encode(Image.new("RGB", (200_000, 1), (9, 9, 9)), "PNG"),
        "6000x4000 JPEG": _encode(rgb.resize((6000, 4000)), "JPEG", quality=60),
        "PNG named .jpg": png,
    }
    invalid = {
        "zero bytes": b"",
        "text named .png": b"this is not an image\n" * 10,
        "HTML named .png": b"<!doctype html><script>alert(1)</script>",
        "SVG": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "PDF header": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "zip archive": b"PK\x03\x04" + b"\0" * 64,
        "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated PNG": png[: len(png) // 2],
        "truncated JPEG": jpg[: len(jpg) // 2],
        "PNG header only": png[:33],
        "PNG bomb 60000x60000": png_bomb(),
        "PNG bomb 12000x12000": png_bomb(12000, 12000),
        "PNG with bad CRC": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],
        "JPEG magic, garbage body": b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(),
    }
    suffix = {"SVG": ".svg", "PDF header": ".pdf", "zip archive": ".zip", "float TIFF": ".tif", "BMP": ".bmp",
              "WebP": ".webp", "animated GIF": ".gif", "PNG named .jpg": ".jpg"}
    out = {}
    for i, (name, data) in enumerate([*valid.items(), *invalid.items()]):
        ext = suffix.get(name, ".jpg" if "JPEG" in name else ".png")
        path = folder / f"case{i:02d}{ext}"
        path.write_bytes(data)
        out[name] = (path, name in valid)
    return out
