"""Noise fields and soft shapes the defect families are drawn with (:mod:`adkit.data.synth`).

``perlin_noise`` is classic gradient noise (DRAEM's anomaly masks, docs/architecture.md §5) computed for the
whole grid at once: random unit gradients on a lattice, dot products with the four corner
offsets, quintic fade, bilinear blend — no per-pixel Python loop (benchmarks/bench_data.py
compares it with one). ``fractal_noise`` sums octaves; the private helpers draw blobs, strokes,
random walks and Bézier curves as soft float masks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage import draw

__all__ = ["perlin_noise", "fractal_noise"]


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], scale, rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise in about [-1, 1]; ``scale`` = lattice cells along (y, x) or both.

    Random unit gradients on a (cells+1)² lattice; each pixel dots the four surrounding gradients
    with its offsets and blends them with the quintic fade curve — all as array ops.
    """
    h, w = shape
    sy, sx = (float(scale), float(scale)) if np.isscalar(scale) else map(float, scale)
    angles = rng.uniform(0.0, 2 * np.pi, (int(np.ceil(sy)) + 1, int(np.ceil(sx)) + 1))
    gy, gx = np.sin(angles), np.cos(angles)  # (cy+1, cx+1) each
    y, x = np.arange(h) * (sy / h), np.arange(w) * (sx / w)
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]  # (h, 1), (1, w)

    def corner(dy: int, dx: int) -> np.ndarray:
        iy, ix = (y0 + dy)[:, None], (x0 + dx)[None, :]
        return gy[iy, ix] * (fy - dy) + gx[iy, ix] * (fx - dx)  # (h, w)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return np.clip((top * (1 - v) + bottom * v) * np.sqrt(2), -1.0, 1.0)


def fractal_noise(shape, scale, rng, octaves: int = 4) -> np.ndarray:
    """Sum of Perlin octaves (doubling frequency, halving amplitude), normalised to about [-1, 1]."""
    out = np.zeros(shape)
    for k in range(octaves):
        out += perlin_noise(shape, np.asarray(scale, float) * 2**k, rng) / 2**k
    return out / (2 - 2 ** (1 - octaves))


def _blob(shape, centre, radii, rng, rough=0.25, soft=1.5) -> np.ndarray:
    """Soft alpha (H, W) in [0, 1] of a rotated ellipse with a wavy (random-harmonic) boundary."""
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho = np.sqrt((u / radii[1]) ** 2 + (v / radii[0]) ** 2)  # (h, w), 1 on the ellipse
    theta = np.arctan2(v, u)[..., None]  # (h, w, 1)
    k = np.arange(1, 6)
    amps = rng.normal(0, rough, 5) / k
    boundary = 1 + (amps * np.sin(k * theta + rng.uniform(0, 2 * np.pi, 5))).sum(-1)
    r_mean = (radii[0] + radii[1]) / 2
    return np.clip((boundary - rho) * r_mean / soft + 0.5, 0.0, 1.0)


def _stroke(shape, paths: Sequence[np.ndarray], width: float) -> np.ndarray:
    """Anti-aliased alpha (H, W) of polylines (each (N, 2) as y, x) drawn ``width`` px wide."""
    canvas = np.zeros(shape, bool)
    h, w = shape
    for pts in paths:
        p = np.round(pts).astype(int)
        for (y0, x0), (y1, x1) in zip(p[:-1], p[1:]):
            rr, cc = draw.line(y0, x0, y1, x1)
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            canvas[rr[ok], cc[ok]] = True
    if not canvas.any():
        return np.zeros(shape)
    dist = ndimage.distance_transform_edt(~canvas)
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)


def _walk(start, angle, length, rng, steps=24, wiggle=0.3) -> np.ndarray:
    """A random-walk polyline (steps+1, 2) of total ``length`` px whose heading drifts."""
    headings = angle + np.cumsum(rng.normal(0, wiggle, steps))
    step = length / steps
    moves = np.stack([np.sin(headings), np.cos(headings)], -1) * step  # (steps, 2)
    return np.vstack([start, start + np.cumsum(moves, 0)])


def _bezier(centre, length, rng, bend=0.35, n=48) -> np.ndarray:
    """A quadratic Bézier curve (n, 2) through ``centre`` with a random bend."""
    a = rng.uniform(0, np.pi)
    d = np.array([np.sin(a), np.cos(a)]) * length / 2
    normal = np.array([d[1], -d[0]])
    p0, p2 = centre - d, centre + d
    p1 = centre + normal * rng.uniform(-bend, bend) * 2
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
