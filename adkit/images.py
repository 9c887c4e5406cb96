"""Safe image loading: every input becomes a fully decoded RGB ``PIL.Image``.

Why this module exists
----------------------
The paper's preprocessing (SigLIP normalisation, AnyRes tiling) assumes 8-bit
RGB. Real inspection data is messier: 16-bit grayscale PNGs, palette images
with transparency, CMYK JPEGs, phone photos rotated by an EXIF tag, truncated
downloads, and the occasional file that is not an image at all.

Bad input gets a clear error and loses nothing. Every failure raises
:class:`ImageLoadError` whose message says *what* was wrong and *where* (the
path, ``<bytes>``, ``<file-like>``, ``<array>`` or ``<PIL.Image>``); nothing
is silently clipped, padded or half-decoded, and no global PIL setting is
changed (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays ``False``,
``Image.MAX_IMAGE_PIXELS`` is untouched).

Conventions, chosen once:

* Alpha is composited over **black**, the same padding colour the AnyRes
  tiling uses, so a transparent border looks like padding, not like content.
* High bit depth is *scaled*, never clipped: ``I;16`` divides by 257 (so
  65535 -> 255); ``I`` (32-bit) is treated as 16-bit when its values lie in
  [0, 65535] and min-max scaled otherwise; ``F`` is taken as [0, 1] when it
  lies there and min-max scaled otherwise. PIL's own ``convert("RGB")``
  saturates these to white, which is why it is not used for them.
* The image size is checked against ``max_pixels`` *before* decoding (PIL
  opens lazily), so a decompression bomb costs a header read, not gigabytes.
* Multi-frame files (GIF, TIFF) yield their first frame.
* Only regular files are opened: a FIFO, a device (``/dev/zero``) or a socket is refused from
  its ``fstat`` (the open itself is non-blocking, so a FIFO with no writer cannot hang it).
* Images above the pixel budget are downscaled on load, aspect kept, to the most pixels any
  preset can use (:mod:`adkit.pixel_budget`, docs/architecture.md §2.3); they remember their
  size before it, from which anyres chooses the crop grid. JPEGs are decoded at a reduced
  scale (``draft``) when that still leaves at least the budget size.
* Wrong *types* of ``source`` raise ``TypeError`` (a programming error), not
  ``ImageLoadError``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import pixel_budget as _budget

__all__ = ["ImageLoadError", "MAX_PIXELS", "load_image", "source_size"]

source_size = _budget.source_size  # (h, w) before the pixel budget: what anyres chooses the grid from
_DEFAULT = object()

#: Default limit on width * height: 64 megapixels (8192 x 8192).
MAX_PIXELS: int = 8192 * 8192

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

# Exceptions PIL decoders raise on truncated or malformed data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image; the message says why and where."""


def load_image(source: ImageSource, *, max_pixels: int | None = None, pixel_budget=_DEFAULT) -> Image.Image:
    """Load ``source`` as a fully decoded RGB image (see the module docstring for rules).

    ``source`` may be a path (``str``/``Path``), ``bytes``, a binary file-like
    object, a ``PIL.Image.Image`` or a numpy array (HxW, HxWx1, HxWx3, HxWx4
    of dtype uint8, uint16, bool, or float in [0, 1]).

    ``pixel_budget``: most pixels kept (larger images are downscaled, aspect kept); default
    :func:`adkit.pixel_budget.default_budget`, ``None`` keeps every pixel.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels!r}")
    budget = _budget.check_budget(_budget.default_budget() if pixel_budget is _DEFAULT else pixel_budget)

    if isinstance(source, np.ndarray):
        return _budget.downscale(_from_array(source, limit), budget)
    if isinstance(source, Image.Image):
        where = "<PIL.Image>"
        _check_size(source.size, where, limit)
        _force_load(source, where)
        before = _budget.source_size_wh(source)  # an image this function downscaled before keeps its record
        img = _budget.keep_record(source, _to_rgb(_exif_transpose(source, where), where))
        return _budget.downscale(img, budget, before if img.size == source.size else img.size)
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        with _open_regular(Path(source), where) as fh:
            return _decode(fh, os.fstat(fh.fileno()).st_size, where, limit, budget)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), len(source), "<bytes>", limit, budget)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        where = f"<file-like {name}>" if isinstance(name, str) else "<file-like>"
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError(f"{where}: read() returned {type(data).__name__}; open the file in binary mode")
        return _decode(io.BytesIO(bytes(data)), len(data), where, limit, budget)
    raise TypeError(
        f"load_image() cannot read a {type(source).__name__}; expected a path, bytes, "
        "a binary file-like object, a PIL image or a numpy array"
    )


_KINDS = ((stat.S_ISFIFO, "is a FIFO (named pipe)"),
          (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
          (stat.S_ISSOCK, "is a socket"))


def _open_regular(path: Path, where: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (after symlinks); a one-line error
    naming it otherwise. Non-blocking open, then ``fstat`` of what was opened: no FIFO can
    hang it and nothing can be swapped in between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageLoadError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{where}: is a directory, not an image file") from None
    except OSError as e:
        raise ImageLoadError(f"{where}: cannot read file ({e.strerror or e})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise ImageLoadError(f"{where}: is a directory, not an image file")
        reason = next((text for test, text in _KINDS if test(mode)), "is not a regular file")
        raise ImageLoadError(f"{where}: {reason}; only regular image files are read")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _decode(fp: BinaryIO, nbytes: int, where: str, limit: int, budget: int | None) -> Image.Image:
    if not nbytes:
        raise ImageLoadError(f"{where}: empty file (0 bytes)")
    with warnings.catch_warnings():
        # Locally, PIL's bomb *warning* becomes an error when our limit is at
        # or below PIL's; a caller who raised max_pixels above it is obeyed.
        pil_limit = Image.MAX_IMAGE_PIXELS
        action = "error" if pil_limit is None or limit <= pil_limit else "ignore"
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(f"{where}: image too large, refusing to decode ({e}); limit is {limit} pixels") from e
        except UnidentifiedImageError as e:
            raise ImageLoadError(f"{where}: not a recognised image format ({nbytes} bytes)") from e
        except _DECODE_ERRORS as e:
            raise ImageLoadError(f"{where}: image header is truncated or corrupt ({e})") from e
    with img:
        _check_size(img.size, where, limit)
        source = _oriented_size(img)
        if img.format == "JPEG" and budget is not None and img.width * img.height > budget:
            img.draft(img.mode, _budget.budget_size(img.width, img.height, budget))  # decode at 1/2..1/8 scale
        _force_load(img, where)
        if (budget is not None and img.width * img.height > budget and img.mode in _RESIZE_FIRST
                and "transparency" not in img.info):
            # big plain image: turn it in place and shrink it before any copy, so the peak is
            # the decode alone (an 8192² PNG: 256 MB, not three copies of it)
            _exif_transpose(img, where, in_place=True)
            img = img.resize(_budget.budget_size(img.width, img.height, budget), Image.BICUBIC, reducing_gap=3.0)
            return _budget.downscale(_to_rgb(img, where), budget, source)
        rgb = _to_rgb(_exif_transpose(img, where), where)
        return _budget.downscale(rgb, budget, source if rgb.size != source else None)


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """(W, H) the image will have once its EXIF orientation is applied (before any draft)."""
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 — unreadable EXIF is ignored (and warned about) later
        turned = False
    return (img.height, img.width) if turned else img.size


def _check_size(size: tuple[int, int], where: str, limit: int) -> None:
    w, h = size
    if w * h > limit:
        raise ImageLoadError(
            f"{where}: image is {w}x{h} = {w * h} pixels, over the limit of {limit} pixels "
            "(possible decompression bomb; pass max_pixels= to allow it)"
        )


#: Modes whose resize-then-convert equals convert-then-resize (no alpha, no high bit depth;
#: a colour-key "transparency" is excluded where it is used).
_RESIZE_FIRST = ("RGB", "L")


def _force_load(img: Image.Image, where: str) -> None:
    """Decode every pixel now, so truncation surfaces here and not later."""
    try:
        img.load()
    except _DECODE_ERRORS as e:
        raise ImageLoadError(f"{where}: image data is truncated or corrupt ({e})") from e


def _exif_transpose(img: Image.Image, where: str, in_place: bool = False) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(img, in_place=in_place)
    except Exception as e:  # a broken EXIF block must not cost the pixels
        warnings.warn(f"{where}: ignoring unreadable EXIF orientation ({e})", stacklevel=4)
        return img
    return img if out is None else out


def _to_rgb(img: Image.Image, where: str) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.float64)
        trns = img.info.get("transparency")
        if isinstance(trns, int):  # colour-key transparency -> black, like alpha
            arr[np.asarray(img) == trns] = 0.0
        return _gray_to_rgb(_scale_high_depth(arr, mode))
    if mode in ("LA", "PA", "RGBA", "La", "RGBa") or "transparency" in img.info:
        if mode == "La":
            img = img.convert("LA")
        try:
            rgba = np.asarray(img.convert("RGBA"))
        except ValueError as e:
            raise ImageLoadError(f"{where}: cannot convert mode {mode} to RGB ({e})") from e
        return Image.fromarray(_composite_over_black(rgba))
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageLoadError(f"{where}: cannot convert mode {mode} to RGB ({e})") from e


def _scale_high_depth(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a high-bit-depth single-channel array to uint8 by its real range."""
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = arr / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    else:  # out-of-range data: stretch min..max to 0..255 rather than clip
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_over_black(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    return ((rgb * alpha + 127) // 255).astype(np.uint8)  # round(rgb * a / 255)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


def _from_array(arr: np.ndarray, limit: int) -> Image.Image:
    where = "<array>"
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageLoadError(f"{where}: shape {arr.shape} is not HxW, HxWx1, HxWx3 or HxWx4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"{where}: shape {arr.shape} has no pixels")
    _check_size((arr.shape[1], arr.shape[0]), where, limit)
    if arr.dtype == np.bool_:
        u8 = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.uint16:
        u8 = np.rint(arr / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{where}: float array contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise ImageLoadError(f"{where}: float array must lie in [0, 1], found [{lo:g}, {hi:g}]")
        u8 = np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise ImageLoadError(
            f"{where}: unsupported dtype {arr.dtype}; use uint8, uint16, bool or float in [0, 1]"
        )
    u8 = np.ascontiguousarray(u8)
    if u8.ndim == 2:
        return _gray_to_rgb(u8)
    if u8.shape[2] == 4:
        return Image.fromarray(_composite_over_black(u8))
    return Image.fromarray(u8)
