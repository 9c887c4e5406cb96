"""Anyres geometry and each preset's token facts, importable without torch or transformers.

:class:`Geometry` is the anyres geometry of one model (:mod:`adkit.config` re-exports it and
builds every preset's from its vision config). ``adkit budget`` and :func:`adkit.token_budget`
need only that geometry and one number the tokenizer decides, the token length of the hint
phrase, so both are kept here per preset and the budget of a preset name is pure arithmetic
(:func:`adkit.anyres.image_layout`): no torch, no transformers, no tokenizer build.

``PRESET_GEOMETRY`` is where the presets' geometry is written (``adkit.config`` builds the
presets from it); ``PRESET_HINT_TOKENS`` caches what the offline tokenizers give, and
``tests/test_budget.py`` fails when it drifts (hint length from the real tokenizer, the tile
and patch sizes of each vision config, the same budgets over many sizes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """Anyres geometry of one model (docs/architecture.md §2.3–2.4). Sizes are (height, width)."""

    tile_size: int  # S: side of the base view and of every crop, in pixels
    patch_size: int  # ViT patch side in pixels
    max_grid: int = 6  # candidate resolutions (i·S, j·S) for i, j in 1..max_grid
    max_long_side: int | None = 1024  # cap applied before anything else
    max_num_patches: int = 9  # "anyres_max_9": downscale the crop grid above 9 tiles' worth
    pool_size: int = 2  # AdaptiveAvgPool2d(pool_size) in the token selector
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def grid(self) -> int:
        """Patch tokens per side of one tile (paper: 384 // 14 = 27)."""
        return self.tile_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per tile (paper: 729)."""
        return self.grid * self.grid

    @property
    def pinpoints(self) -> list[tuple[int, int]]:
        """Candidate (height, width) resolutions, in the order used for tie-breaking."""
        s = self.tile_size
        return [(i * s, j * s) for i in range(1, self.max_grid + 1) for j in range(1, self.max_grid + 1)]


#: Each preset's :class:`Geometry` (its one home: ``adkit.config``'s presets take it from here).
PRESET_GEOMETRY: dict[str, Geometry] = {
    # the paper caps the long side at 1024 = 2.67 tiles; the same ratio at tile 56 is ~149 px
    "tiny": Geometry(tile_size=56, patch_size=8, max_long_side=150),
    # DINOv2 was trained on ImageNet-normalised pixels (SigLIP's 0.5/0.5 would shift them)
    "small": Geometry(tile_size=224, patch_size=14, max_long_side=448,
                      image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)),
    "paper-0.5b": Geometry(tile_size=384, patch_size=14),
    "paper-7b": Geometry(tile_size=384, patch_size=14),
}

#: Tokens of each preset's hint phrase "with {level} suspicious features: " in its tokenizer
#: (Qwen2 for tiny and the paper presets, SmolLM2 for small); every level has the same length,
#: which the processor requires.
PRESET_HINT_TOKENS: dict[str, int] = {"tiny": 6, "small": 6, "paper-0.5b": 6, "paper-7b": 6}
