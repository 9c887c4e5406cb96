"""Defect synthesis (adkit.data.synth): masks, locality, determinism, severity, inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from adkit.data.objects import render_object
from adkit.data.synth import (
    DEFECT_FAMILIES, LOCATION_GRID, SEVERITIES, Defect, location_phrase, perlin_noise,
    random_defect, synthesize,
)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    gray = skdata.brick()[100:260, 50:210]  # (160, 160) real CC0 texture
    return np.stack([gray, gray * 0.9, gray * 0.8], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def obj() -> tuple[np.ndarray, np.ndarray]:
    return render_object("capsule", 160, np.random.default_rng(3))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _check(d: Defect, base: np.ndarray, family: str) -> np.ndarray:
    out = np.asarray(d.image)
    assert d.image.mode == "RGB" and out.shape == base.shape
    assert d.mask.dtype == bool and d.mask.shape == base.shape[:2] and d.mask.any()
    assert d.bbox == _bbox(d.mask)
    assert d.defect == family and d.severity in SEVERITIES
    assert d.area == pytest.approx(d.mask.mean())
    assert d.location == location_phrase(d.bbox, (base.shape[1], base.shape[0]))
    diff = np.abs(out.astype(int) - base).max(-1)
    assert not diff[~d.mask].any(), "pixels outside the mask changed"
    inside = diff[d.mask]
    assert inside.mean() > 5 and (inside > 0).mean() > 0.6, (family, inside.mean(), (inside > 0).mean())
    return diff


@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_family_on_texture(texture, family):
    for seed in range(3):
        _check(synthesize(texture, family, seed), texture, family)


@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_family_on_object_stays_on_foreground(obj, family):
    img, fg = obj
    for seed in range(3):
        d = synthesize(Image.fromarray(img), family, seed, foreground=fg)
        _check(d, img, family)
        assert not (d.mask & ~fg).any(), "defect mask leaves the object"


@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_deterministic(texture, family):
    a = synthesize(texture, family, 7)
    b = synthesize(texture, family, 7)
    c = synthesize(texture, family, 8)
    assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.mask, b.mask)
    assert (a.bbox, a.severity, a.location) == (b.bbox, b.severity, b.location)
    assert a.image.tobytes() != c.image.tobytes()
    g1 = synthesize(texture, family, np.random.default_rng(5))
    g2 = synthesize(texture, family, np.random.default_rng(5))
    assert g1.image.tobytes() == g2.image.tobytes()


@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_severity_orders_area(texture, family):
    mild = np.mean([synthesize(texture, family, s, severity="mild").area for s in range(6)])
    severe = np.mean([synthesize(texture, family, s, severity="severe").area for s in range(6)])
    assert severe > mild, (family, mild, severe)


def test_location_grid():
    size = (300, 150)  # width, height
    assert location_phrase((0, 0, 30, 20), size) == "upper left"
    assert location_phrase((130, 60, 170, 90), size) == "near the centre"
    assert location_phrase((280, 140, 300, 150), size) == "lower right"
    assert location_phrase((140, 0, 160, 10), size) == "along the top edge"
    assert location_phrase((0, 70, 10, 80), size) == "along the left edge"
    assert location_phrase((0, 0, 300, 150), size) == "near the centre"  # whole image
    phrases = {p for row in LOCATION_GRID for p in row}
    assert len(phrases) == 9
    # every grid cell is reachable from a small box at its centre
    for r in range(3):
        for c in range(3):
            x, y = int((c + 0.5) * 100), int((r + 0.5) * 50)
            assert location_phrase((x - 2, y - 2, x + 2, y + 2), size) == LOCATION_GRID[r][c]


def test_location_follows_placement(obj):
    img, _ = obj
    fg = np.zeros(img.shape[:2], bool)
    fg[5:40, 110:155] = True  # force the defect into the upper right
    d = synthesize(img, "stain", 0, foreground=fg)
    assert d.location == "upper right" and not (d.mask & ~fg).any()


def test_input_modes(texture):
    gray = texture[..., 0]
    for image in (gray, Image.fromarray(gray), Image.fromarray(texture).convert("RGBA"),
                  Image.fromarray(texture).convert("P")):
        d = synthesize(image, "scratch", 1)
        assert d.image.mode == "RGB" and d.image.size == (160, 160) and d.mask.any()
    g = np.asarray(synthesize(gray, "crack", 2).image)
    assert g.shape == (160, 160, 3)
    rect = np.zeros((90, 200, 3), np.uint8) + 120  # non-square, flat
    d = synthesize(rect, "hole", 0)
    assert d.mask.shape == (90, 200) and d.image.size == (200, 90)


def test_bad_arguments(texture):
    with pytest.raises(ValueError) as exc:
        synthesize(texture, "dent", 0)
    for name in DEFECT_FAMILIES:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="severity"):
        synthesize(texture, "crack", 0, severity="huge")
    with pytest.raises(ValueError, match="shape"):
        synthesize(texture, "crack", 0, foreground=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="empty"):
        synthesize(texture, "crack", 0, foreground=np.zeros(texture.shape[:2], bool))
    with pytest.raises(ValueError, match="too small"):
        synthesize(texture[:8, :8], "crack", 0)
    with pytest.raises(ValueError, match="valid families"):
        random_defect(texture, 0, families=())


def test_random_defect(texture, obj):
    seen = {random_defect(texture, s).defect for s in range(24)}
    assert len(seen) >= 6 and seen <= set(DEFECT_FAMILIES)
    assert random_defect(texture, 3, families=("crack",)).defect == "crack"
    a, b = random_defect(texture, 11), random_defect(texture, 11)
    assert a.image.tobytes() == b.image.tobytes() and a.defect == b.defect
    img, fg = obj
    d = random_defect(img, 4, foreground=fg)
    assert not (d.mask & ~fg).any()


def test_perlin_noise():
    rng = np.random.default_rng(0)
    n = perlin_noise((64, 96), 4, rng)
    assert n.shape == (64, 96) and n.dtype == np.float64
    assert -1 <= n.min() < -0.2 and 0.2 < n.max() <= 1
    # smooth: neighbouring pixels differ far less than white noise would
    assert np.abs(np.diff(n, axis=1)).mean() < 0.1 * n.std() * 2
    assert np.array_equal(n, perlin_noise((64, 96), 4, np.random.default_rng(0)))
    assert not np.array_equal(n, perlin_noise((64, 96), 4, np.random.default_rng(1)))
    aniso = perlin_noise((50, 70), (2.5, 9.0), rng)  # non-integer, per-axis scale
    assert aniso.shape == (50, 70) and np.isfinite(aniso).all()
    # more lattice cells along x → faster variation along x than along y
    assert np.abs(np.diff(aniso, axis=1)).mean() > np.abs(np.diff(aniso, axis=0)).mean()
