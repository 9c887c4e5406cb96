"""Data-layer throughput: defect synthesis, the instruction pipeline, dedup, Perlin noise (docs/architecture.md §5, §8).

Four measurements, each with its variants timed side by side in one run (one warm-up round, then
``--rounds`` rounds whose variant order alternates; medians, with min / max):

1. **synthesis** — ``adkit.data.synthesize`` per defect family on pre-rendered normal images
   (textures and objects, with their foreground masks), ``normal_image`` rendering alone, and
   ``make_samples`` overall (render + synthesis), in images/s at ``--size`` px.
2. **pipeline** — ``build_instructions`` with the offline ``TemplateWriter``, in conversations/s:
   anomalous samples that carry only a **mask** (location and extent are derived from it: a
   connected-component labelling per sample) vs samples whose **meta** already says location and
   severity (no mask work). Plus ``draw_boxes``, the per-image cost a multimodal writer adds.
3. **dedup** — ``deduplicate``: the pixel encoder's features/s on real images, the whole stage with
   it, and the keep-first cosine loop alone on ``--dedup-n`` precomputed features (``--dinov2`` also
   times the ``small`` preset's DINOv2 ViT-S/14 tower as the encoder).
4. **perlin** — ``perlin_noise`` (vectorised) vs two loop implementations written here from its
   docstring: one numpy block per lattice cell, and one Python step per pixel. Outputs are checked
   equal (max abs difference printed) before timing.

Nothing is asserted about time; ratios are reported. Run on an otherwise idle machine (the load
average is printed before and after). Example:

    .venv/bin/python benchmarks/bench_data.py                 # ~1–2 min on 2 cores
    .venv/bin/python benchmarks/bench_data.py --rounds 5 --json /tmp/data.json
    .venv/bin/python benchmarks/bench_data.py --only perlin,dedup --dinov2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import numpy as np

SECTIONS = ("synthesis", "pipeline", "dedup", "perlin")
# textures and objects (the latter place the defect on the foreground mask)
SYNTH_CATEGORIES = ("tile", "wood", "capsule", "nut")


def interleaved(variants: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, list[float]]:
    """units/s per variant: round 0 warms up, then ``rounds`` rounds alternating the variant order."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rnd in range(rounds + 1):
        for name in names if rnd % 2 == 0 else names[::-1]:
            fn, units = variants[name]
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if rnd > 0:
                rates[name].append(units / dt)
    return rates


def report(title: str, rates: dict[str, list[float]], unit: str, baseline: str | None = None) -> dict:
    """Print one table (median, per-unit ms, min, max, ratio to ``baseline``); return the medians."""
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med[baseline] if baseline else min(med.values())
    print(f"\n{title}")
    print(f"  {'variant':36s} {unit + '/s':>12s} {'ms/' + unit:>11s} {'min':>9s} {'max':>9s}   ratio")
    for k, v in rates.items():
        print(f"  {k:36s} {med[k]:12.2f} {1000 / med[k]:11.2f} {min(v):9.2f} {max(v):9.2f}   {med[k] / base:5.2f}x")
    print(f"  (ratio = rate / rate of {baseline or 'the slowest'})")
    return {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in rates.items()}


# ----------------------------------------------------------------------------- 1. synthesis

def bench_synthesis(args) -> dict:
    from adkit.data import DEFECT_FAMILIES, make_samples, normal_image, synthesize

    n = args.images
    normals = [normal_image(SYNTH_CATEGORIES[i % len(SYNTH_CATEGORIES)], args.seed + i, args.size) for i in range(n)]
    variants = {}
    for fam in DEFECT_FAMILIES:
        variants[f"synthesize {fam}"] = (
            lambda fam=fam: [synthesize(img, fam, args.seed + i, foreground=fg) for i, (img, fg) in enumerate(normals)],
            n)
    variants["normal_image (render only)"] = (
        lambda: [normal_image(SYNTH_CATEGORIES[i % len(SYNTH_CATEGORIES)], args.seed + i, args.size) for i in range(n)],
        n)
    per_cat = max(1, n // (2 * len(SYNTH_CATEGORIES)))  # as many normal as anomalous per category
    total = 2 * per_cat * len(SYNTH_CATEGORIES)
    variants["make_samples (render + synthesize)"] = (
        lambda: make_samples(list(SYNTH_CATEGORIES), per_cat, per_cat, args.seed, args.size), total)
    rates = interleaved(variants, args.rounds)
    return report(f"1. synthesis at {args.size}x{args.size} px, {n} images per variant "
                  f"(categories {', '.join(SYNTH_CATEGORIES)})", rates, "img")


# ----------------------------------------------------------------------------- 2. pipeline

def _pipeline_samples(args):
    from adkit.data import AnomalySample, make_samples

    per = max(1, args.pipeline_samples // 4)
    base = make_samples(["capsule", "tile"], per, per, args.seed, args.size)  # half anomalous
    with_mask, meta_only = [], []
    for rep, s in ((r, s) for r in range(args.pipeline_repeat) for s in base):  # repeats: longer timed runs
        sid = f"{s.id}#{rep}"  # ids must be unique
        path = f"images/{sid.replace('/', '_')}.png"  # never opened: the template writer is text-only
        keep = {"hint": s.meta["hint"], "path": path}
        with_mask.append(AnomalySample(s.image, s.label, s.category, s.defect, s.mask if s.label else None,
                                       sid, s.source, dict(keep)))
        facts = {"location": s.meta["location"], "severity": s.meta["severity"]} if s.label else {}
        meta_only.append(AnomalySample(s.image, s.label, s.category, s.defect, None, sid, s.source,
                                       {**keep, **facts}))
    return with_mask, meta_only


def bench_pipeline(args) -> dict:
    from adkit.data import TemplateWriter, build_instructions, draw_boxes

    with_mask, meta_only = _pipeline_samples(args)
    anomalous = [(s.load_image(), s.load_mask()) for s in with_mask if s.label]

    def run(samples):
        return build_instructions(samples, TemplateWriter(args.seed), seed=args.seed, progress=False)

    variants = {
        "template writer, masks (derive facts)": (lambda: run(with_mask), len(with_mask)),
        "template writer, meta-only location": (lambda: run(meta_only), len(meta_only)),
        "draw_boxes only (anomalous images)": (lambda: [draw_boxes(img, m) for img, m in anomalous], len(anomalous)),
    }
    rates = interleaved(variants, args.rounds)
    n_anom = sum(s.label for s in with_mask)
    return report(f"2. instruction pipeline: {len(with_mask)} samples ({n_anom} anomalous; "
                  f"{args.pipeline_samples} distinct x {args.pipeline_repeat}) at {args.size} px, "
                  "conversations/s (draw_boxes: images/s)", rates, "conv",
                  baseline="template writer, masks (derive facts)")


# ----------------------------------------------------------------------------- 3. dedup

def pixel_encoder(images, side: int = 16) -> np.ndarray:
    """(N, side·side·3) mean-removed downsampled pixels (the notebook's tiny-mode encoder)."""
    from PIL import Image

    x = np.stack([np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR), np.float32).ravel()
                  for im in images])
    return x - x.mean(1, keepdims=True)


def dinov2_encoder():
    import torch

    from adkit.weights.dinov2 import dinov2_small

    tower = dinov2_small().eval()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def encode(images):
        from PIL import Image

        x = np.stack([(np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC)) / 255 - mean) / std
                      for im in images])  # (N, 224, 224, 3)
        with torch.no_grad():
            return tower(pixel_values=torch.from_numpy(x).permute(0, 3, 1, 2).float()).pooler_output.numpy()

    return encode


def bench_dedup(args) -> dict:
    from adkit.data import AnomalySample, deduplicate, normal_image

    n = args.dedup_images
    images = [normal_image(SYNTH_CATEGORIES[i % len(SYNTH_CATEGORIES)], args.seed + i, args.size)[0] for i in range(n)]
    planted = n // 8
    images += images[:planted]  # exact repeats, so the stage has something to remove
    samples = [AnomalySample(im, 0, "x", id=str(i)) for i, im in enumerate(images)]

    # the keep-first loop alone: random features; 10 % of the rows in the second half are
    # near-copies of rows in the first half (which are all distinct), so all of them must go
    rng = np.random.default_rng(args.seed)
    m = args.dedup_n
    feats = rng.standard_normal((m, 384)).astype(np.float32)
    dup = rng.choice(np.arange(m // 2, m), m // 10, replace=False)
    noise = 0.01 * rng.standard_normal((len(dup), 384)).astype(np.float32)
    feats[dup] = feats[rng.integers(0, m // 2, len(dup))] + noise
    tiny = np.zeros((8, 8, 3), np.uint8)
    cheap = [AnomalySample(tiny, 0, "x", id=str(i)) for i in range(m)]

    def lookup():
        pos = [0]

        def enc(batch):
            out = feats[pos[0]:pos[0] + len(batch)]
            pos[0] += len(batch)
            return out
        return enc

    variants = {
        "pixel encoder (features)": (lambda: pixel_encoder(images), len(images)),
        "deduplicate with pixel encoder": (lambda: deduplicate(samples, pixel_encoder), len(samples)),
        f"keep-first loop, {m} precomputed": (lambda: deduplicate(cheap, lookup(), batch_size=1024), m),
    }
    if args.dinov2:
        encode = dinov2_encoder()
        few = images[: min(len(images), 16)]
        variants["DINOv2 ViT-S/14 encoder (features)"] = (lambda: encode(few), len(few))
    kept, removed = deduplicate(samples, pixel_encoder)
    kept_f, removed_f = deduplicate(cheap, lookup(), batch_size=1024)
    rates = interleaved(variants, args.rounds)
    print(f"\n  (pixel dedup removed {len(removed)} of {len(samples)} images, {planted} planted repeats; "
          f"the loop removed {len(removed_f)} of {m} rows, {len(dup)} planted)")
    return report(f"3. dedup: {len(images)} images at {args.size} px ({n} distinct), features/s", rates, "feat")


# ----------------------------------------------------------------------------- 4. perlin

def perlin_per_cell(shape, cells: int, rng) -> np.ndarray:
    """Perlin noise one lattice cell at a time (numpy inside each cell's pixel block)."""
    h, w = shape
    angles = rng.uniform(0.0, 2 * np.pi, (cells + 1, cells + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    y, x = np.arange(h) * (cells / h), np.arange(w) * (cells / w)
    iy, ix = y.astype(int), x.astype(int)
    out = np.empty(shape)
    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    for cy in range(cells):
        rows = np.flatnonzero(iy == cy)
        fy = (y[rows] - cy)[:, None]  # (r, 1)
        for cx in range(cells):
            cols = np.flatnonzero(ix == cx)
            fx = (x[cols] - cx)[None, :]  # (1, c)
            n00 = gy[cy, cx] * fy + gx[cy, cx] * fx
            n01 = gy[cy, cx + 1] * fy + gx[cy, cx + 1] * (fx - 1)
            n10 = gy[cy + 1, cx] * (fy - 1) + gx[cy + 1, cx] * fx
            n11 = gy[cy + 1, cx + 1] * (fy - 1) + gx[cy + 1, cx + 1] * (fx - 1)
            u, v = fade(fx), fade(fy)
            top, bottom = n00 * (1 - u) + n01 * u, n10 * (1 - u) + n11 * u
            out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = (top * (1 - v) + bottom * v) * np.sqrt(2)
    return np.clip(out, -1.0, 1.0)


def perlin_per_pixel(shape, cells: int, rng) -> np.ndarray:
    """Perlin noise with one Python step per pixel (the textbook loop)."""
    h, w = shape
    angles = rng.uniform(0.0, 2 * np.pi, (cells + 1, cells + 1))
    gy, gx = np.sin(angles).tolist(), np.cos(angles).tolist()
    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    out = np.empty(shape)
    for i in range(h):
        y = i * cells / h
        y0 = int(y)
        fy = y - y0
        v = fade(fy)
        for j in range(w):
            x = j * cells / w
            x0 = int(x)
            fx = x - x0
            u = fade(fx)
            top = (gy[y0][x0] * fy + gx[y0][x0] * fx) * (1 - u) + (gy[y0][x0 + 1] * fy + gx[y0][x0 + 1] * (fx - 1)) * u
            bottom = ((gy[y0 + 1][x0] * (fy - 1) + gx[y0 + 1][x0] * fx) * (1 - u)
                      + (gy[y0 + 1][x0 + 1] * (fy - 1) + gx[y0 + 1][x0 + 1] * (fx - 1)) * u)
            out[i, j] = min(1.0, max(-1.0, (top * (1 - v) + bottom * v) * 2 ** 0.5))
    return out


def bench_perlin(args) -> dict:
    from adkit.data import perlin_noise

    shape, cells = (args.perlin_size, args.perlin_size), args.perlin_cells
    impls = {"perlin_noise (adkit, vectorised)": lambda: perlin_noise(shape, cells, np.random.default_rng(args.seed)),
             "per-cell loop (numpy per cell)": lambda: perlin_per_cell(shape, cells, np.random.default_rng(args.seed)),
             "per-pixel loop (pure Python)": lambda: perlin_per_pixel(shape, cells, np.random.default_rng(args.seed))}
    ref = impls["perlin_noise (adkit, vectorised)"]()
    diffs = {k: float(np.abs(fn() - ref).max()) for k, fn in impls.items()}
    rates = interleaved({k: (fn, 1) for k, fn in impls.items()}, args.rounds)
    print("\n  max |difference| to adkit: " + ", ".join(f"{k.split(' (')[0]} {v:.1e}" for k, v in diffs.items()))
    return report(f"4. Perlin noise {shape[0]}x{shape[1]} px, {cells}x{cells} lattice cells, calls/s", rates, "call",
                  baseline="per-pixel loop (pure Python)")


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224, help="image side in px (default: 224, as data_samples/)")
    p.add_argument("--images", type=int, default=16, help="images per synthesis variant (default: 16)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up (default: 3)")
    p.add_argument("--pipeline-samples", type=int, default=64,
                   help="distinct samples per pipeline run, half anomalous (default: 64)")
    p.add_argument("--pipeline-repeat", type=int, default=4, help="each pipeline sample repeated (default: 4)")
    p.add_argument("--dedup-images", type=int, default=64, help="distinct images for the dedup encoder (default: 64)")
    p.add_argument("--dedup-n", type=int, default=2000,
                   help="precomputed features for the keep-first loop (default: 2000)")
    p.add_argument("--dinov2", action="store_true",
                   help="also time the DINOv2 ViT-S/14 tower as dedup encoder (slow on CPU)")
    p.add_argument("--perlin-size", type=int, default=128, help="Perlin noise side in px (default: 128)")
    p.add_argument("--perlin-cells", type=int, default=8, help="Perlin lattice cells per side (default: 8)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections (default: {','.join(SECTIONS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the medians as JSON")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")

    import torch

    load0 = os.getloadavg()
    print(f"bench_data: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; {args.rounds} rounds (medians)")
    results = {}
    t0 = time.perf_counter()
    for name, fn in (("synthesis", bench_synthesis), ("pipeline", bench_pipeline), ("dedup", bench_dedup),
                     ("perlin", bench_perlin)):
        if name in only:
            results[name] = fn(args)
    load1 = os.getloadavg()
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; load average now {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "load_before": load0, "load_after": load1, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
