"""Defect synthesis: paint a localised anomaly with its exact mask onto a normal image.

Why: the paper's expert is trained on real defect masks (MVTec AD / Anomaly-Instruct, docs/architecture.md §5),
which may not be redistributed. Synthetic anomalies give license-clean, pixel-exact ground truth
for training, tests and notebooks. Eight families cover the usual industrial defect types plus the
two self-supervised recipes the field leans on: CutPaste (Li et al., CVPR 2021: a patch moved
elsewhere, possibly rotated/jittered) and DRAEM (Zavrtanik et al., ICCV 2021: a Perlin-noise mask
blending an outside texture in).

Contract of :func:`synthesize` (tested in tests/test_synth.py): deterministic given the seed; the
mask is non-empty, its ``bbox`` is the mask's pixel box (exclusive x1/y1); pixels outside the mask
are byte-identical to the input; pixels inside visibly change; with ``foreground`` the mask stays
on the object. Everything is vectorised numpy (noise, blending, warps via coordinate maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import transform

from .noise import _bezier, _blob, _stroke, _walk, fractal_noise, perlin_noise  # noqa: F401 (re-exported)

__all__ = [
    "DEFECT_FAMILIES", "SEVERITIES", "LOCATION_GRID", "Defect", "synthesize", "random_defect",
    "location_phrase", "perlin_noise",
]

DEFECT_FAMILIES: tuple[str, ...] = (
    "scratch", "crack", "hole", "stain", "contamination", "deformation", "cutpaste", "perlin",
)
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "severe")
#: rows top→bottom, columns left→right, chosen by the bbox centre (:func:`location_phrase`).
LOCATION_GRID = (
    ("upper left", "along the top edge", "upper right"),
    ("along the left edge", "near the centre", "along the right edge"),
    ("lower left", "along the bottom edge", "lower right"),
)
# Defect extent as a fraction of the shorter image side, and a contrast factor, per severity.
_EXTENT = {"mild": (0.05, 0.08), "moderate": (0.09, 0.13), "severe": (0.15, 0.22)}
_CONTRAST = {"mild": 0.6, "moderate": 0.8, "severe": 1.0}


@dataclass
class Defect:
    """One synthesized anomaly: the defective image, its mask and a description of it."""

    image: Image.Image
    mask: np.ndarray  # bool (H, W), True = defect
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    defect: str
    location: str
    severity: str
    area: float  # mask fraction of the image


# ---------------------------------------------------------------- families
# Each takes (img float (H, W, 3), ctx) and returns (new image float (H, W, 3), alpha (H, W)).
class _Ctx:
    def __init__(self, img, rng, severity, fg):
        self.rng, self.severity, self.fg = rng, severity, fg
        self.shape = img.shape[:2]
        side = min(self.shape)
        self.extent = rng.uniform(*_EXTENT[severity]) * side  # defect "radius" in px
        self.contrast = _CONTRAST[severity]
        self.centre = self._pick_centre(int(self.extent * 0.6))

    def _pick_centre(self, margin: int) -> np.ndarray:
        h, w = self.shape
        if self.fg is not None:
            inner = ndimage.binary_erosion(self.fg, iterations=max(1, margin)) if margin else self.fg
            ys, xs = np.nonzero(inner if inner.any() else self.fg)
            i = self.rng.integers(len(ys))
            return np.array([ys[i], xs[i]], float)
        m = min(margin, h // 4, w // 4)
        return np.array([self.rng.uniform(m, h - m), self.rng.uniform(m, w - m)])


def _line_colour(img, alpha, ctx, bright: bool) -> np.ndarray:
    base = img[alpha > 0.5].mean(0) if (alpha > 0.5).any() else img.mean((0, 1))
    k = ctx.contrast * ctx.rng.uniform(0.6, 0.9)
    return base + (255 - base) * k if bright else base * (1 - k)


def _scratch(img, ctx):
    n = 1 + (ctx.rng.random() < 0.3) + (ctx.severity == "severe")
    paths = [_bezier(ctx.centre + ctx.rng.normal(0, ctx.extent * 0.3, 2), ctx.extent * 2.2, ctx.rng)
             for _ in range(n)]
    alpha = _stroke(ctx.shape, paths, {"mild": 1.2, "moderate": 1.8, "severe": 2.6}[ctx.severity])
    colour = _line_colour(img, alpha, ctx, bright=ctx.rng.random() < 0.6)
    return np.broadcast_to(colour, img.shape), alpha


def _crack(img, ctx):
    rng = ctx.rng
    trunk = _walk(ctx.centre, rng.uniform(0, 2 * np.pi), ctx.extent * 2.4, rng)
    trunk -= (trunk[-1] - trunk[0]) / 2  # centre the crack on the picked point
    branches = []
    for _ in range(rng.integers(1, 4)):
        node = trunk[rng.integers(4, len(trunk) - 4)]
        head = rng.uniform(0, 2 * np.pi)
        branches.append(_walk(node, head, ctx.extent * rng.uniform(0.4, 0.9), rng, steps=10, wiggle=0.4))
    width = {"mild": 1.5, "moderate": 2.2, "severe": 3.0}[ctx.severity]
    alpha = np.maximum(_stroke(ctx.shape, [trunk], width), _stroke(ctx.shape, branches, width * 0.6))
    return img * (1 - 0.8 * ctx.contrast) * rng.uniform(0.6, 1.0), alpha


def _hole(img, ctx):
    r = ctx.extent * ctx.rng.uniform(0.6, 0.9)
    alpha = _blob(ctx.shape, ctx.centre, (r, r * ctx.rng.uniform(0.7, 1.3)), ctx.rng, rough=0.2, soft=2.0)
    if ctx.fg is not None and (~ctx.fg).any():  # see through to the background
        fill = np.median(img[~ctx.fg], 0)
    else:  # a dark cavity
        fill = np.full(3, ctx.rng.uniform(10, 40))
    depth = ndimage.distance_transform_edt(alpha > 0.5)  # px from the rim, inside
    shade = 0.45 + 0.55 * np.clip(depth / max(2.0, r * 0.35), 0, 1)  # soft inner shadow at the rim
    return fill * shade[..., None], alpha


def _stain(img, ctx):
    rng = ctx.rng
    r = ctx.extent * rng.uniform(0.8, 1.2)
    alpha = _blob(ctx.shape, ctx.centre, (r, r * rng.uniform(0.6, 1.4)), rng, rough=0.3, soft=r * 0.3)
    alpha = alpha * (0.8 + 0.2 * perlin_noise(ctx.shape, 6, rng))
    tints = np.array([[110, 70, 30], [200, 170, 60], [50, 50, 55], [150, 60, 25], [90, 110, 60]], float)
    mean = img[alpha > 0.5].mean(0) if (alpha > 0.5).any() else img.mean((0, 1))
    far = np.linalg.norm(tints - mean, axis=1) > 70
    tint = tints[rng.choice(np.flatnonzero(far))] if far.any() else 255 - mean
    strength = ctx.contrast * rng.uniform(0.45, 0.7)
    return img * (1 - strength) + tint * strength, alpha


def _contamination(img, ctx):
    rng = ctx.rng
    colour = rng.uniform(0, 255, 3)
    if rng.random() < 0.5:  # a fibre / hair
        path = _walk(ctx.centre, rng.uniform(0, 2 * np.pi), ctx.extent * 2.5, rng, wiggle=0.25)
        path -= (path[-1] - path[0]) / 2
        alpha = _stroke(ctx.shape, [path], rng.uniform(1.2, 2.2))
        colour = colour * 0.4 if rng.random() < 0.5 else colour
    else:  # a particle / blob of foreign material
        r = ctx.extent * rng.uniform(0.35, 0.6)
        alpha = _blob(ctx.shape, ctx.centre, (r, r * rng.uniform(0.6, 1.4)), rng, rough=0.35, soft=1.2)
    texture = 0.7 + 0.3 * perlin_noise(ctx.shape, max(4, min(ctx.shape) / 8), rng)
    return colour * texture[..., None], alpha


def _deformation(img, ctx):
    """A local bulge, pinch or swirl: resample the image through a displaced coordinate map."""
    rng = ctx.rng
    h, w = ctx.shape
    R = ctx.extent * 1.4
    cy, cx = ctx.centre
    y0, y1 = max(0, int(cy - R)), min(h, int(np.ceil(cy + R)) + 1)  # work in the disc's box only
    x0, x1 = max(0, int(cx - R)), min(w, int(np.ceil(cx + R)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)  # (2, bh, bw)
    dy, dx = yy - cy, xx - cx
    t = np.clip(1 - (dy**2 + dx**2) / R**2, 0, 1) ** 2  # (bh, bw) falloff, 1 at centre
    kind = rng.choice(["bulge", "pinch", "swirl"])
    k = ctx.contrast * rng.uniform(0.45, 0.6)
    if kind == "swirl":
        phi = t * k * np.pi
        sy = cy + dy * np.cos(phi) - dx * np.sin(phi)
        sx = cx + dy * np.sin(phi) + dx * np.cos(phi)
    else:
        s = 1 - k * t if kind == "bulge" else 1 + k * t
        sy, sx = cy + dy * s, cx + dx * s
    warped = np.stack([ndimage.map_coordinates(img[..., c], [sy, sx], order=1, mode="nearest")
                       for c in range(3)], -1)  # (bh, bw, 3)
    light = rng.uniform(0, 2 * np.pi)  # a dent catches light on one side, shadow on the other
    shade = 1 + 1.2 * ctx.contrast * t * (np.cos(light) * dx + np.sin(light) * dy) / R
    new, alpha = img.copy(), np.zeros(ctx.shape)
    new[y0:y1, x0:x1] = warped * shade[..., None] + (shade[..., None] - 1) * 60  # visible on dark parts too
    alpha[y0:y1, x0:x1] = (t > 0.04).astype(float)
    return new, alpha


def _cutpaste(img, ctx):
    rng = ctx.rng
    h, w = ctx.shape
    if rng.random() < 0.3:  # "scar": a thin long strip
        ph, pw = rng.uniform(2, 4) * (1 + ctx.contrast), ctx.extent * 2.2
    else:
        area = (ctx.extent * 1.6) ** 2
        aspect = rng.uniform(0.3, 3.3)
        ph, pw = np.sqrt(area * aspect), np.sqrt(area / aspect)
    ph, pw = int(np.clip(ph, 2, h - 1)), int(np.clip(pw, 2, w - 1))
    y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = img[y0:y0 + ph, x0:x0 + pw]
    angle = rng.uniform(-45, 45)
    patch = transform.rotate(patch / 255, angle, resize=True, order=1, mode="edge") * 255
    foot = transform.rotate(np.ones((ph, pw)), angle, resize=True, order=0) > 0.5
    patch = (patch - patch.mean((0, 1))) * rng.uniform(0.8, 1.25) + patch.mean((0, 1)) \
        + rng.choice([-1, 1]) * rng.uniform(15, 40) * ctx.contrast  # colour jitter
    new, alpha = img.copy(), np.zeros(ctx.shape)
    top = int(ctx.centre[0]) - foot.shape[0] // 2
    left = int(ctx.centre[1]) - foot.shape[1] // 2
    ys, xs = np.nonzero(foot)
    ty, tx = ys + top, xs + left
    ok = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    new[ty[ok], tx[ok]] = patch[ys[ok], xs[ok]]
    alpha[ty[ok], tx[ok]] = 1.0
    return new, alpha


def _texture_source(img, rng) -> np.ndarray:
    """DRAEM-style outside texture: colourised fractal noise or a transformed copy of the image."""
    if rng.random() < 0.5:
        n = fractal_noise(img.shape[:2], rng.uniform(4, 12), rng)[..., None]  # (h, w, 1)
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        return c0 + (c1 - c0) * (n + 1) / 2
    src = img[::-1, ::-1]
    op = rng.integers(3)
    if op == 0:
        return 255 - src
    if op == 1:
        return np.floor(src / 64) * 64 + 32  # posterise
    return src[..., rng.permutation(3)] * 0.6 + 50  # channel shuffle, lowered contrast


def _perlin(img, ctx):
    rng = ctx.rng
    noise = perlin_noise(ctx.shape, 2 ** rng.integers(2, 5), rng)
    yy, xx = np.ogrid[: ctx.shape[0], : ctx.shape[1]]
    R = ctx.extent * 1.5
    window = np.exp(-((yy - ctx.centre[0]) ** 2 + (xx - ctx.centre[1]) ** 2) / R**2)  # (h, w)
    alpha = ((noise * 0.5 + 0.5) * window > 0.35).astype(float)
    if not alpha.any():  # the window missed the noise peaks: fall back to the window itself
        alpha = (window > 0.5).astype(float)
    beta = rng.uniform(0.5, 0.9) * ctx.contrast
    return img * (1 - beta) + _texture_source(img, rng) * beta, alpha


_FAMILIES: dict[str, Callable] = {
    "scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain,
    "contamination": _contamination, "deformation": _deformation, "cutpaste": _cutpaste,
    "perlin": _perlin,
}
assert tuple(_FAMILIES) == DEFECT_FAMILIES


# ---------------------------------------------------------------- public API
def location_phrase(bbox: Sequence[int], size: Sequence[int]) -> str:
    """Where the bbox centre falls on a 3×3 grid of the image; ``size`` = (width, height)."""
    x0, y0, x1, y1 = bbox
    width, height = size
    col = min(int((x0 + x1) / 2 / width * 3), 2)
    row = min(int((y0 + y1) / 2 / height * 3), 2)
    return LOCATION_GRID[max(row, 0)][max(col, 0)]


def _as_rgb(image) -> np.ndarray:
    from ..images import load_image

    return np.asarray(load_image(image), dtype=np.uint8)


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def synthesize(image, family: str, seed, *, severity: str | None = None,
               foreground: np.ndarray | None = None) -> Defect:
    """Paint one ``family`` defect on ``image`` (PIL or uint8 array, any mode → RGB).

    ``seed``: int or ``np.random.Generator``; the same int gives byte-identical output.
    ``severity``: "mild" | "moderate" | "severe" (random if None) — sets size and contrast.
    ``foreground``: optional bool (H, W) mask; the defect is placed on it and clipped to it.
    """
    if family not in _FAMILIES:
        raise ValueError(f"unknown defect family {family!r}; valid families: {', '.join(DEFECT_FAMILIES)}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; valid: {', '.join(SEVERITIES)}")
    base = _as_rgb(image)
    h, w = base.shape[:2]
    if min(h, w) < 16:
        raise ValueError(f"image too small for defect synthesis: {w}x{h} (need at least 16x16)")
    fg = None
    if foreground is not None:
        fg = np.asarray(foreground).astype(bool)
        if fg.shape != (h, w):
            raise ValueError(f"foreground mask shape {fg.shape} does not match the image ({h}, {w})")
        if not fg.any():
            raise ValueError("foreground mask is empty: nowhere to place a defect")
    rng = _rng(seed)
    sev = severity or SEVERITIES[rng.integers(3)]
    img = base.astype(float)
    best = None
    for _ in range(8):  # resample (deterministically) until the defect is visible
        ctx = _Ctx(img, rng, sev, fg)
        new, alpha = _FAMILIES[family](img, ctx)
        mask = alpha > 0.2
        if fg is not None:
            mask &= fg
        if not mask.any():
            continue
        a = np.where(mask, alpha, 0.0)[..., None]  # (h, w, 1)
        out = np.clip(np.rint(img * (1 - a) + new * a), 0, 255).astype(np.uint8)
        out[~mask] = base[~mask]
        diff = np.abs(out.astype(int) - base).max(-1)[mask]
        score = diff.mean() * (diff > 0).mean()
        if best is None or score > best[0]:
            best = (score, out, mask)
        if diff.mean() >= 10 and (diff > 0).mean() >= 0.75:
            break
    if best is None:
        raise ValueError(f"could not place a {family} defect inside the foreground mask")
    _, out, mask = best
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Defect(Image.fromarray(out), mask, bbox, family, location_phrase(bbox, (w, h)), sev,
                  float(mask.mean()))


def random_defect(image, seed, *, families: Sequence[str] = DEFECT_FAMILIES,
                  foreground: np.ndarray | None = None) -> Defect:
    """A defect of a family drawn uniformly from ``families`` (deterministic given ``seed``)."""
    families = tuple(families)
    if not families:
        raise ValueError("families is empty; valid families: " + ", ".join(DEFECT_FAMILIES))
    rng = _rng(seed)
    return synthesize(image, families[rng.integers(len(families))], rng, foreground=foreground)
