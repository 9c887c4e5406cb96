"""Localisation metrics: where in the image is the anomaly? (docs/architecture.md §7).

The paper's zero-shot table (Table 2) is image AUROC; these are the localisation metrics of the
MVTec AD protocol, which the kit reports wherever ground-truth masks exist.

Pure numpy (and scipy's connected-component labelling for AUPRO), like :mod:`adkit.eval.metrics`;
tests/test_localisation.py checks each against scikit-learn or a from-scratch reference.

    average_precision         area under the precision–recall curve as scikit-learn defines it
                              (Σ (R_k − R_{k−1}) P_k over distinct thresholds); image level
    precision_recall_curve    the PR points behind it (for plots)
    pixel_average_precision   the same with every pixel of every image one sample
    pixel_f1_max              best pixel F1 over all thresholds, and that threshold
    pro_curve, aupro          the per-region overlap (PRO) curve and its normalised area up to a
                              false positive rate of 0.3: the MVTec AD localisation metric
    pixel_metrics             all pixel metrics (and thinned curves for plots) from one sort

AUPRO: the per-region overlap of Bergmann et al., "Uninformed Students" (CVPR 2020), as the
MVTec AD benchmark reports it (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV
2021: area up to FPR 0.3, normalised). Pixel AUROC rewards large defects: a map that finds one big region and
misses five small ones still scores well. The PRO metric weights every ground-truth region
equally instead. Each mask is split into connected components (8-connectivity here, as the
MVTec AD evaluation code labels them with a 3×3 structuring element of ones; pass
``connectivity=4`` for edge neighbours only). At threshold t:

    PRO(t) = mean over all regions C of every image of |{p in C : map(p) >= t}| / |C|
    FPR(t) = |{normal p : map(p) >= t}| / |{normal p}|      (all images, normal ones included)

The curve (FPR(t), PRO(t)) over every distinct map value, from (0, 0) at t = +inf, is
integrated with the trapezoid rule up to FPR = ``fpr_limit`` (0.3), interpolating linearly at
exactly the limit, and divided by the limit, so a perfect map scores 1 and a random one about
``fpr_limit / 2``. Metric names follow anomalib's (``pixel_AUPRO``, ``pixel_F1Max``, ...): see
:data:`NAMES`.

Conventions as in :mod:`adkit.eval.metrics`: 1 = anomalous = positive, a higher score is more
anomalous, a pixel is predicted anomalous at threshold t iff its score >= t.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from .metrics import _check, _cumulative_counts, f1_max

__all__ = [
    "NAMES", "average_precision", "precision_recall_curve", "pixel_average_precision", "pixel_f1_max",
    "pixel_pairs", "label_regions", "pro_curve", "aupro", "PixelMetrics", "pixel_metrics",
]

# The kit's result keys in anomalib's style: its image_ / pixel_ prefix on the metric's name
# (anomalib's AUROC, F1Max, AUPRO classes; AP = average precision)
NAMES = ("image_AUROC", "image_AP", "image_F1Max", "pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO")


def _needs_positive(y: np.ndarray, what: str) -> None:
    if not y.any():
        raise ValueError(f"{what} needs at least one anomalous (1) sample, got 0 of {y.size}")


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PR points (precision, recall, thresholds), one per distinct score plus a leading (1, 0) at +inf.

    Thresholds are decreasing; point i counts samples with score >= thresholds[i] as anomalous.
    The same points as scikit-learn's ``precision_recall_curve`` (which lists them in reverse,
    thresholds increasing, and leaves out the +inf threshold of its final (1, 0) point).
    """
    y, s = _check(labels, scores)
    _needs_positive(y, "a precision-recall curve")
    fps, tps, thr = _cumulative_counts(y, s)
    precision = tps / (tps + fps)  # [R] tps + fps >= 1 at every distinct score
    recall = tps / tps[-1]  # [R]
    return np.r_[1.0, precision], np.r_[0.0, recall], np.r_[np.inf, thr]


def average_precision(labels, scores) -> float:
    """Average precision: Σ_k (R_k − R_{k−1}) · P_k over the distinct thresholds, decreasing.

    The step-wise area under the PR curve, as scikit-learn's ``average_precision_score``: no
    linear interpolation between PR points (a trapezoidal "AUPR" can differ, and is optimistic).
    A random ranking scores about the share of anomalous samples, not 0.5. Needs at least one
    anomalous sample.
    """
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def pixel_pairs(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validated (mask, map) pairs: [H, W] bool (nonzero = anomalous) and [H, W] float64, finite.

    Sizes may differ between images, not within a pair. Errors name the pair that is wrong.
    """
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if len(masks) == 0:
        raise ValueError("no masks given")
    out = []
    for i, (m, a) in enumerate(zip(masks, maps)):
        m, a = np.asarray(m), np.asarray(a, dtype=np.float64)
        if m.ndim != 2 or a.ndim != 2:
            raise ValueError(f"pair {i}: masks and maps must be 2-D [H, W], got shapes {m.shape} and {a.shape}")
        if m.shape != a.shape:
            raise ValueError(f"pair {i}: mask shape {m.shape} != map shape {a.shape}")
        if m.dtype.kind in "fc" and np.isnan(m).any():
            raise ValueError(f"pair {i}: the mask has {int(np.isnan(m).sum())} NaN value(s); masks must be 0/nonzero")
        if not np.isfinite(a).all():
            raise ValueError(f"pair {i}: the map has {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} "
                             "infinite value(s); maps must be finite")
        out.append((m != 0, a))
    return out


def _flat(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    pairs = pixel_pairs(masks, maps)
    return (np.concatenate([m.ravel() for m, _ in pairs]),  # [sum H*W]
            np.concatenate([a.ravel() for _, a in pairs]))  # [sum H*W]


def pixel_average_precision(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    """Pixel-level AP: every pixel of every image pooled as one sample (maps resized to the masks)."""
    y, s = _flat(masks, maps)
    return average_precision(y, s)


def pixel_f1_max(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """Best pixel F1 over all thresholds (pixels pooled) and the threshold reaching it.

    anomalib's pixel ``F1Max``. The threshold is the one the report uses to draw predicted masks.
    """
    y, s = _flat(masks, maps)
    return f1_max(y, s)


def label_regions(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of a 2-D mask: ([H, W] int labels, 0 = normal, 1..n = regions; n).

    ``connectivity=8``: pixels touching at an edge or a corner are one region (the MVTec AD
    evaluation code's 3×3 structuring element); ``4``: edges only (scipy.ndimage.label's default).
    """
    from scipy import ndimage  # the eval extra's dependency, imported only when regions are needed

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    structure = np.ones((3, 3), dtype=int) if connectivity == 8 else None
    labels, n = ndimage.label(np.asarray(mask) != 0, structure=structure)
    return labels, int(n)


class _Runs(NamedTuple):
    """Cumulative counts at each distinct pixel score, thresholds decreasing (one sort of all pixels)."""

    thresholds: np.ndarray  # [R]
    fps: np.ndarray  # [R] normal pixels with score >= threshold
    tps: np.ndarray  # [R] anomalous pixels with score >= threshold
    pro: np.ndarray  # [R] mean over regions of the share of each region with score >= threshold
    n_normal: int
    n_anomalous: int
    n_regions: int


def _runs(pairs, connectivity: int) -> _Runs:
    """Every normal pixel adds 1 to the false positives and every pixel of region C adds
    1 / (|C| · regions) to the PRO when the threshold falls to its score, so one sort and
    cumulative sums give every threshold's counts (no loop over thresholds)."""
    pro_step, n_regions = [], 0
    for m, _ in pairs:
        labels, n = label_regions(m, connectivity)
        flat = labels.ravel()  # [H*W] 0 = normal, 1..n = region
        sizes = np.bincount(flat, minlength=n + 1).astype(np.float64)  # [n+1]
        step = np.zeros(flat.size)  # [H*W] 1 / |C| on region pixels, 0 on normal ones
        inside = flat > 0
        step[inside] = 1.0 / sizes[flat[inside]]
        pro_step.append(step)
        n_regions += n
    y = np.concatenate([m.ravel() for m, _ in pairs])  # [P] all pixels of all images
    n_anomalous = int(y.sum())
    n_normal = y.size - n_anomalous
    if n_regions == 0:
        raise ValueError(f"pixel metrics need at least one anomalous region, but all {len(pairs)} mask(s) are empty")
    if n_normal == 0:
        raise ValueError(f"pixel metrics need normal pixels (for the false positive rate), but all {len(pairs)} "
                         "mask(s) are anomalous everywhere")
    s = np.concatenate([a.ravel() for _, a in pairs])  # [P]
    order = np.argsort(s)[::-1]  # [P] scores decreasing (order within ties is irrelevant: runs are summed)
    s_desc = s[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_desc)), s.size - 1]  # [R] last pixel of each distinct score
    tps = np.cumsum(y[order])[last_of_run].astype(np.float64)  # [R]
    fps = 1.0 + last_of_run - tps  # [R] pixels so far minus anomalous ones
    pro = np.cumsum(np.concatenate(pro_step)[order])[last_of_run] / n_regions  # [R]
    np.clip(pro, 0.0, 1.0, out=pro)  # rounding of the float sums only
    return _Runs(s_desc[last_of_run], fps, tps, pro, n_normal, n_anomalous, n_regions)


def pro_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray],
              connectivity: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PRO curve (fpr, pro, thresholds): a leading (0, 0) at +inf, then one point per distinct
    map value, thresholds decreasing; the last point is (1, 1)."""
    r = _runs(pixel_pairs(masks, maps), connectivity)
    return np.r_[0.0, r.fps / r.n_normal], np.r_[0.0, r.pro], np.r_[np.inf, r.thresholds]


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y), x non-decreasing from 0, over [0, limit], y linearly
    interpolated at exactly ``limit`` (x must reach it)."""
    k = int(np.searchsorted(x, limit, side="right"))  # x[:k] <= limit < x[k]
    area = float(np.sum(np.diff(x[:k]) * (y[1:k] + y[:k - 1]) / 2.0))
    if k < x.size and x[k - 1] < limit:  # the partial trapezoid from x[k-1] to the limit
        y_lim = y[k - 1] + (y[k] - y[k - 1]) * (limit - x[k - 1]) / (x[k] - x[k - 1])
        area += (limit - x[k - 1]) * (y[k - 1] + y_lim) / 2.0
    return area


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = 0.3,
          connectivity: int = 8) -> float:
    """Normalised area under the PRO curve up to FPR ``fpr_limit``: the MVTec AD "AU-PRO" (0.3).

    ``masks[i]`` is the [H, W] ground truth of image i (nonzero = anomalous; normal images are
    all zero and add only to the FPR), ``maps[i]`` its [H, W] anomaly map resized to the mask.
    In [0, 1]: 1 when every region is found before any normal pixel is flagged. See the module
    docstring for the definition; anomalib calls it ``AUPRO`` (``pixel_AUPRO`` here).
    """
    limit = _limit(fpr_limit)
    fpr, pro, _ = pro_curve(masks, maps, connectivity)
    return _area_to(fpr, pro, limit) / limit


def _limit(fpr_limit) -> float:
    if not (isinstance(fpr_limit, numbers.Real) and 0.0 < fpr_limit <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    return float(fpr_limit)


def _thin(*curve: np.ndarray, points: int) -> tuple[np.ndarray, ...]:
    """At most ``points`` evenly spaced points of a curve, its first and last kept (for plots)."""
    keep = np.unique(np.linspace(0, curve[0].size - 1, min(points, curve[0].size)).round().astype(int))  # [<=points]
    return tuple(c[keep] for c in curve)


@dataclass(frozen=True)
class PixelMetrics:
    """All pixel-level metrics of one set of (mask, map) pairs, from one sort of the pixels.

    ``named()`` gives them under anomalib's names. Curves are thinned to at most ``points``
    points each (for figures; the metrics use every threshold).
    """

    auroc: float
    ap: float
    f1_max: float
    threshold: float  # the pixel F1-max threshold: pixels with score >= threshold are predicted anomalous
    aupro: float
    fpr_limit: float
    connectivity: int
    n_regions: int
    roc: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (fpr, tpr)
    pr: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (recall, precision)
    pro: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (fpr, pro)

    def named(self) -> dict[str, float]:
        return {"pixel_AUROC": self.auroc, "pixel_AP": self.ap, "pixel_F1Max": self.f1_max,
                "pixel_AUPRO": self.aupro}


def pixel_metrics(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = 0.3,
                  connectivity: int = 8, points: int = 400) -> PixelMetrics:
    """Pixel AUROC, AP, F1-max (+ threshold) and AUPRO of the pooled pixels at once.

    The same values as ``metrics.pixel_auroc``, ``pixel_average_precision``, ``pixel_f1_max`` and
    ``aupro`` (tests/test_localisation.py checks each), but with one sort of the pixels instead of
    four. AUROC is the trapezoidal area under the ROC points (equal to the rank statistic).
    """
    limit = _limit(fpr_limit)
    r = _runs(pixel_pairs(masks, maps), connectivity)
    fpr, tpr = np.r_[0.0, r.fps / r.n_normal], np.r_[0.0, r.tps / r.n_anomalous]  # [R+1]
    precision, recall = np.r_[1.0, r.tps / (r.tps + r.fps)], np.r_[0.0, r.tps / r.n_anomalous]  # [R+1]
    f1 = 2.0 * r.tps / (r.tps + r.fps + r.n_anomalous)  # [R] as metrics.f1_max
    best = int(np.argmax(f1))  # first = highest threshold
    pro = np.r_[0.0, r.pro]  # [R+1]
    return PixelMetrics(
        auroc=float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)),
        ap=float(np.sum(np.diff(recall) * precision[1:])),
        f1_max=float(f1[best]), threshold=float(r.thresholds[best]),
        aupro=_area_to(fpr, pro, limit) / limit, fpr_limit=limit, connectivity=connectivity, n_regions=r.n_regions,
        roc=_thin(fpr, tpr, points=points), pr=_thin(recall, precision, points=points),
        pro=_thin(fpr, pro, points=points))
