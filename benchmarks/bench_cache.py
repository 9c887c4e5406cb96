"""What verifying the ``small`` caches costs (docs/architecture.md §6; nothing here is asserted by tests).

For the two folders the ``small`` preset loads (DINOv2 ViT-S/14 at 224 px, SmolLM2-135M), side
by side in interleaved rounds after a warm-up (medians; warm page cache):

* a full check: every file hashed against the manifest (``ADKIT_CACHE_REHASH=1``);
* a stamped check: the stamp vouches for files whose (size, mtime, ctime, inode) are unchanged;
* the load itself (``from_pretrained`` of the folder and the loader's own sanity checks).

Printed as seconds and as ratios to the load. The caches are built first if absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-dir", default=None, help="default: $ADKIT_CACHE or ~/.cache/adkit")
    args = parser.parse_args()

    from adkit import cache
    from adkit.weights import dinov2, smollm2

    dinov2.dinov2_small(224, cache_dir=args.cache_dir)  # build if absent
    smollm2.smollm2(args.cache_dir)
    folders = {"dinov2-vits14-224": (cache.cache_folder("dinov2-vits14-224", args.cache_dir),
                                     lambda f: dinov2._load(f, 224)),
               "smollm2-135m-instruct": (smollm2.cache_folder(args.cache_dir), smollm2._load_cache)}
    time.sleep(2.1)  # fresh files are never stamped (adkit/cache.py): let them age

    def full(folder: Path) -> None:
        os.environ["ADKIT_CACHE_REHASH"] = "1"
        try:
            assert cache.verify_folder(folder) is None
        finally:
            del os.environ["ADKIT_CACHE_REHASH"]

    def stamped(folder: Path) -> None:
        assert cache.verify_folder(folder) is None

    variants = {"full hash": full, "stamped": stamped}
    times = {(name, v): [] for name in folders for v in [*variants, "load"]}
    for r in range(args.rounds + 1):  # round 0 warms the page cache and writes the stamps
        for name, (folder, load) in folders.items():
            for v, fn in variants.items():
                t = timed(lambda: fn(folder))
                if r:
                    times[name, v].append(t)
            t = timed(lambda: load(folder))
            if r:
                times[name, "load"].append(t)

    size = {name: sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
            for name, (folder, _) in folders.items()}
    print(f"{'cache':24} {'MB':>6} {'full hash s':>12} {'stamped s':>10} {'load s':>8} {'full/load':>10} "
          f"{'stamped/load':>13}")
    total = {k: 0.0 for k in [*variants, "load"]}
    for name in folders:
        med = {k: statistics.median(times[name, k]) for k in total}
        for k in total:
            total[k] += med[k]
        print(f"{name:24} {size[name]:6.0f} {med['full hash']:12.3f} {med['stamped']:10.4f} {med['load']:8.3f} "
              f"{med['full hash'] / med['load']:10.2f} {med['stamped'] / med['load']:13.4f}")
    print(f"{'small (both)':24} {sum(size.values()):6.0f} {total['full hash']:12.3f} {total['stamped']:10.4f} "
          f"{total['load']:8.3f} {total['full hash'] / total['load']:10.2f} {total['stamped'] / total['load']:13.4f}")
    print("goal: a check under ~0.3 s for small; the full hash runs once per changed file, the stamped "
          "check on every later load")


if __name__ == "__main__":
    main()
