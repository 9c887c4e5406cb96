"""The pixel budget: images are downscaled on load to the most pixels any preset can use.

Why (docs/architecture.md §2.3)
-------------------------------
Anyres never looks at more than one canvas of candidate size (i·S, j·S), i, j ≤ ``max_grid``:
step 1 caps the long side, step 4 resizes the image into the chosen canvas. So no preset
uses more than ``(max_grid·S)²`` pixels (2304² for the paper's S = 384), and an 8192×8192
photo carries nothing the model sees that a 2304×2304 one lacks — yet decoding, tiling,
full-resolution anomaly maps and overlays of it cost gigabytes. :func:`adkit.images.load_image`
therefore downscales (aspect kept, bicubic) every image above :data:`PIXEL_BUDGET` pixels.

Fidelity: the crop grid and the token count must not depend on the budget. Anyres chooses
the grid from the image's size, and a downscaled size is rounded, so the choice is made on the
size *before* the budget: the loaded image records it (:func:`source_size`) and the processor
caps and tiles from it. Pixels are resized once more (budget size → capped size); grid, token
layout and map geometry are identical to the unbudgeted path (``tests/test_pixel_budget.py``).

Configure it per call (``load_image(..., pixel_budget=N)``, ``None`` for no budget) or per
process with the environment variable ``ADKIT_PIXEL_BUDGET`` (a positive integer, or
``none``). The budget is independent of ``max_pixels``, the decompression-bomb limit checked
on the header before anything is decoded.
"""

from __future__ import annotations

import math
import os

from PIL import Image

from .geometry import PRESET_GEOMETRY

__all__ = ["PIXEL_BUDGET", "ENV_VAR", "budget_size", "default_budget", "downscale", "source_size"]

#: Default budget: the largest anyres canvas of any preset, (max_grid · tile_size)² pixels.
PIXEL_BUDGET: int = max((g.max_grid * g.tile_size) ** 2 for g in PRESET_GEOMETRY.values())
ENV_VAR = "ADKIT_PIXEL_BUDGET"

# Keys of the record a downscaled image carries in ``Image.info`` (PIL copies ``info`` along
# with copy/convert/resize, hence the second key: the record counts only at the size it made).
_SOURCE_KEY, _SIZE_KEY = "adkit_source_size", "adkit_budget_size"


def default_budget() -> int | None:
    """The budget :func:`adkit.images.load_image` applies when none is passed: ``$ADKIT_PIXEL_BUDGET``
    if set (``none`` disables it), else :data:`PIXEL_BUDGET`."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return PIXEL_BUDGET
    if raw.lower() == "none":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${ENV_VAR} must be a positive number of pixels or 'none', got {raw!r}")
    return value


def check_budget(budget) -> int | None:
    """``budget`` as an int (or None); a clear error for anything that is not a positive count."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 1 or math.isinf(budget):
        raise ValueError(f"pixel_budget must be a positive number of pixels or None, got {budget!r}")
    return int(budget)


def budget_size(width: int, height: int, budget: int | None) -> tuple[int, int]:
    """(W, H) of a ``width × height`` image under ``budget``: unchanged when it fits, else scaled
    by √(budget / pixels) with each side floored (so W·H ≤ budget and each side is within a pixel
    of the exact scale; a side never drops below 1)."""
    if budget is None or width * height <= budget:
        return width, height
    scale = math.sqrt(budget / (width * height))
    w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    if w * h > budget:  # only when a side was clamped to 1 (a 1-pixel line longer than the budget)
        w, h = (budget, 1) if h == 1 else (1, budget)
    return w, h


def downscale(img: Image.Image, budget: int | None, source: tuple[int, int] | None = None) -> Image.Image:
    """``img`` resized (bicubic) to the budget size of ``source`` = (W, H), the image's size
    before any budget or reduced decode (default: its own size or its record), which it then
    records; returned as is when nothing changes. Never upscales."""
    source = tuple(source) if source else source_size_wh(img)
    size = budget_size(*source, budget)
    if size[0] > img.width or size[1] > img.height:  # already below the budget size of its source
        size = budget_size(img.width, img.height, budget)
    out = img if size == img.size else img.resize(size, Image.BICUBIC, reducing_gap=3.0)
    if source != out.size:
        out.info[_SOURCE_KEY], out.info[_SIZE_KEY] = source, out.size
    return out


def keep_record(src: Image.Image, out: Image.Image) -> Image.Image:
    """Carry ``src``'s budget record over to ``out`` (a converted copy of the same pixels)."""
    if src.info.get(_SIZE_KEY) == src.size and out.size == src.size:
        out.info[_SOURCE_KEY], out.info[_SIZE_KEY] = src.info[_SOURCE_KEY], src.info[_SIZE_KEY]
    return out


def source_size_wh(img: Image.Image) -> tuple[int, int]:
    """(W, H) the image had before the pixel budget downscaled it (its own size otherwise)."""
    if img.info.get(_SIZE_KEY) == img.size and _SOURCE_KEY in img.info:
        w, h = img.info[_SOURCE_KEY]
        return int(w), int(h)
    return img.size


def source_size(img: Image.Image) -> tuple[int, int]:
    """(height, width), anyres' order, of the image before the pixel budget: the size the crop
    grid and the token count are chosen from (docs/architecture.md §2.3 step 1)."""
    w, h = source_size_wh(img)
    return h, w
