"""What detection returns: one image's score, verdict threshold and anomaly maps (paper §3.2).

:class:`Detection` is the result of ``AnomalyOV.detect`` for every method (the expert and the
training-free scorers of :mod:`adkit.zeroshot`); :func:`image_maps` turns per-tile patch maps
back into maps at the image's own resolution, undoing the processor's anyres tiling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .anyres import fit_size


@dataclass
class Detection:
    """One image's anomaly score and map from the tower alone (no LLM run), by one method."""

    score: float  # in [0, 1]; anomalous iff score >= threshold
    anomaly_map: np.ndarray  # [H, W] at the input image's resolution (base and crop maps averaged)
    base_map: np.ndarray  # [H, W] base-view map, resized
    crop_map: np.ndarray | None  # [H, W] crop maps stitched, padding removed, resized; None: base view only
    grid_shape: tuple[int, int]  # (rows, cols) of crops; (0, 0) when only the base view was scored
    method: str = "expert"  # "expert" | "self" | "mutual" | "expert+self" (adkit.zeroshot.METHODS)
    threshold: float = 0.5  # the verdict threshold of this method (model.calibration)
    calibrated: bool = False  # threshold chosen on validation data (else the 0.5 default)

    @property
    def is_anomalous(self) -> bool:
        return bool(self.score >= self.threshold)


def image_maps(tile_maps: torch.Tensor, layout, size: tuple[int, int], tile_size: int):
    """Tile maps [1 + rows·cols, g, g] of one image → (base, crop) maps [H, W] at ``size`` = (H, W).

    The base view covers the whole image; the crops are stitched into their canvas, upsampled
    to pixels, stripped of the black padding the processor added (the same ``fit_size`` box) and
    resized to the image. With a single tile, crop is None.
    """
    base = F.interpolate(tile_maps[:1, None].float(), size, mode="bilinear", align_corners=False)[0, 0]
    if tile_maps.shape[0] == 1:
        return base, None
    rows, cols = layout.grid_shape
    g, s = tile_maps.shape[-1], tile_size
    canvas = tile_maps[1:].float().view(rows, cols, g, g).permute(0, 2, 1, 3).reshape(rows * g, cols * g)  # [r, c, g, g] → [r·g, c·g]
    canvas = F.interpolate(canvas[None, None], (rows * s, cols * s), mode="bilinear", align_corners=False)[0, 0]
    h, w = layout.image_size
    nh, nw = fit_size(h, w, (rows * s, cols * s))
    top, left = (rows * s - nh) // 2, (cols * s - nw) // 2
    crop = canvas[top:top + nh, left:left + nw]
    return base, F.interpolate(crop[None, None], size, mode="bilinear", align_corners=False)[0, 0]
