"""Model build speed: ``from_preset("small")`` with a warm cache, the former construction vs the
cheap one (docs/architecture.md §8; nothing here is asserted by tests).

* **old**: ``presets._load_small_preset_reference`` — standalone DINOv2 and SmolLM2 models (with
  the SmolLM2 fingerprint pass), a copy of SmolLM2 with its embeddings resized, a randomly
  initialised LLaVA, the weights copied in, every LoRA delta built before the merge;
* **new**: ``presets.load_small_preset`` (what ``from_preset`` runs) — the LLaVA built on the
  meta device, the verified cache tensors assigned, the LoRA merged through scratch tensors.

Both check the caches against their manifests. Each build runs in a **fresh process** (what a
user's first ``from_preset`` in a session costs; ``import adkit`` and transformers are loaded
before the clock starts), old and new alternating, their order swapped every round, after one
warm-up pair; medians and the old/new ratio are printed. Then both are built in one process and
compared: every parameter and buffer (``torch.equal``), ``detect`` scores and maps, and a greedy
``chat`` answer. ``--profile`` adds where each build's time goes (cProfile, cumulative seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's adkit, here and (PYTHONPATH) in the children

CHILD = r"""
import json, sys, time, warnings
import torch, adkit, adkit.model
from adkit.config import get_preset
from adkit.weights import presets
variant, trained, profile = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
if int(sys.argv[4]):
    torch.set_num_threads(int(sys.argv[4]))
fn = presets.load_small_preset if variant == "new" else presets._load_small_preset_reference
warnings.simplefilter("ignore")
if profile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
t = time.perf_counter()
model = fn(adkit.AnomalyOV, get_preset("small"), trained=trained)
sec = time.perf_counter() - t
out = {"seconds": sec}
if profile:
    import pstats
    prof.disable()
    stats = pstats.Stats(prof).stats
    out["sections"] = {f"{f.rsplit('/', 1)[-1]}:{name}": v[3] for (f, _, name), v in stats.items()}
print(json.dumps(out))
"""

SECTIONS = {  # function (file:name) -> what it stands for
    "dinov2.py:dinov2_small": "DINOv2 model load (from_pretrained)",
    "dinov2.py:dinov2_small_weights": "DINOv2 weights read (verified folder)",
    "smollm2.py:smollm2": "SmolLM2 model load (from_pretrained + fingerprint)",
    "smollm2.py:_fingerprint": "  of which the fingerprint forward",
    "smollm2.py:smollm2_weights": "SmolLM2 weights read (verified folder)",
    "smollm2.py:smollm2_tokenizer": "SmolLM2 tokenizer",
    "cache.py:verify_folder": "manifest checks (stamped)",
    "smollm2.py:with_image_token": "<image> row: deepcopy + resize",
    "smollm2.py:image_token_rows": "<image> row: one new embedding",
    "hf.py:build_mllm": "LLaVA construction + random init",
    "hf.py:mllm_from_weights": "LLaVA on meta + assign + init of the rest",
    "module.py:load_state_dict": "state-dict loads (copies / assigns)",
    "presets.py:_finish_small": "expert + trained parts + calibration",
    "parts.py:load_trained_parts": "  of which the trained parts (LoRA merge)",
    "validate.py:finite_tensors": "  of which the NaN/inf scan of the parts",
}


THREADS = 0  # 0: torch's default


def child(variant: str, trained: bool, profile: bool = False) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", CHILD, variant, str(int(trained)), str(int(profile)),
                          str(THREADS)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def outputs_equal(trained: bool) -> tuple[bool, str]:
    """Build both here and compare every tensor, detect scores/maps and a greedy answer."""
    import warnings

    import numpy as np
    import torch
    from PIL import Image

    import adkit
    from adkit.config import get_preset
    from adkit.weights import presets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = presets.load_small_preset(adkit.AnomalyOV, get_preset("small"), trained=trained)
        old = presets._load_small_preset_reference(adkit.AnomalyOV, get_preset("small"), trained=trained)
    a, b = dict(new.state_dict()), dict(old.state_dict())
    a.update(new.named_buffers(remove_duplicate=False))
    b.update(old.named_buffers(remove_duplicate=False))
    random = ("expert.", "mllm.model.multi_modal_projector.", "mllm.model.image_newline")
    keys = [k for k in b if trained or not k.startswith(random)]  # untrained: the seeded parts differ
    same = set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in keys)
    note = f"{len(keys)} tensors" + ("" if trained else f" (seeded random parts aside: {len(b) - len(keys)})")
    if trained:
        yy, xx = np.mgrid[0:240, 0:320]
        img = Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype("uint8"))
        d_new, d_old = new.detect(img)[0], old.detect(img)[0]
        same &= d_new.score == d_old.score and bool((d_new.anomaly_map == d_old.anomaly_map).all())
        q = "Is there any defect in the object?"
        same &= new.chat(img, q, max_new_tokens=12) == old.chat(img, q, max_new_tokens=12)
        note += ", detect score + map, greedy chat"
    return same, note


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="fresh-process builds per variant (medians)")
    ap.add_argument("--untrained", action="store_true", help="also time trained=False (the base training starts from)")
    ap.add_argument("--profile", action="store_true", help="print where each build's time goes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the builds (0: torch's default; "
                    "1 is steadier on a busy machine, where idle-waiting threads slow every op)")
    args = ap.parse_args(argv)
    import torch

    global THREADS
    THREADS = args.threads
    if THREADS:
        torch.set_num_threads(THREADS)

    print(f"adkit build benchmark: torch {torch.__version__}, {THREADS or torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    rows = []
    for trained in [True, False] if args.untrained else [True]:
        child("new", trained), child("old", trained)  # warm-up: page cache, stamps, .pyc
        times = {"old": [], "new": []}
        for r in range(args.rounds):
            for variant in ("old", "new") if r % 2 == 0 else ("new", "old"):
                times[variant].append(child(variant, trained)["seconds"])
                print(f"  round {r + 1} {variant}: {times[variant][-1]:.3f} s", file=sys.stderr, flush=True)
        same, note = outputs_equal(trained)
        med = {v: statistics.median(t) for v, t in times.items()}
        rows.append((f"from_preset('small'{'' if trained else ', trained=False'}), warm cache",
                     med["old"], med["new"], min(times["old"]), min(times["new"]), same, note))
        if args.profile:
            profiles = {v: child(v, trained, profile=True) for v in ("old", "new")}
            print(f"\nwhere the time goes (trained={trained}; cProfile, cumulative s, one build each)")
            print(f"{'section':52} {'old':>7} {'new':>7}")
            for key, what in SECTIONS.items():
                vals = [profiles[v]["sections"].get(key) for v in ("old", "new")]
                if any(vals):
                    print(f"{what:52} " + " ".join(f"{x:7.3f}" if x else f"{'-':>7}" for x in vals))
            print(f"{'whole build (under the profiler)':52} "
                  + " ".join(f"{profiles[v]['seconds']:7.3f}" for v in ("old", "new")))
    print()
    print(f"{'build':46} {'old s':>7} {'new s':>7} {'ratio':>6} {'min old':>8} {'min new':>8}  outputs equal")
    for name, old, new, min_old, min_new, same, note in rows:
        print(f"{name:46} {old:7.3f} {new:7.3f} {old / new:6.2f} {min_old:8.3f} {min_new:8.3f}  "
              f"{'yes' if same else 'NO'} ({note})")
    print("goal: new <= 1 s with a warm cache (medians of fresh processes, imports excluded)")


if __name__ == "__main__":
    main()
