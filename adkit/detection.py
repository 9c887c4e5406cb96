"""What detection returns: one image's score, verdict threshold and anomaly maps (paper §3.3–3.5).

:class:`Detection` is the result of ``AnomalyOV.detect`` for every method (the expert and the
training-free scorers of :mod:`adkit.zeroshot`); :func:`image_maps` turns per-tile patch maps
back into maps at the image's own resolution, undoing the processor's anyres tiling;
:func:`score_images` is the work behind ``AnomalyOV.detect`` once its arguments are checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .anyres import fit_size
from .images import load_image


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


def score_images(model, images, method: str, reference=None, image_size=None) -> list[Detection]:
    """``AnomalyOV.detect``'s work on loaded images (its arguments already checked): scores and
    maps by ``method`` (paper §3.3–3.5 for the expert, :mod:`adkit.zeroshot` for the others)."""
    if reference and method != "mutual":
        raise ValueError(f"reference images are only used by method='mutual', not {method!r}")
    if image_size is not None and method not in ("self", "mutual"):
        raise ValueError(f"image_size applies to the training-free methods, not {method!r} (its tiles are fixed)")
    if method == "mutual":
        return score_mutual(model, images, [load_image(r) for r in reference or []], image_size)
    return score_inductive(model, images, (method,), image_size)[method]


INDUCTIVE = ("expert", "self", "expert+self")  # the single-image methods: one tower pass serves them all


def score_inductive(model, images, methods, image_size=None) -> dict[str, list[Detection]]:
    """{method: detections} for several single-image ``methods`` from **one** tower pass over the
    images' tiles (the expert and self read the same features; expert+self reuses both)."""
    methods = tuple(dict.fromkeys(methods))
    if not methods or any(m not in INDUCTIVE for m in methods):
        raise ValueError(f"score_inductive: methods must be among {INDUCTIVE}, got {methods}")
    need_self = any(m != "expert" for m in methods)
    if image_size is not None:  # self on one larger base view
        feats = model.features(model.processor.base_views(images, image_size), extra=model.config.self_levels)
        split, layouts = [1] * len(images), [None] * len(images)
    else:
        batch = model.processor.images(images)
        feats = model.features(batch.pixel_values, extra=model.config.self_levels if need_self else ())
        split = batch.split_sizes.tolist()
        layouts = [model.processor.layout(h, w) for h, w in batch.image_sizes.tolist()]
    g = feats.grid
    made = {}
    if "expert" in methods or "expert+self" in methods:
        out = model.expert(feats.final, feats.levels, split)
        made["expert"] = (out.anomaly_maps, out.scores)
    if need_self:
        s_maps, s_scores = model.self_similarity(feats, split)
        made["self"] = (s_maps.reshape(-1, g, g), s_scores)  # [N, P] → [N, g, g]
    if "expert+self" in methods:
        (e_maps, e_scores), (s_maps, s_scores) = made["expert"], made["self"]
        p_self = model.calibration.get("self").probability
        p_exp = model.calibration.get("expert").probability
        maps = (e_maps + torch.as_tensor(p_self(s_maps.cpu().numpy()), dtype=e_maps.dtype, device=e_maps.device)) / 2
        made["expert+self"] = (maps, torch.as_tensor((p_exp(e_scores.cpu().numpy()) + p_self(s_scores.cpu().numpy())) / 2))
    return {m: _detections(model, images, layouts, split, *made[m], m) for m in methods}


def _detections(model, images, layouts, split, maps, scores, method) -> list[Detection]:
    cal = model.calibration.get(method)
    results = []
    for img, lay, m, score in zip(images, layouts, maps.split(split), scores.tolist()):
        base, crop = image_maps(m, lay, (img.height, img.width), model.config.geometry.tile_size)
        results.append(Detection(
            score=float(score), anomaly_map=(base if crop is None else (base + crop) / 2).cpu().numpy(),
            base_map=base.cpu().numpy(), crop_map=None if crop is None else crop.cpu().numpy(),
            grid_shape=(0, 0) if lay is None else lay.grid_shape, method=method,
            threshold=cal.threshold, calibrated=model.calibration.is_calibrated(method)))
    return results


def score_mutual(model, images, reference, image_size) -> list[Detection]:
    """MuSc mutual scoring: each image against the others and ``reference`` (transductive)."""
    from .zeroshot.scores import mutual_map

    everything = images + reference
    if len(everything) < 2:
        raise ValueError("method='mutual' scores each image against the others: give at least two images "
                         "(several to score, or reference=[...] unlabeled images of the same kind)")
    levels = model.config.mutual_levels
    states = model.base_view_features(everything, levels, image_size)
    patch = mutual_map([states[i] for i in levels], num_queries=len(images))  # [B, P]: references unscored
    g = math.isqrt(patch.shape[1])
    cal = model.calibration.get("mutual")
    results = []
    for img, m in zip(images, patch):
        base, _ = image_maps(m.reshape(1, g, g), None, (img.height, img.width), model.config.geometry.tile_size)
        results.append(Detection(score=float(m.max()), anomaly_map=base.cpu().numpy(), base_map=base.cpu().numpy(),
                                 crop_map=None, grid_shape=(0, 0), method="mutual", threshold=cal.threshold,
                                 calibrated=model.calibration.is_calibrated("mutual")))
    return results
