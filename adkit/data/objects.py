"""Procedural industrial objects: shaded 2D renders with an exact foreground mask.

Why: MVTec AD / VisA object photos may not be redistributed (docs/architecture.md §5), yet the expert and the
instruction pipeline need *object* categories (defects on the part, not on the background).
Each object here is a signed-distance shape (coverage → anti-aliased mask), a height field
(→ surface normals) and an albedo; :func:`_shade` lights it (ambient + Lambert + Blinn-Phong
specular) and drops a soft shadow on a plain background, like a part on an inspection table.
The pose (rotation, offset, scale), colours and light direction are random given ``rng``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .synth import fractal_noise, perlin_noise

__all__ = ["OBJECTS", "render_object"]


class _Frame:
    """Pixel grid in the object's normalised frame: X, Y in about [-1, 1] (rotated, offset)."""

    def __init__(self, size: int, rng: np.random.Generator, rotate: bool = True):
        self.size, self.rng = size, rng
        self.S = size / 2 * rng.uniform(0.82, 0.95)  # px per unit
        theta = rng.uniform(0, 2 * np.pi) if rotate else rng.uniform(-0.15, 0.15)
        c = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
        yy, xx = np.mgrid[:size, :size].astype(float)  # (2, size, size)
        dx, dy = (xx - c[1]) / self.S, (yy - c[0]) / self.S
        self.X = dx * np.cos(theta) + dy * np.sin(theta)
        self.Y = -dx * np.sin(theta) + dy * np.cos(theta)
        self.r = np.hypot(self.X, self.Y)

    def noise(self, scale, octaves=3) -> np.ndarray:
        return fractal_noise((self.size, self.size), scale, self.rng, octaves)


def _box(X, Y, hx, hy, round_=0.0):
    qx, qy = np.abs(X) - hx + round_, np.abs(Y) - hy + round_
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - round_


def _hexagon(X, Y, inradius):
    kx, ky, kz = -0.866025404, 0.5, 0.577350269
    px, py = np.abs(X), np.abs(Y)
    d = 2 * np.minimum(kx * px + ky * py, 0)
    px, py = px - d * kx, py - d * ky
    px = px - np.clip(px, -kz * inradius, kz * inradius)
    py = py - inradius
    return np.hypot(px, py) * np.sign(py)


def _dome(sdf, depth):
    """A rounded profile: 0 outside, rising smoothly to 1 at ``depth`` units inside the edge."""
    t = np.clip(-sdf / depth, 0, 1)
    return np.sqrt(1 - (1 - t) ** 2)


def _jitter(rgb, rng, amount=0.08):
    return np.clip(np.asarray(rgb, float) * rng.uniform(1 - amount, 1 + amount, 3), 0, 1)


# Each object: (frame) -> (sdf, height [units], albedo (H, W, 3) in [0, 1], specular, background)
def _bottle(f):
    rng = f.rng
    glass = _jitter(rng.choice([[0.33, 0.19, 0.08], [0.16, 0.3, 0.14], [0.55, 0.6, 0.62]]), rng)
    sdf = f.r - 0.8
    height = 0.35 * _dome(sdf, 0.6) + 0.08 * np.exp(-((f.r - 0.3) / 0.04) ** 2)  # neck ridge
    albedo = np.broadcast_to(glass * (0.9 + 0.1 * f.noise(3)[..., None]), f.X.shape + (3,)).copy()
    albedo[f.r < 0.24] = glass * 0.15  # the dark opening
    height = np.where(f.r < 0.24, 0.05, height)
    return sdf, height, albedo, 0.9, _jitter([0.85, 0.85, 0.82], rng, 0.05)


def _capsule(f):
    rng = f.rng
    pairs = [([0.1, 0.1, 0.1], [0.9, 0.45, 0.1]), ([0.85, 0.15, 0.15], [0.95, 0.95, 0.92]),
             ([0.15, 0.35, 0.75], [0.95, 0.85, 0.3])]
    a, b = pairs[rng.integers(len(pairs))]
    d = np.hypot(np.maximum(np.abs(f.X) - 0.55, 0), f.Y)
    sdf = d - 0.3
    height = 0.3 * np.sqrt(np.clip(1 - (d / 0.3) ** 2, 0, 1))
    albedo = np.where((f.X < 0)[..., None], _jitter(a, rng), _jitter(b, rng))
    seam = np.abs(f.X) < 0.012
    albedo[seam] *= 0.6
    mark = (np.abs(f.Y) < 0.05) & (f.X > 0.2) & (f.X < 0.6) & (np.sin(f.X * 90) > 0.2)  # printed code
    albedo[mark] = albedo[mark] * 0.3
    return sdf, height, albedo, 0.6, _jitter([0.2, 0.2, 0.22], rng, 0.1)


def _pill(f):
    rng = f.rng
    a, b = 0.78, 0.45
    rho = np.hypot(f.X / a, f.Y / b)
    sdf = (rho - 1) * b
    height = 0.22 * np.sqrt(np.clip(1 - rho**2, 0, 1)) - 0.03 * np.exp(-(f.X / 0.02) ** 2) * (rho < 0.85)
    albedo = np.broadcast_to(_jitter([0.93, 0.91, 0.86], rng, 0.03), f.X.shape + (3,)).copy()
    speck = perlin_noise(f.X.shape, f.size / 6, rng) > 0.72
    albedo[speck] = _jitter([0.7, 0.25, 0.2], rng, 0.1)
    return sdf, height, albedo, 0.25, _jitter([0.25, 0.3, 0.35], rng, 0.1)


def _screw(f):
    rng = f.rng
    hr = np.hypot(f.X + 0.55, f.Y)  # the head is centred at X = -0.55
    head = hr - 0.26
    shaft = _box(f.X - 0.1, f.Y, 0.65, 0.1 * np.clip((0.75 - f.X) / 0.15, 0, 1) + 1e-3)
    sdf = np.minimum(head, shaft)
    threads = 0.02 * np.sin(2 * np.pi * (f.X + 0.3 * f.Y) / 0.07)
    h_shaft = (0.1 * _dome(shaft, 0.1) + threads * (shaft < 0)) * (f.X > -0.3)
    slot = (np.abs(f.Y) < 0.035) & (hr < 0.2)
    h_head = 0.18 * _dome(head, 0.15) - 0.1 * slot
    height = np.maximum(h_shaft, h_head)
    metal = _jitter([0.62, 0.62, 0.64], rng, 0.05)
    albedo = np.broadcast_to(metal * (0.85 + 0.15 * f.noise(8)[..., None]), f.X.shape + (3,)).copy()
    return sdf, height, albedo, 1.0, _jitter([0.92, 0.92, 0.9], rng, 0.04)


def _nut(f):
    rng = f.rng
    outer = _hexagon(f.X, f.Y, 0.68)
    sdf = np.maximum(outer, 0.33 - f.r)
    height = 0.12 * _dome(outer, 0.12) + 0.015 * np.sin(f.r * 160) * (f.r < 0.42)
    height = np.where(f.r < 0.33, 0, height)
    metal = _jitter(rng.choice([[0.6, 0.6, 0.62], [0.72, 0.58, 0.3]]), rng, 0.05)
    albedo = np.broadcast_to(metal * (0.9 + 0.1 * f.noise(6)[..., None]), f.X.shape + (3,)).copy()
    return sdf, height, albedo, 1.0, _jitter([0.3, 0.32, 0.34], rng, 0.1)


def _washer(f):
    rng = f.rng
    sdf = np.maximum(f.r - 0.8, 0.34 - f.r)
    height = 0.06 * _dome(sdf, 0.08)
    theta = np.arctan2(f.Y, f.X)
    brushed = np.sin(theta * 72 + 4 * perlin_noise(f.X.shape, 4, rng))  # radial brush marks
    metal = _jitter(rng.choice([[0.68, 0.68, 0.7], [0.75, 0.6, 0.32]]), rng, 0.05)
    albedo = metal * (0.92 + 0.08 * brushed[..., None])
    return sdf, height, albedo, 0.9, _jitter([0.15, 0.17, 0.2], rng, 0.15)


def _cable(f):
    rng = f.rng
    sdf = f.r - 0.88
    albedo = np.broadcast_to(_jitter([0.82, 0.82, 0.8], rng, 0.04), f.X.shape + (3,)).copy()
    height = 0.05 * _dome(sdf, 0.1)
    colours = [[0.2, 0.6, 0.2], [0.15, 0.3, 0.75], [0.45, 0.28, 0.15]]
    strands = perlin_noise(f.X.shape, f.size / 5, rng)
    phase = rng.uniform(0, 2 * np.pi)
    for i, colour in enumerate(colours):
        a = phase + i * 2 * np.pi / 3
        d = np.hypot(f.X - 0.42 * np.cos(a), f.Y - 0.42 * np.sin(a))
        albedo[d < 0.33] = _jitter(colour, rng, 0.08)
        copper = d < 0.2
        albedo[copper] = np.array([0.78, 0.45, 0.2]) * (0.8 + 0.2 * strands[copper, None])
        height = height + 0.06 * _dome(d - 0.33, 0.05) + 0.03 * (copper * (0.5 + 0.5 * strands))
    return sdf, height, albedo, 0.4, _jitter([0.9, 0.9, 0.88], rng, 0.05)


def _pcb(f):
    rng = f.rng
    sdf = _box(f.X, f.Y, 0.85, 0.62, 0.05)
    albedo = np.broadcast_to(_jitter([0.1, 0.4, 0.18], rng, 0.1), f.X.shape + (3,)).copy()
    gold = np.array([0.85, 0.7, 0.3])
    for _ in range(7):  # traces
        if rng.random() < 0.5:
            y, x0, x1 = rng.uniform(-0.55, 0.55), *np.sort(rng.uniform(-0.8, 0.8, 2))
            trace = (np.abs(f.Y - y) < 0.018) & (f.X > x0) & (f.X < x1)
        else:
            x, y0, y1 = rng.uniform(-0.8, 0.8), *np.sort(rng.uniform(-0.55, 0.55, 2))
            trace = (np.abs(f.X - x) < 0.018) & (f.Y > y0) & (f.Y < y1)
        albedo[trace] = [0.2, 0.6, 0.3]
    for _ in range(8):  # pads
        albedo[np.hypot(f.X - rng.uniform(-0.8, 0.8), f.Y - rng.uniform(-0.55, 0.55)) < 0.045] = gold
    chip = _box(f.X - 0.2, f.Y, 0.28, 0.2, 0.02)
    albedo[chip < 0] = [0.08, 0.08, 0.09]
    pins = (np.abs(np.abs(f.Y) - 0.23) < 0.035) & (np.sin((f.X - 0.2) * 45) > 0) & (np.abs(f.X - 0.2) < 0.26)
    albedo[pins] = [0.75, 0.75, 0.78]
    height = 0.02 * _dome(sdf, 0.03) + 0.1 * _dome(chip, 0.03) + 0.01 * pins
    return sdf, height, albedo, 0.5, _jitter([0.9, 0.9, 0.9], rng, 0.05)


def _transistor(f):
    rng = f.rng
    body = _box(f.X, f.Y, 0.36, 0.3, 0.02)
    tab = np.maximum(_box(f.X, f.Y + 0.5, 0.38, 0.22, 0.02), 0.1 - np.hypot(f.X, f.Y + 0.5))
    legs = np.minimum.reduce([_box(f.X - x, f.Y - 0.55, 0.035, 0.3) for x in (-0.22, 0.0, 0.22)])
    sdf = np.minimum.reduce([body, tab, legs])
    albedo = np.zeros(f.X.shape + (3,))
    albedo[:] = _jitter([0.75, 0.75, 0.78], rng, 0.05)  # tab and legs: tinned metal
    albedo[body < 0] = _jitter([0.07, 0.07, 0.08], rng, 0.2)
    height = np.maximum.reduce([0.14 * _dome(body, 0.04), 0.03 * _dome(tab, 0.02), 0.03 * _dome(legs, 0.03)])
    return sdf, height, albedo, 0.8, _jitter([0.88, 0.86, 0.82], rng, 0.05)


def _hazelnut(f):
    rng = f.rng
    theta = np.arctan2(f.Y, f.X)
    R = 0.62 * (1 + 0.28 * np.maximum(np.cos(theta + np.pi / 2), 0) ** 6)  # pointed tip (−Y)
    sdf = (f.r - R) * 0.8
    height = 0.5 * np.sqrt(np.clip(1 - (f.r / R) ** 2, 0, 1))
    stripes = perlin_noise(f.X.shape, (3, f.size / 10), rng)  # streaks along the tip axis
    shell = _jitter([0.55, 0.33, 0.17], rng, 0.1)
    albedo = shell * (0.85 + 0.2 * stripes[..., None])
    cap = (f.Y > 0.3) & (f.r < R)
    albedo[cap] = albedo[cap] * 0.75 + 0.25 * np.array([0.75, 0.6, 0.45])
    return sdf, height, albedo, 0.35, _jitter([0.08, 0.08, 0.09], rng, 0.3)


_RENDERERS = {
    "bottle": _bottle, "capsule": _capsule, "pill": _pill, "screw": _screw, "nut": _nut,
    "washer": _washer, "cable": _cable, "pcb": _pcb, "transistor": _transistor, "hazelnut": _hazelnut,
}
OBJECTS: tuple[str, ...] = tuple(_RENDERERS)


def _shade(f, sdf, height, albedo, specular, background):
    """Light the height field and composite over a shadowed background → (uint8 (H, W, 3), mask)."""
    rng, S = f.rng, f.S
    cover = np.clip(0.5 - sdf * S, 0, 1)  # (H, W) anti-aliased coverage
    hy, hx = np.gradient(height * S)  # slopes in px / px
    norm = np.sqrt(hx**2 + hy**2 + 1)
    az, el = rng.uniform(np.pi, 1.5 * np.pi), rng.uniform(0.7, 1.1)  # light from the upper left
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])  # x, y, z
    ndotl = np.clip((-hx * light[0] - hy * light[1] + light[2]) / norm, 0, 1)
    half = (light + [0, 0, 1]) / np.linalg.norm(light + [0, 0, 1])
    ndoth = np.clip((-hx * half[0] - hy * half[1] + half[2]) / norm, 0, 1)
    obj = albedo * (0.35 + 0.75 * ndotl)[..., None] + specular * 0.6 * (ndoth**40)[..., None]
    size = f.size
    yy, xx = np.mgrid[:size, :size] / size
    bg = background * (1 + 0.08 * (xx - 0.5) - 0.06 * (yy - 0.5))[..., None]  # light falloff
    bg = bg * (1 + 0.02 * rng.standard_normal((size, size)))[..., None]
    shift = -light[:2] / max(light[2], 0.3) * 0.03 * size  # shadow falls away from the light
    shadow = ndimage.gaussian_filter(ndimage.shift(cover, (shift[1], shift[0]), order=1), size / 60)
    bg = bg * (1 - 0.45 * shadow)[..., None]
    out = bg * (1 - cover[..., None]) + obj * cover[..., None]
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), cover > 0.5


def render_object(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render object ``name`` at ``size``×``size`` → (uint8 (H, W, 3) image, bool (H, W) mask)."""
    if name not in _RENDERERS:
        raise ValueError(f"unknown object {name!r}; valid objects: {', '.join(OBJECTS)}")
    frame = _Frame(size, rng)
    sdf, height, albedo, specular, background = _RENDERERS[name](frame)
    return _shade(frame, sdf, height, np.asarray(albedo, float), specular, np.asarray(background, float))
