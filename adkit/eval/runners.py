"""Evaluation runners: the paper's three protocols end to end (paper §4.1; DESIGN §7).

    zero_shot            the expert alone (`model.detect`, batched): image AUROC per class,
                         then macro over classes (paper Table 2); pixel AUROC where masks
                         exist; F1-max; per-sample scores and ROC points kept.
    visa_dr_detection    VisA-D&R detection and multi-turn reasoning (paper Table 4): in
    visa_dr_reasoning    :mod:`adkit.eval.visa_dr_runners`, re-exported here.

Inputs are duck-typed: samples need ``image``, ``label``, ``category`` (`AnomalySample`);
benchmarks need ``detection`` items (``image``, ``label``, ``category``, ``question``) and
``reasoning`` items (``image``, ``category``, ``turns`` = [(question, reference), ...]).
`load_samples` / `load_benchmark` read folders and packages through the data loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import metrics

__all__ = [
    "AVERAGING", "SOURCES", "ZeroShotResult", "DetectionResult", "ReasoningResult", "VisaDRResult",
    "zero_shot", "visa_dr_detection", "detection_summary", "visa_dr_reasoning", "generate_answers", "load_samples",
    "load_benchmark", "turn_kind",
]

AVERAGING = "macro over classes (per-class value, then the unweighted mean of the classes)"
SOURCES = ("elpv", "mvtec", "visa", "folder", "heldout")
_DATASET_NAMES = {"elpv": "ELPV", "mvtec": "MVTec AD", "visa": "VisA", "heldout": "held-out"}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="img", leave=False)


def _preset(model) -> str:
    return getattr(getattr(model, "config", None), "name", None) or type(model).__name__


def _sample_name(s, i: int) -> str:
    return str(getattr(s, "id", "") or (s.image if isinstance(s.image, str) else f"sample {i}"))


def _image(s, i: int) -> Image.Image:
    """The RGB image of a sample or benchmark item; errors name the record."""
    from ..data.records import DataError
    from ..images import load_image

    try:
        img = s.image
        return load_image(Image.fromarray(img) if isinstance(img, np.ndarray) else img)
    except Exception as e:  # noqa: BLE001 — re-raised with the record's name
        raise DataError(f"{_sample_name(s, i)} ({getattr(s, 'category', '?')}): cannot load image: {e}") from e


# ---------------------------------------------------------------------------- zero-shot (Table 2)

@dataclass
class ZeroShotResult:
    """Expert-only detection on a set of samples (paper Table 2 protocol)."""

    dataset: str
    preset: str
    ids: list[str]
    categories: list[str]
    labels: np.ndarray  # [N] 0/1
    scores: np.ndarray  # [N] anomaly_score per sample, in input order
    image_auroc: dict[str, float]  # per class
    image_auroc_macro: float  # macro over classes
    f1_max: dict[str, float]
    f1_max_macro: float
    roc: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # per class (fpr, tpr, thresholds)
    pooled_auroc: float | None  # all images as one pool (not the paper's number; for reference)
    pixel_auroc: dict[str, float] = field(default_factory=dict)  # classes with masks only
    pixel_auroc_macro: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # class → why it has no image AUROC
    averaging: str = AVERAGING
    untrained: tuple = ()  # the model's parts without trained weights (model.untrained) when it ran

    @property
    def n(self) -> int:
        return int(self.labels.size)

    def per_class_rows(self) -> list[dict[str, Any]]:
        cats, y = np.asarray(self.categories), self.labels
        rows = []
        for c in sorted(set(self.categories)):
            sel = cats == c
            rows.append({"class": c, "n": int(sel.sum()), "anomalous": int(y[sel].sum()),
                         "image_auroc": self.image_auroc.get(c), "f1_max": self.f1_max.get(c),
                         "pixel_auroc": self.pixel_auroc.get(c), "note": self.skipped.get(c, "")})
        return rows


def _pixel_pair(s, det, pixel_size: int):
    """(mask, map) at most ``pixel_size`` on the long side; None when the truth is unknown."""
    amap = np.asarray(det.anomaly_map, dtype=np.float32)  # [H, W]
    h, w = amap.shape
    scale = min(1.0, pixel_size / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (W, H) for PIL
    if getattr(s, "mask", None) is not None:
        mask = s.load_mask(size) if hasattr(s, "load_mask") else \
            np.asarray(Image.fromarray((np.asarray(s.mask) > 0).astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    elif int(s.label) == 0:
        mask = np.zeros(size[::-1], dtype=bool)  # a normal image: no anomalous pixel
    else:
        return None  # anomalous without a mask: pixel truth unknown
    if size != (w, h):
        amap = np.asarray(Image.fromarray(amap, mode="F").resize(size, Image.BILINEAR))  # [H', W']
    return mask, amap


def zero_shot(model, samples: Sequence, batch_size: int = 8, progress: bool = True, dataset: str = "custom",
              pixel_size: int = 224) -> ZeroShotResult:
    """Score ``samples`` with the expert alone (`model.detect`, ``batch_size`` images per call).

    Image AUROC and F1-max per class, then macro over classes (paper Table 2). Pixel AUROC
    per class where any sample of the class has a mask (normal images count as all-normal,
    anomalous images without a mask are left out), with maps and masks resized to at most
    ``pixel_size`` px on the long side. A class with only one label is skipped (reason kept
    in ``skipped``); if no class remains, a ValueError says so.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("zero_shot: no samples to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = np.array([int(s.label) for s in samples])
    bad = np.flatnonzero(~np.isin(labels, (0, 1)))
    if bad.size:
        raise ValueError(f"{_sample_name(samples[bad[0]], bad[0])}: label must be 0 or 1, got {labels[bad[0]]}")
    cats = [str(s.category) for s in samples]
    mask_classes = {c for s, c in zip(samples, cats) if getattr(s, "mask", None) is not None}
    scores = np.empty(len(samples))
    pix: dict[str, tuple[list, list]] = {c: ([], []) for c in mask_classes}
    bar = _progress(len(samples), f"zero-shot {dataset}", progress)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = [_image(s, start + k) for k, s in enumerate(chunk)]
        dets = model.detect(images)
        for k, (s, det) in enumerate(zip(chunk, dets)):
            scores[start + k] = float(det.score)
            if cats[start + k] in mask_classes:
                pair = _pixel_pair(s, det, pixel_size)
                if pair is not None:
                    pix[cats[start + k]][0].append(pair[0])
                    pix[cats[start + k]][1].append(pair[1])
        bar.update(len(chunk))
    bar.close()

    c_arr = np.asarray(cats)
    image_auroc, f1, roc, skipped = {}, {}, {}, {}
    for c in sorted(set(cats)):
        sel = c_arr == c
        n_pos = int(labels[sel].sum())
        if n_pos == 0 or n_pos == int(sel.sum()):
            skipped[c] = f"needs both labels, has {n_pos} anomalous and {int(sel.sum()) - n_pos} normal"
            continue
        image_auroc[c] = metrics.auroc(labels[sel], scores[sel])
        f1[c] = metrics.f1_max(labels[sel], scores[sel])[0]
        roc[c] = metrics.roc_curve(labels[sel], scores[sel])
    if not image_auroc:
        raise ValueError(f"zero_shot on {dataset}: no class has both normal and anomalous samples "
                         f"({'; '.join(f'{c}: {r}' for c, r in skipped.items())})")
    pixel = {}
    for c, (masks, maps) in sorted(pix.items()):
        if masks and any(m.any() for m in masks) and not all(m.all() for m in masks):
            pixel[c] = metrics.pixel_auroc(masks, maps)
    both = 0 < labels.sum() < labels.size
    return ZeroShotResult(
        dataset=dataset, preset=_preset(model), ids=[_sample_name(s, i) for i, s in enumerate(samples)],
        categories=cats, labels=labels, scores=scores, image_auroc=image_auroc,
        image_auroc_macro=metrics.macro(image_auroc), f1_max=f1, f1_max_macro=metrics.macro(f1), roc=roc,
        pooled_auroc=metrics.auroc(labels, scores) if both else None, pixel_auroc=pixel,
        pixel_auroc_macro=metrics.macro(pixel) if pixel else None, skipped=skipped,
        untrained=tuple(getattr(model, "untrained", ()) or ()))


def _subsample(samples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def load_samples(source: str, path=None, *, limit: int | None = None, seed: int = 0,
                 categories: Sequence[str] | None = None, per_class: int = 8) -> tuple[str, list]:
    """(dataset name, samples) from a source in `SOURCES`, importing its loader only now.

    ``elpv``: the packaged ELPV set (``limit`` images, seeded); ``mvtec`` / ``visa`` / ``folder``:
    a test split on disk under ``path`` (``limit``: a seeded random subset); ``heldout``: the
    kit's held-out synthetic categories, ``per_class`` images each (half normal).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if source != "elpv" and source != "heldout" and path is None:
        raise ValueError(f"source {source!r} needs a folder path")
    if source == "elpv":
        from ..data.loaders import load_elpv

        return "ELPV", load_elpv(limit=limit, seed=seed)
    if source == "heldout":
        from ..data import normals

        cats = list(categories) if categories else list(normals.categories("test"))
        n_normal = per_class // 2
        samples = normals.make_samples(cats, n_normal, per_class - n_normal, seed)
        return "held-out", _subsample(samples, limit, seed)
    from ..data import loaders

    if source == "mvtec":
        samples = loaders.load_mvtec(path, split="test", categories=categories)
    elif source == "visa":
        samples = loaders.load_visa(path, split="test", categories=categories)
    else:
        from pathlib import Path

        samples = loaders.load_folder(path, category=None if not categories else
                                      categories[0] if len(categories) == 1 else list(categories))
        return Path(path).name or "folder", _subsample(list(samples), limit, seed)
    return _DATASET_NAMES[source], _subsample(list(samples), limit, seed)


# VisA-D&R runners live in their own module; re-exported so ``runners.visa_dr_detection`` works.
from .visa_dr_runners import (  # noqa: E402
    DetectionResult, ReasoningResult, VisaDRResult, detection_summary, generate_answers, load_benchmark,
    turn_kind, visa_dr_detection, visa_dr_reasoning,
)
