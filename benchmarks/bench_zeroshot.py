"""Zero-shot scoring cost: seconds per image of every method, and the memory of mutual scoring.

Part 1 — time. For each base-view size (``--sizes``, default 224 and 448 px: 16×16 and 32×32
patches on the small preset) and batch size (``--batches``, default 1 / 32 / 64), every method
(``expert``, ``self``, ``expert+self`` on the anyres tiles, ``self`` and ``mutual`` on one base
view of that size) scores the same images through ``model.detect``; rounds alternate the order
after a warm-up and the medians of seconds per image are printed side by side, with each
method's ratio to ``expert``. ``mutual`` needs ≥ 2 images, so its batch-1 row scores one image
against ``--references`` unlabeled ones (the demo's situation).

Part 2 — memory. ``mutual_map`` compares every patch of every image with every patch of every
other image: B²·P² distances per level. Each (batch, size) configuration runs in a fresh
subprocess on random features of the right shape, once with the default block (2²⁴ entries ≈
64 MB of distances per block) and once unchunked (one block for everything); the peak RSS above
the inputs is printed. Chunked memory stays flat as the batch grows; unchunked grows as B²·P².

    .venv/bin/python benchmarks/bench_zeroshot.py                      # small preset, ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_zeroshot.py --sizes 224 --batches 1 8 --rounds 2   # quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import torch


def images(n: int, seed: int = 0):
    """Synthetic 300×300 normals of the kit's held-out categories (license-clean, ELPV-sized)."""
    from adkit.data import normals

    cats = normals.categories("test")
    return [s.image for s in normals.make_samples(cats, -(-n // len(cats)), 0, seed, size=300)][:n]


def time_methods(model, sizes, batches, rounds: int, references: int):
    rows = []
    pool = images(max(batches) + references)
    for size in sizes:
        for b in batches:
            batch, refs = pool[:b], pool[b:b + references] if b == 1 else None
            runs = {}
            if size == model.config.geometry.tile_size:  # the anyres methods use the model's own tiles
                runs.update({m: (lambda m=m: model.detect(batch, method=m)) for m in ("expert", "self", "expert+self")})
            runs[f"self @{size}"] = lambda: model.detect(batch, method="self", image_size=size)
            runs[f"mutual @{size}"] = lambda: model.detect(batch, method="mutual", reference=refs, image_size=size)
            times = {k: [] for k in runs}
            for fn in runs.values():
                fn()  # warm-up
            for r in range(rounds):
                for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                    t = time.perf_counter()
                    runs[name]()
                    times[name].append((time.perf_counter() - t) / len(batch))
            base = statistics.median(times["expert"]) if "expert" in times else None
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append({"size": size, "batch": b, "method": name, "s_per_image": med, "min": min(ts),
                             "vs_expert": None if base is None else med / base})
            print(f"  size {size}, batch {b}: done", file=sys.stderr, flush=True)
    return rows


_CHILD = """
import resource, sys, torch
from adkit.zeroshot.scores import mutual_map
b, p, d, levels, block = (int(x) for x in sys.argv[1:6])
torch.set_num_threads(int(sys.argv[6]))
feats = [torch.randn(b, p, d) for _ in range(levels)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mutual_map(feats, r_list=(1,), block=block)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


def memory(batches, sizes, patch: int, dim: int, threads: int):
    rows = []
    for size in sizes:
        p = (size // patch) ** 2
        for b in batches:
            if b < 2:
                continue
            row = {"size": size, "batch": b, "patches": p}
            for name, block in (("chunked", 2 ** 24), ("unchunked", b * b * p * p)):
                if name == "unchunked" and b * b * p * p * 4 > 12e9:
                    row[name] = None  # would not fit this machine: that is the point of chunking
                    continue
                out = subprocess.run([sys.executable, "-c", _CHILD, str(b), str(p), str(dim), "1", str(block),
                                      str(threads)], capture_output=True, text=True, check=True)
                row[name] = float(out.stdout.strip())
            rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 64])
    ap.add_argument("--references", type=int, default=8, help="unlabeled references of mutual at batch 1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from adkit import AnomalyOV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyOV.from_preset(args.preset)
    print(f"preset {args.preset}, {args.threads} thread(s), torch {torch.__version__}")
    t_rows = time_methods(model, args.sizes, args.batches, args.rounds, args.references)
    print("\n| size | batch | method | s / image (median) | min | × expert |\n|---|---|---|---|---|---|")
    for r in t_rows:
        ratio = "" if r["vs_expert"] is None else f"{r['vs_expert']:.2f}"
        print(f"| {r['size']} | {r['batch']} | {r['method']} | {r['s_per_image']:.4f} | {r['min']:.4f} | {ratio} |")
    g = model.config.geometry
    m_rows = memory(args.batches, args.sizes, g.patch_size, model.config.vision.hidden_size, args.threads)
    print("\nmutual_map peak memory above its inputs (one level, r = 1), MB:")
    print("| size | batch | patches | chunked | unchunked | unchunked / chunked |\n|---|---|---|---|---|---|")
    for r in m_rows:
        un = "too big" if r["unchunked"] is None else f"{r['unchunked']:.0f}"
        ratio = "" if r["unchunked"] is None else f"{r['unchunked'] / max(r['chunked'], 1):.1f}"
        print(f"| {r['size']} | {r['batch']} | {r['patches']} | {r['chunked']:.0f} | {un} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"time": t_rows, "memory": m_rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
