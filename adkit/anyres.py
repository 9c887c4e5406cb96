"""Anyres geometry of LLaVA-OneVision and the one token layout (paper §3, docs/architecture.md §2.3–2.4, §3).

Pure integer geometry: no pixels, no tensors. Both the processor (how many ``<image>``
placeholders to write) and the model (how to pack features) call :func:`image_layout`, so the
two can never disagree. All sizes are (height, width), as in transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import Geometry


#: How :func:`capped_size` rounds the short side: ``"round"`` (the kit's default, nearest
#: integer) or ``"floor"`` (the official Anomaly-OneVision eval scripts and training code:
#: ``int(1024 * short / long)``). They differ for some sizes above the cap (tests/test_anyres.py).
CAP_ROUNDING = ("round", "floor")


def capped_size(height: int, width: int, geometry: Geometry, rounding: str = "round") -> tuple[int, int]:
    """Step 1 of anyres: shrink so the long side is at most ``geometry.max_long_side``.

    ``rounding="round"``: short side ``round(short * cap / long)``; ``"floor"``: the official
    ``int(cap * short / long)``, computed exactly as ``cap * short // long`` (the same integer:
    a quotient of integers this small is never within float error of the next integer). The
    long side becomes ``cap`` either way; the short side is at least 1 (the official code would
    ask PIL for a 0-pixel side at aspects beyond cap:1).
    """
    if rounding not in CAP_ROUNDING:
        raise ValueError(f"unknown cap rounding {rounding!r}; expected one of {CAP_ROUNDING}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}×{width}")
    cap = geometry.max_long_side
    if cap is None or max(height, width) <= cap:
        return height, width
    if rounding == "floor":
        if width > height:  # the official branch order: width > height caps the width, else the height
            return max(1, cap * height // width), cap
        return cap, max(1, cap * width // height)
    scale = cap / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def select_best_resolution(size: tuple[int, int], candidates: list[tuple[int, int]]) -> tuple[int, int]:
    """The candidate (H, W) that keeps the most image pixels, then wastes the least canvas.

    For each candidate, the image is scaled to fit (aspect kept); "effective" pixels are
    those of the scaled image, capped at the original count (upscaling adds nothing). Ties on
    effective pixels go to the smaller wasted area, then to the earlier candidate.
    """
    h, w = size
    best, best_effective, best_waste = None, -1, math.inf
    for ch, cw in candidates:
        scale = min(cw / w, ch / h)
        effective = min(int(w * scale) * int(h * scale), w * h)
        waste = ch * cw - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (ch, cw), effective, waste
    return best


def crop_grid(height: int, width: int, geometry: Geometry) -> tuple[int, int]:
    """(rows, cols) of S×S crops for an image already capped by :func:`capped_size`."""
    bh, bw = select_best_resolution((height, width), geometry.pinpoints)
    return bh // geometry.tile_size, bw // geometry.tile_size


def fit_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """Size of the image resized into ``target`` keeping aspect (filled side exact, other ceil)."""
    th, tw = target
    scale_w, scale_h = tw / width, th / height
    if scale_w < scale_h:  # width fills the canvas
        return min(math.ceil(height * scale_w), th), tw
    return th, min(math.ceil(width * scale_h), tw)


def unpadded_shape(height: int, width: int, rows: int, cols: int, grid: int) -> tuple[int, int]:
    """Token-grid (h, w) left after stripping the black padding of the crop canvas.

    The canvas holds (rows·g) × (cols·g) tokens. Exact integer arithmetic replaces the
    official ``int(orig * scale)``, which agrees except where float error flips a floor.
    """
    cur_h, cur_w = rows * grid, cols * grid
    if width * cur_h > cur_w * height:  # image is wider than the canvas: bands top/bottom
        new_h = height * cur_w // width
        pad = (cur_h - new_h) // 2
        return cur_h - 2 * pad, cur_w
    new_w = width * cur_h // height  # bands left/right (or none)
    pad = (cur_w - new_w) // 2
    return cur_h, cur_w - 2 * pad


@dataclass(frozen=True)
class ImageLayout:
    """Token counts of one image's block in the LLM sequence, in order (docs/architecture.md §3 table).

    ``single_view`` images (multi-image samples) have no crops: their base view is followed
    by one ``image_newline`` and, with the expert, the selected tokens by one more.
    """

    image_size: tuple[int, int]  # (h, w) after the long-side cap
    grid_shape: tuple[int, int]  # (rows, cols) of crops; (0, 0) for a single view
    base_tokens: int  # base-view patch tokens (g²)
    crop_token_shape: tuple[int, int]  # (h, w) of the unpadded crop token grid, before newlines
    crop_tokens: int  # h·(w+1), or 1 newline for a single view
    hint_tokens: int  # the hint phrase "with … suspicious features: "
    global_tokens: int  # 1 global expert token (0 without the expert)
    base_selected_tokens: int  # pool² selected tokens of the base view
    crop_selected_tokens: int  # 2·rows·(2·cols+1), or 1 newline for a single view

    @property
    def num_tiles(self) -> int:
        """Crops the vision tower sees for this image, base view included."""
        return 1 + self.grid_shape[0] * self.grid_shape[1]

    @property
    def visual_tokens(self) -> int:
        return self.base_tokens + self.crop_tokens

    @property
    def expert_tokens(self) -> int:
        return self.global_tokens + self.base_selected_tokens + self.crop_selected_tokens

    @property
    def total(self) -> int:
        return self.visual_tokens + self.hint_tokens + self.expert_tokens

    def segments(self) -> list[tuple[str, int]]:
        """(name, length) of each part of the block, in sequence order; empty parts dropped."""
        parts = [
            ("base_view", self.base_tokens),
            ("crops", self.crop_tokens),
            ("hint", self.hint_tokens),
            ("global_token", self.global_tokens),
            ("base_selected", self.base_selected_tokens),
            ("crop_selected", self.crop_selected_tokens),
        ]
        return [(name, n) for name, n in parts if n]


def image_layout(
    height: int,
    width: int,
    geometry: Geometry,
    *,
    single_view: bool = False,
    expert: bool = True,
    hint_tokens: int = 0,
    cap_rounding: str = "round",
) -> ImageLayout:
    """The one token layout of an image of ``height × width`` pixels (before the cap).

    ``expert=False`` gives plain LLaVA-OneVision (what transformers packs); ``hint_tokens``
    is the token length of the hint phrase in the model's tokenizer (0 without the expert);
    ``cap_rounding`` is :func:`capped_size`'s rounding (``"floor"``: the official protocol).
    """
    h, w = capped_size(height, width, geometry, cap_rounding)
    g, k = geometry.grid, geometry.pool_size
    if not expert:
        hint_tokens = 0
    sel = k * k if expert else 0
    if single_view:
        return ImageLayout((h, w), (0, 0), g * g, (0, 0), 1, hint_tokens,
                           int(expert), sel, int(expert))
    rows, cols = crop_grid(h, w, geometry)
    th, tw = unpadded_shape(h, w, rows, cols, g)
    times = math.sqrt(th * tw / (geometry.max_num_patches * g * g))
    if times > 1.1:  # anyres_max_N: bilinear downscale of the crop token grid
        th, tw = int(th // times), int(tw // times)
    crop_sel = k * rows * (k * cols + 1) if expert else 0
    return ImageLayout((h, w), (rows, cols), g * g, (th, tw), th * (tw + 1), hint_tokens,
                       int(expert), sel, crop_sel)
