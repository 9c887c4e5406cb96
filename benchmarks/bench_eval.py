"""Zero-shot evaluation throughput: batched vs one image at a time, on the expert path (docs/architecture.md §7, §8).

Runs ``adkit.eval.runners.zero_shot`` — the real runner: image loading, ``model.detect`` (tiling,
vision tower, expert, map stitching), metrics — twice per round on the same images: once with
``--batch-size B`` images per ``detect`` call and once with 1. Rounds alternate the order after a
warm-up; medians of images/s are printed side by side with their ratio (goal: ≥ 1.5 on CPU).

``--profile`` times the stages inside ``detect`` for both modes (wrappers around the model's
``processor.images``, ``features`` and ``expert``; ``stitch`` = the rest of ``detect``, i.e. the
per-image map interpolation; ``load`` = the runner's time outside ``detect``), so a ratio below the
goal can be traced to the stage that does not get cheaper per image when batched.

Images: ``--source elpv`` (the packaged ELPV cells, 300×300 grey, test-only data) or
``synthetic`` (random RGB images of mixed sizes). Example:

    .venv/bin/python benchmarks/bench_eval.py --preset small --batch-size 8 --images 16 --rounds 3 --profile
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import numpy as np
import torch


def make_samples(source: str, n: int, seed: int):
    from adkit.data import AnomalySample

    if source == "elpv":
        from adkit.data.loaders import load_elpv

        return load_elpv(limit=n, seed=seed)
    rng = np.random.default_rng(seed)
    sizes = [(300, 300), (240, 320), (400, 300), (224, 448)]
    return [AnomalySample(rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8), i % 2, "synthetic",
                          id=f"syn{i}") for i in range(n)]


class StageTimer:
    """Wall time per stage of ``model.detect``, accumulated while ``active``."""

    def __init__(self, model):
        self.times: dict[str, float] = defaultdict(float)
        self.active = False
        self.model = model
        proc = model.processor
        proc.images = self._timed("tile", proc.images)  # instance attributes shadow the methods
        model.features = self._timed("tower", model.features)
        model.expert.register_forward_pre_hook(lambda *a: self._mark("expert"))
        model.expert.register_forward_hook(lambda *a: self._stop("expert"))
        detect = model.detect
        model.detect = self._timed("detect", detect)
        self._t0: dict[str, float] = {}

    def _mark(self, name):
        self._t0[name] = time.perf_counter()

    def _stop(self, name):
        if self.active:
            self.times[name] += time.perf_counter() - self._t0.pop(name)

    def _timed(self, name, fn):
        def wrapper(*a, **kw):
            self._mark(name)
            try:
                return fn(*a, **kw)
            finally:
                self._stop(name)
        return wrapper

    def breakdown(self, total: float) -> dict[str, float]:
        t = dict(self.times)
        inner = t.get("tile", 0) + t.get("tower", 0) + t.get("expert", 0)
        return {"load": total - t.get("detect", 0), "tile": t.get("tile", 0), "tower": t.get("tower", 0),
                "expert": t.get("expert", 0), "stitch": t.get("detect", 0) - inner}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("small", "tiny"), default="small", help="model preset (default: small)")
    p.add_argument("--batch-size", type=int, default=8, help="images per detect call in batched mode (default: 8)")
    p.add_argument("--images", type=int, default=16, help="images per run (default: 16)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up (default: 3)")
    p.add_argument("--source", choices=("elpv", "synthetic"), default="elpv", help="images (default: elpv)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) first")
    p.add_argument("--profile", action="store_true", help="per-stage times inside detect, both modes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.set_grad_enabled(False)

    from adkit import AnomalyOV
    from adkit.eval.runners import zero_shot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = AnomalyOV.from_preset(args.preset)
    samples = make_samples(args.source, args.images, args.seed)
    timer = StageTimer(model) if args.profile else None
    modes = {f"batched (B={args.batch_size})": args.batch_size, "one at a time (B=1)": 1}
    rates: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, list[dict]] = defaultdict(list)
    scores = {}
    for rnd in range(args.rounds + 1):  # round 0 = warm-up
        order = list(modes) if rnd % 2 == 0 else list(modes)[::-1]
        for name in order:
            if timer:
                timer.times.clear()
                timer.active = rnd > 0
            t0 = time.perf_counter()
            res = zero_shot(model, samples, batch_size=modes[name], progress=False, dataset=args.source)
            dt = time.perf_counter() - t0
            scores[name] = res.scores
            if rnd > 0:
                rates[name].append(len(samples) / dt)
                if timer:
                    stages[name].append(timer.breakdown(dt))
    (nb, b), (n1, one) = list(modes.items())
    diff = float(np.abs(scores[nb] - scores[n1]).max())
    print(f"preset {args.preset}, {len(samples)} {args.source} images, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds (medians); max |score batched - score single| = {diff:.2e}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k in modes:
        print(f"  {k:22s} {med[k]:8.2f} img/s   (min {min(rates[k]):.2f}, max {max(rates[k]):.2f})")
    ratio = med[nb] / med[n1]
    print(f"  ratio batched / one-at-a-time: {ratio:.2f}x  (goal >= 1.5: {'met' if ratio >= 1.5 else 'NOT met'})")
    if timer:
        print("\nstage times per image, ms (medians over rounds):")
        keys = ("load", "tile", "tower", "expert", "stitch")
        print(f"  {'mode':22s} " + " ".join(f"{k:>8s}" for k in keys) + "   total")
        for k in modes:
            per = {s: 1000 * statistics.median(d[s] for d in stages[k]) / len(samples) for s in keys}
            print(f"  {k:22s} " + " ".join(f"{per[s]:8.1f}" for s in keys) + f"   {sum(per.values()):6.1f}")
        print("  (tile: processor.images; tower: model.features; expert: model.expert; stitch: the rest of detect;"
              " load: runner outside detect)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
