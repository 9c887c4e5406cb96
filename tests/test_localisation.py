"""adkit.eval.localisation: AUPRO against a from-scratch reference and hand-derived cases; AP, PR curve
and pixel F1-max against scikit-learn; clear errors for masks and maps that cannot be scored."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import sklearn.metrics as sk
from hypothesis import given, settings
from hypothesis import strategies as st

from adkit.eval.localisation import (
    aupro, average_precision, label_regions, pixel_average_precision, pixel_f1_max, pixel_metrics,
    precision_recall_curve, pro_curve,
)

TOL = 1e-12


# ---------------------------------------------------------------------------- a from-scratch reference

def _regions_by_flood_fill(mask: np.ndarray, connectivity: int) -> list[list[tuple[int, int]]]:
    """Connected regions of a 2-D bool mask by breadth-first flood fill (no scipy)."""
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    seen = np.zeros(mask.shape, bool)
    regions = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        region, todo = [], deque([start])
        while todo:
            r, c = todo.popleft()
            region.append((r, c))
            for dr, dc in steps:
                q = (r + dr, c + dc)
                if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and not seen[q]:
                    seen[q] = True
                    todo.append(q)
        regions.append(region)
    return regions


def reference_pro_points(masks, maps, connectivity=8) -> list[tuple[float, float]]:
    """The PRO curve the slow way: at every distinct map value t, the overlap of each region and
    the FPR counted pixel by pixel; the points (FPR, mean overlap) from (0, 0), t decreasing."""
    masks = [np.asarray(m) != 0 for m in masks]
    regions = [(i, reg) for i, m in enumerate(masks) for reg in _regions_by_flood_fill(m, connectivity)]
    n_normal = sum(int((~m).sum()) for m in masks)
    points = [(0.0, 0.0)]
    for t in sorted({float(v) for a in maps for v in np.ravel(a)}, reverse=True):
        overlaps = [sum(maps[i][p] >= t for p in reg) / len(reg) for i, reg in regions]
        false_pos = sum(int(((a >= t) & ~m).sum()) for m, a in zip(masks, maps))
        points.append((false_pos / n_normal, sum(overlaps) / len(overlaps)))
    return points


def reference_area(points, limit=0.3) -> float:
    """Trapezoids up to the limit, the last one cut at exactly the limit by linear interpolation;
    divided by the limit."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            if x0 < limit:
                y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area += (limit - x0) * (y0 + y_cut) / 2
            break
    return area / limit


def _random_case(rng, n=4, h=12, w=15, levels=None):
    """Masks of a few random rectangles plus sprinkled pixels (diagonal neighbours happen), one
    all-normal image; maps noisy and raised on the masks, or integers in ``levels`` (many ties)."""
    masks, maps = [], []
    for i in range(n):
        m = np.zeros((h, w), bool)
        if i:  # image 0 is normal
            for _ in range(rng.integers(1, 4)):
                r, c = rng.integers(0, h - 2), rng.integers(0, w - 2)
                m[r:r + rng.integers(1, 4), c:c + rng.integers(1, 5)] = True
            m |= rng.random((h, w)) < 0.05
        a = rng.integers(0, levels, (h, w)).astype(float) if levels else rng.normal(size=(h, w)) + 1.5 * m
        masks.append(m)
        maps.append(a)
    return masks, maps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 5])
def test_aupro_equals_the_reference_on_random_masks(seed, levels):
    masks, maps = _random_case(np.random.default_rng(seed), levels=levels)
    for conn in (8, 4):
        points = reference_pro_points(masks, maps, conn)
        for limit in (0.3, 0.05, 1.0):
            assert aupro(masks, maps, limit, conn) == pytest.approx(reference_area(points, limit), abs=1e-12)


def test_the_reference_and_aupro_tell_connectivity_and_limits_apart():
    """The comparison above can fail: these settings change the value on a random case."""
    masks, maps = _random_case(np.random.default_rng(1))
    values = {aupro(masks, maps, 0.3, 8), aupro(masks, maps, 0.3, 4), aupro(masks, maps, 0.1, 8)}
    assert len(values) == 3


# ---------------------------------------------------------------------------- hand-computed cases

def _square_mask():
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True  # one 2×2 region: 4 anomalous, 12 normal pixels
    return m


def test_a_perfect_map_scores_one_and_an_inverted_map_zero():
    m = _square_mask()
    # perfect: at t = 1 every region is found (PRO 1) with FPR 0; the curve (0,0)-(0,1)-(1,1) -> 1
    assert aupro([m], [m.astype(float)]) == 1.0
    # inverted: at t = 1 all 12 normal pixels and no region pixel are flagged (FPR 1, PRO 0), then
    # t = 0 adds the region: (0,0)-(1,0)-(1,1), area 0 below FPR 0.3
    assert aupro([m], [1.0 - m]) == 0.0


def test_two_regions_one_found_one_missed():
    m = np.zeros((8, 8), bool)
    m[0:2, 0:2] = True  # region A
    m[5:7, 5:8] = True  # region B, not touching A
    a = np.full((8, 8), 0.5)
    a[0:2, 0:2] = 1.0  # A found above every normal pixel ...
    a[5:7, 5:8] = 0.0  # ... B below every normal pixel
    # t = 1: PRO = (1 + 0) / 2 = 0.5 at FPR 0; t = 0.5: FPR 1, PRO 0.5; t = 0: (1, 1).
    # Area up to 0.3 = 0.3 · 0.5, normalised: 0.5
    assert aupro([m], [a]) == pytest.approx(0.5, abs=TOL)
    a[a == 0.5] = 0.0  # B tied with the normal pixels: (0,0)-(0,0.5)-(1,1)
    # PRO at FPR 0.3 = 0.5 + 0.5 · 0.3 = 0.65; area = 0.3 · (0.5 + 0.65) / 2 = 0.1725; / 0.3 = 0.575
    assert aupro([m], [a]) == pytest.approx(0.575, abs=TOL)


def test_every_region_counts_the_same_whatever_its_size():
    m = np.zeros((8, 8), bool)
    m[0:4, 0:4] = True  # a 16-pixel region, found
    m[7, 7] = True  # a 1-pixel region, missed
    a = np.full((8, 8), 0.5)
    a[0:4, 0:4] = 1.0
    a[7, 7] = 0.0
    # as in the case above PRO stays 0.5 up to FPR 1, so AUPRO = 0.5, although 16 of the 17
    # anomalous pixels rank above every normal one (pixel AUROC = 16/17 + (1/17)·0 = 0.941)
    assert aupro([m], [a]) == pytest.approx(0.5, abs=TOL)
    assert sk.roc_auc_score(m.ravel(), a.ravel()) == pytest.approx(16 / 17)


def test_connectivity_decides_what_one_region_is():
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = True  # touching at a corner only
    m[4, 3:5] = True  # a separate 2-pixel region
    assert label_regions(m, 8)[1] == 2 and label_regions(m, 4)[1] == 3
    a = np.full((6, 6), 0.5)
    a[m] = 0.0
    a[0, 0] = 1.0  # only (0, 0) found
    # 8-connected: {(0,0),(1,1)} half found, the pair at row 4 missed: PRO = (1/2 + 0) / 2 = 1/4
    # 4-connected: (0,0) found, (1,1) and the pair missed: PRO = (1 + 0 + 0) / 3 = 1/3;
    # in both, PRO is flat from FPR 0 to 1, so AUPRO = PRO
    assert aupro([m], [a], connectivity=8) == pytest.approx(1 / 4, abs=TOL)
    assert aupro([m], [a], connectivity=4) == pytest.approx(1 / 3, abs=TOL)


def test_normal_images_only_add_false_positives():
    m = _square_mask()
    # a normal image whose map is as high as the defect: at t = 1 PRO = 1 and FPR = 16 / (12 + 16) = 4/7.
    # PRO at FPR 0.3 = 0.3 / (4/7) = 0.525; area = 0.3 · 0.525 / 2 = 0.07875; / 0.3 = 0.2625
    assert aupro([m, np.zeros((4, 4))], [m.astype(float), np.ones((4, 4))]) == pytest.approx(0.2625, abs=TOL)
    assert aupro([m, np.zeros((4, 4))], [m.astype(float), np.zeros((4, 4))]) == 1.0  # a quiet normal image


def test_pro_curve_shape_and_invariance():
    masks, maps = _random_case(np.random.default_rng(7))
    fpr, pro, thr = pro_curve(masks, maps)
    assert (fpr[0], pro[0], thr[0]) == (0.0, 0.0, np.inf) and (fpr[-1], pro[-1]) == pytest.approx((1.0, 1.0))
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0) and np.all(np.diff(thr) < 0)
    assert thr.size == 1 + np.unique(np.concatenate([a.ravel() for a in maps])).size
    # only the ranking matters: a strictly increasing transform of the maps changes nothing
    assert aupro(masks, [np.exp(a) * 3 - 7 for a in maps]) == pytest.approx(aupro(masks, maps), abs=TOL)
    # a random map scores about fpr_limit / 2 (PRO ~ FPR)
    rng = np.random.default_rng(0)
    big = [rng.random((64, 64)) < 0.2 for _ in range(8)]
    assert aupro(big, [rng.random((64, 64)) for _ in big]) == pytest.approx(0.15, abs=0.02)


def test_aupro_errors_name_the_problem():
    m = _square_mask()
    with pytest.raises(ValueError, match="at least one anomalous region, but all 2 mask"):
        aupro([np.zeros((4, 4)), np.zeros((4, 4))], [np.ones((4, 4)), np.ones((4, 4))])
    with pytest.raises(ValueError, match="need normal pixels"):
        aupro([np.ones((4, 4))], [np.ones((4, 4))])
    with pytest.raises(ValueError, match=r"pair 1: mask shape \(4, 4\) != map shape \(4, 5\)"):
        aupro([m, m], [m * 1.0, np.zeros((4, 5))])
    bad = m * 1.0
    bad[0, 0], bad[0, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match="pair 0: the map has 1 NaN and 1 infinite"):
        aupro([m], [bad])
    nan_mask = m.astype(float)
    nan_mask[0, 0] = np.nan
    with pytest.raises(ValueError, match="pair 0: the mask has 1 NaN"):
        aupro([nan_mask], [m * 1.0])
    with pytest.raises(ValueError, match="2-D"):
        aupro([m[None]], [m[None] * 1.0])
    with pytest.raises(ValueError, match="2 masks but 1 maps"):
        aupro([m, m], [m * 1.0])
    with pytest.raises(ValueError, match="no masks"):
        aupro([], [])
    for limit in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fpr_limit must be in"):
            aupro([m], [m * 1.0], fpr_limit=limit)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        aupro([m], [m * 1.0], connectivity=6)


# ---------------------------------------------------------------------------- AP, PR, pixel F1-max vs sklearn

@st.composite
def labelled_scores(draw, tied: bool):
    n = draw(st.integers(1, 50))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    y[0] = 1  # AP needs an anomaly; normals may be absent
    if tied:
        s = [float(v) for v in draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))]
    else:
        s = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n))
    perm = draw(st.permutations(range(n)))
    return np.array(y)[perm], np.array(s)[perm]


def _check_pr(y, s):
    assert abs(average_precision(y, s) - sk.average_precision_score(y, s)) <= TOL
    p, r, t = precision_recall_curve(y, s)
    sp, sr, st_ = sk.precision_recall_curve(y, s)
    np.testing.assert_allclose(p, sp[::-1], rtol=0, atol=TOL)
    np.testing.assert_allclose(r, sr[::-1], rtol=0, atol=TOL)
    assert t[0] == np.inf and np.array_equal(t[1:], st_[::-1])


@settings(max_examples=150, deadline=None)
@given(labelled_scores(tied=True))
def test_ap_and_pr_curve_match_sklearn_with_ties(ys):
    _check_pr(*ys)


@settings(max_examples=100, deadline=None)
@given(labelled_scores(tied=False))
def test_ap_and_pr_curve_match_sklearn_on_free_floats(ys):
    _check_pr(*ys)


def test_ap_hand_case_and_errors():
    # scores 0.9 (1), 0.8 (0), 0.7 (1): recall steps 1/2 at precision 1, then 1/2 at precision 2/3
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=TOL)
    with pytest.raises(ValueError, match="at least one anomalous"):
        average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        average_precision([0, 1], [0.1, np.nan])


def test_pixel_ap_and_f1_max_match_sklearn_on_pooled_pixels():
    masks, maps = _random_case(np.random.default_rng(3), n=5, h=20, w=17)
    maps = [np.round(a, 1) for a in maps]  # ties across images
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps])
    assert abs(pixel_average_precision(masks, maps) - sk.average_precision_score(y, s)) <= TOL
    f1, thr = pixel_f1_max(masks, maps)
    p, r, _ = sk.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        sk_f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    assert abs(f1 - sk_f1.max()) <= TOL
    assert abs(sk.f1_score(y, s >= thr) - f1) <= TOL  # the threshold reaches it
    assert pixel_average_precision([m.astype(np.uint8) * 255 for m in masks], maps) == \
        pixel_average_precision(masks, maps)  # any nonzero mask value is anomalous
    with pytest.raises(ValueError, match="pair 2: mask shape"):
        pixel_f1_max(masks, [maps[0], maps[1], maps[2].T, maps[3], maps[4]])


@pytest.mark.parametrize("seed", range(4))
def test_pixel_metrics_equal_the_separate_functions(seed):
    from adkit.eval.metrics import pixel_auroc

    masks, maps = _random_case(np.random.default_rng(seed), n=5, h=16, w=13, levels=None if seed % 2 else 7)
    pm = pixel_metrics(masks, maps, points=50)
    assert pm.auroc == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)  # trapezoid = rank statistic
    assert pm.ap == pixel_average_precision(masks, maps)
    assert (pm.f1_max, pm.threshold) == pixel_f1_max(masks, maps)
    assert pm.aupro == pytest.approx(aupro(masks, maps), abs=1e-15)
    assert pixel_metrics(masks, maps, 0.1, 4).aupro == pytest.approx(aupro(masks, maps, 0.1, 4), abs=1e-15)
    assert set(pm.named()) == {"pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO"}
    for x, y in (pm.roc, pm.pr, pm.pro):  # thinned for plots, ends kept
        assert x.size == y.size <= 50 and x[0] == 0.0 and x[-1] == pytest.approx(1.0)
    assert pm.pro[1][-1] == pytest.approx(1.0) and pm.pr[1][0] == 1.0
    with pytest.raises(ValueError, match="at least one anomalous region"):
        pixel_metrics([np.zeros((3, 3))], [np.ones((3, 3))])
