"""Training throughput (docs/architecture.md §4, §8): stage-1 images/s with and without the feature cache,
stage-2 tokens/s, peak memory. Ratios are measured side by side in one run.

    python benchmarks/bench_train.py                      # tiny preset, CPU (seconds)
    python benchmarks/bench_train.py --preset small       # real DINOv2-S + SmolLM2
    python benchmarks/bench_train.py --preset small --device cuda   # GPU numbers (+ peak CUDA memory)

Stage 1 runs ``train_stage1`` for one epoch: (a) live tower, (b) building the cache, (c) from the
warm cache. Stage 2 runs ``train_stage2`` with LoRA (and optionally the full LLM) for a few steps.
Peak memory: the process's max RSS (``resource.getrusage``) and, on CUDA, ``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adkit import AnomalyOV  # noqa: E402
from adkit.data.records import AnomalySample  # noqa: E402
from adkit.train import Stage1Config, Stage2Config  # noqa: E402
from adkit.train.collate import Stage2Collator, count_tokens  # noqa: E402
from adkit.train.stage1 import train_stage1  # noqa: E402
from adkit.precision import cpu_bf16  # noqa: E402
from adkit.train.stage2 import train_stage2  # noqa: E402


def samples(n: int, size: int, seed: int = 0) -> list[AnomalySample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.clip(rng.normal(128, 30, (size, size, 3)), 0, 255)
        if i % 2:
            y, x = rng.integers(0, size // 2, 2)
            img[y:y + size // 6, x:x + size // 6] = 255
        out.append(AnomalySample(Image.fromarray(img.astype("uint8")), i % 2, f"c{i % 3}", id=f"bench/{i}"))
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def cuda_peak(device) -> str:
    if device != "cuda":
        return ""
    return f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    ap.add_argument("--images", type=int, default=32, help="stage-1 training images (default: 32)")
    ap.add_argument("--image-size", type=int, default=None, help="image side (default: 2 tiles wide)")
    ap.add_argument("--batch-size", type=int, default=8, help="stage-1 global batch (default: 8)")
    ap.add_argument("--records", type=int, default=8, help="stage-2 records (default: 8)")
    ap.add_argument("--steps", type=int, default=4, help="stage-2 optimizer steps (default: 4)")
    ap.add_argument("--instruct", default=None, help="stage-2 records from this LLaVA JSON (e.g. "
                    "data_samples/instruct_train.json) instead of one-round toy records")
    ap.add_argument("--stage2-only", action="store_true", help="skip the stage-1 timings")
    ap.add_argument("--full-llm", action="store_true", help="also time stage 2 with the whole LLM trained")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default: cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = AnomalyOV.from_preset(args.preset)
    if args.device == "cuda":
        base = base.to("cuda")
    size = args.image_size or int(base.config.geometry.tile_size * 1.5)
    data = samples(args.images, size)
    print(f"preset {args.preset} on {args.device} ({torch.get_num_threads()} threads): {len(data)} images of "
          f"{size}×{size}, global batch {args.batch_size}")
    tmp = Path(tempfile.mkdtemp(prefix="adkit-bench-"))
    cfg = dict(epochs=1, batch_size=args.batch_size, micro_batch_size=min(8, args.batch_size), progress=False)

    if args.stage2_only:
        return stage2(args, base, data, tmp)
    _, live = timed(lambda: train_stage1(copy.deepcopy(base), data, [], Stage1Config(**cfg), tmp / "live"))
    cached_cfg = Stage1Config(**cfg, feature_cache=str(tmp / "cache"))
    _, cold = timed(lambda: train_stage1(copy.deepcopy(base), data, [], cached_cfg, tmp / "cold"))
    _, warm = timed(lambda: train_stage1(copy.deepcopy(base), data, [], cached_cfg, tmp / "warm"))
    n = (len(data) // args.batch_size) * args.batch_size
    print("stage 1 (one epoch):")
    print(f"  live tower        {n / live:8.1f} images/s")
    print(f"  cache build+train {n / cold:8.1f} images/s")
    print(f"  warm cache        {n / warm:8.1f} images/s   → {live / warm:.1f}× the live tower")
    cache_mb = sum(p.stat().st_size for p in (tmp / "cache").rglob("*.npy")) / 2**20
    print(f"  cache on disk     {cache_mb:8.1f} MB ({cache_mb / len(data):.2f} MB per image)")
    print(f"  peak RSS so far   {rss_mb():8.0f} MB{cuda_peak(args.device)}")
    return stage2(args, base, data, tmp)


def stage2(args, base, data, tmp) -> int:

    records = [{"id": str(i), "image": s.load_image(), "conversations": [
        {"from": "human", "value": "<image>\nAre there any anomalies in this image?"},
        {"from": "gpt", "value": "Yes, there is a bright square defect." if s.label else "No, it looks normal."}]}
        for i, s in enumerate(data[:args.records])]
    if args.instruct:  # the kit's own multi-round conversations (images relative to the JSON's folder)
        import json

        path = Path(args.instruct)
        records = [dict(r, image=str(path.parent / r["image"])) for r in json.loads(path.read_text())[:args.records]]
    modes = ["lora"] + (["full"] if args.full_llm else [])
    # the stage-2 speed levers, each added to the previous row; the first row is the old default
    settings = [("anyres, fp32, full logits", dict(bf16=False, labelled_logits=False)),
                ("+ logits at targets only", dict(bf16=False)),
                ("+ bf16 autocast" + ("" if args.device == "cuda" or cpu_bf16() else " (no native bf16: off)"), {}),
                ("+ single view", dict(single_view=True))]
    steps = args.steps
    print(f"stage 2 ({steps} steps, global batch 2, {len(records)} records cycled):")
    first = None
    for mode in modes:
        for label, extra in settings:
            s2 = Stage2Config(llm=mode, batch_size=2, micro_batch_size=1, max_steps=steps, progress=False,
                              save_steps=10**9, warmup_ratio=0.0, **extra)
            model = copy.deepcopy(base)
            model.config.single_view = s2.single_view
            tokens = count_tokens(Stage2Collator(model.processor)(records))  # one pass over the records
            res, sec = timed(lambda: train_stage2(model, records, s2, tmp / f"s2-{mode}-{len(label)}"))
            seen = 2 * steps
            rate = seen / sec
            first = first or rate
            size_mb = res.weights_path.stat().st_size / 2**20
            print(f"  llm={mode:5s} {label:32s} {rate:6.2f} records/s ({tokens / len(records) * rate:7.1f} tokens/s, "
                  f"{tokens / len(records):.0f} tokens/record) → {rate / first:.2f}× the first row; "
                  f"{sum(res.trainable.values()):,} trained, parts {size_mb:.2f} MB, peak RSS {rss_mb():.0f} MB"
                  f"{cuda_peak(args.device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
