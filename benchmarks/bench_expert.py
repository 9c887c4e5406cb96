"""Anomaly expert speed: ``adkit.AnomalyExpert`` (vectorised) vs the official per-image-loop forward.

docs/architecture.md §3 describes the expert and says the official forward loops over images in Python while
ours is vectorised; docs/architecture.md §8 says benchmarks print ratios measured side by side in one run
(tests never assert wall-clock times). This script does exactly that, with the SAME weights:

* ``loop``  — a transcription of the official forward written from docs/architecture.md §3: the base view's
  final features repeated for every crop, the class vector and both prompts computed per crop,
  ``F.adaptive_avg_pool2d`` on [N, D, g, g], explicit Q/K attention, and a Python loop over
  images for the global token; it reads the official-key state dict
  (``expert.to_official_state_dict()``, names in ``adkit.weights.official.OFFICIAL_KEY_MAP``).
* ``vectorised fp32`` — ``AnomalyExpert(ExpertConfig())``.
* ``vectorised bf16`` — ``AnomalyExpert(ExpertConfig(projection_dtype="bfloat16"))`` loaded
  with the same official state dict: the five token projections run in bf16, the rest in fp32.
* ``matmul`` — one plain [N·P, D] @ [D, 5E] product in fp32 and bf16 (inputs pre-cast): the
  five projections' FLOPs in the best shape, a ceiling for the achieved GFLOP/s.

FLOP count (``expert_flops``), multiply-add = 2 FLOPs, the work of the official math; the same
number divides every variant's time, so GFLOP/s is *effective* throughput (the loop's redundant
per-crop class vectors/prompts are not credited, and adkit's folding of the key projection into
the k² queries, which skips one of the five big projections, is credited as if it ran):
projections 2·N·P·D·(L·E + A); look-back 2·B·P·D + 2·B·(D·C + C·C);
prompts 2·L·2·B·(E + C)·E; matching 2·L·N·P·E·2; map-weighted pooling 2·N·D·Σ|cell|
(Σ|cell| = 4·14·14 = 784 for g=27, k=2: windows overlap); query projection 2·N·k²·D·A;
attention 2·N·k²·P·(A + D); global token 2·N·k²·D; score MLP 2·B·(D·H + H). Elementwise work
(norms, softmax, GELU) is left out (< 0.5 %).

Timing: warm-up, then ``--rounds`` rounds running every variant once, the order rotated each
round; medians. CPU: ``time.perf_counter``; CUDA: CUDA events + ``torch.cuda.synchronize``.
Example: ``.venv/bin/python benchmarks/bench_expert.py --rounds 5 --json /tmp/expert.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

from adkit.expert import AnomalyExpert, ExpertConfig
from adkit.weights.official import load_into


def loop_forward(sd: dict, final: torch.Tensor, levels: list, split_sizes: list[int], cfg: ExpertConfig) -> dict:
    """The official forward's semantics and structure (docs/architecture.md §3 steps 1–10), one image at a time where it loops."""
    n, p, d = final.shape
    g, k, L = cfg.grid, cfg.pool_size, cfg.num_levels

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    # 1. look back: every crop gets its image's base view (crop 0), repeated
    base = torch.cat([f[:1].repeat(s, 1, 1) for f, s in zip(final.split(split_sizes), split_sizes)])  # [N, P, D]
    # 2. class vector per crop
    pooled = lin(base.transpose(1, 2), "pooling_layer.0").squeeze(-1)  # [N, D, P] → [N, D]
    cls = lin(F.gelu(lin(pooled, "class_predictor.0")), "class_predictor.2")  # [N, C]
    pos = sd["positive_embedding"].repeat(n, 1)  # [N, E]
    neg = sd["negative_embedding"].repeat(n, 1)  # [N, E]
    maps, signif = [], []
    for i in range(L):
        # 3. prompts per crop (seed first, then c)
        dp = lin(torch.cat([pos, cls], -1), f"prompt_adaptors.{i}")  # [N, E]
        dn = lin(torch.cat([neg, cls], -1), f"prompt_adaptors.{i}")  # [N, E]
        prompt = torch.stack([dp / dp.norm(dim=-1, keepdim=True), dn / dn.norm(dim=-1, keepdim=True)], -1)  # [N, E, 2]
        # 4. patch embeddings
        u = lin(levels[i], f"siglip_adaptors.{i}")  # [N, P, E]
        u = u / u.norm(dim=-1, keepdim=True)
        # 5. matching, softmax over the two channels, channel 1 is the map
        z = torch.matmul(100.0 * u, prompt).permute(0, 2, 1).reshape(n, 2, g, g).softmax(dim=1)  # [N, 2, g, g]
        maps.append(z[:, 1:])  # [N, 1, g, g]
        signif.append(z[:, 1:].mean(dim=(1, 2, 3)))  # [N]
    # 6. fuse
    m = sum(maps) / L  # [N, 1, g, g]
    s = sum(signif) / L  # [N]
    # 7. queries: AAP(V ⊙ m) / AAP(m) on the [N, D, g, g] grid
    vgrid = final.permute(0, 2, 1).reshape(n, d, g, g)  # [N, D, g, g]
    pi = F.adaptive_avg_pool2d(m, k)  # [N, 1, k, k]
    q = F.adaptive_avg_pool2d(vgrid * m, k) / pi  # [N, D, k, k]
    q = q.permute(0, 2, 3, 1).reshape(n, k * k, d)  # [N, k², D] cells row-major
    pi = pi.permute(0, 2, 3, 1).reshape(n, k * k, 1)  # [N, k², 1]
    # 8. single-head attention with explicit Q and K, raw features as values
    Q = lin(q, "q_former.query_proj")  # [N, k², A]
    K = lin(final, "q_former.key_proj")  # [N, P, A]
    att = torch.matmul(Q, K.transpose(-2, -1)) / torch.sqrt(torch.tensor(K.shape[-1], dtype=torch.float32))
    selected = torch.matmul(att.softmax(dim=-1), final)  # [N, k², D]
    # 9. global token: Python loop over images
    w = pi * s[:, None, None]  # [N, k², 1]
    glob = torch.cat([
        ((a * b).mean(dim=(0, 1)) / b.mean(dim=(0, 1)))[None]
        for a, b in zip(selected.split(split_sizes), w.split(split_sizes))
    ])  # [B, D]
    # 10. score
    logits = lin(F.gelu(lin(glob, "final_predictor.0")), "final_predictor.2").squeeze(-1)  # [B]
    return {"scores": logits.sigmoid(), "selected_tokens": selected, "global_tokens": glob, "anomaly_maps": m[:, 0]}


def vec_forward(expert, final, levels, split_sizes) -> dict:
    out = expert(final, levels, split_sizes)
    return {k: out[k] for k in ("scores", "selected_tokens", "global_tokens", "anomaly_maps")}


def expert_flops(cfg: ExpertConfig, splits: list[int]) -> dict[str, float]:
    """Analytic FLOPs of one expert forward (see the module docstring)."""
    N, B, P, D = sum(splits), len(splits), cfg.num_patches, cfg.vision_dim
    E, C, A, H, L = cfg.embed_dim, cfg.class_dim, cfg.attention_dim, cfg.score_hidden, cfg.num_levels
    g, k, k2 = cfg.grid, cfg.pool_size, cfg.pool_size**2
    bounds = [(math.floor(i * g / k), math.ceil((i + 1) * g / k)) for i in range(k)]  # AAP windows, overlapping
    cells = sum((r1 - r0) * (c1 - c0) for r0, r1 in bounds for c0, c1 in bounds)
    return {
        "projections": 2 * N * P * D * (L * E + A),
        "look_back_and_prompts": 2 * B * P * D + 2 * B * (D * C + C * C) + 2 * L * 2 * B * (E + C) * E,
        "matching": 2 * L * N * P * E * 2,
        "pooling": 2 * N * D * cells,
        "attention": 2 * N * k2 * D * A + 2 * N * k2 * P * (A + D),
        "global_and_score": 2 * N * k2 * D + 2 * B * (D * H + H),
    }


def make_timer(device: torch.device):
    def timed(fn):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3, out
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    return timed


def max_diff(a: dict, b: dict) -> dict[str, float]:
    return {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.split(
        "\n\n")[0] + " Prints medians, ratios, GFLOP/s and max abs differences; goals reported, never asserted.")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (CUDA-event timing, falls back to cpu if absent)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds; every variant once per round, order rotated")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    ap.add_argument("--splits", default="3,5,7,10", help="crops per image, base view INCLUDED (4 images, N=25)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for torch")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and features")
    ap.add_argument("--json", metavar="PATH", help="also dump the results as JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "cuda" or torch.cuda.is_available() else "cpu")
    if device.type != args.device:
        print(f"note: --device {args.device} requested but unavailable; running on {device}")
    splits = [int(s) for s in args.splits.split(",")]
    torch.manual_seed(args.seed)
    cfg = ExpertConfig()
    expert = AnomalyExpert(cfg).eval().to(device)
    sd = {k: v.to(device) for k, v in expert.to_official_state_dict().items()}
    expert_bf16 = AnomalyExpert(ExpertConfig(projection_dtype="bfloat16")).eval().to(device)
    load_into(expert_bf16, sd)  # same weights, through the official key names

    n, P, D, E = sum(splits), cfg.num_patches, cfg.vision_dim, cfg.embed_dim
    final = torch.randn(n, P, D, device=device)
    levels = [torch.randn(n, P, D, device=device) for _ in range(cfg.num_levels)]
    x32, w32 = torch.randn(n * P, D, device=device), torch.randn(D, 5 * E, device=device) / D**0.5
    x16, w16 = x32.bfloat16(), w32.bfloat16()

    variants = {
        "loop (official) fp32": lambda: loop_forward(sd, final, levels, splits, cfg),
        "vectorised fp32": lambda: vec_forward(expert, final, levels, splits),
        "vectorised bf16-proj": lambda: vec_forward(expert_bf16, final, levels, splits),
        "matmul [NP,D]@[D,5E] fp32": lambda: x32 @ w32,
        "matmul [NP,D]@[D,5E] bf16": lambda: x16 @ w16,
    }
    names = list(variants)
    timed = make_timer(device)
    times = {k: [] for k in names}
    outs = {}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for k in names:
                outs[k] = variants[k]()
        for r in range(args.rounds):
            for k in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
                t, outs[k] = timed(variants[k])
                times[k].append(t)

    fl = expert_flops(cfg, splits)
    total = sum(fl.values())
    mm_flops = 2 * n * P * D * 5 * E
    med = {k: statistics.median(v) for k, v in times.items()}
    loop = med[names[0]]
    diffs = {
        names[1]: max_diff(outs[names[1]], outs[names[0]]),  # vectorised fp32 vs loop fp32
        names[2]: max_diff(outs[names[2]], outs[names[1]]),  # bf16 vs vectorised fp32
    }

    print(f"adkit expert benchmark: device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"geometry: D={D} g={cfg.grid} (P={P}) E={E} L={cfg.num_levels} pool={cfg.pool_size}; "
          f"{len(splits)} images, split sizes {splits} (base view included) -> N={n} crops; "
          f"random features, seed {args.seed}")
    print(f"analytic FLOPs per forward: {total / 1e9:.2f} GFLOP ("
          + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in fl.items()) + "); matmul reference "
          f"{mm_flops / 1e9:.2f} GFLOP")
    print(f"timing: {args.warmup} warm-up + {args.rounds} rounds, order rotated per round, medians "
          f"({'CUDA events' if device.type == 'cuda' else 'perf_counter'})")
    print("max abs diff: vectorised fp32 vs loop fp32; bf16-proj vs vectorised fp32\n")
    hdr = (f"{'variant':<27} {'median ms':>10} {'min ms':>8} {'loop/this':>9} {'(min)':>6} {'GFLOP/s':>8} "
           f"{'|d score|':>9} {'|d selected|':>12} {'|d global|':>10} {'|d maps|':>9}")
    print(hdr + "\n" + "-" * len(hdr))
    rows, lmin = {}, min(times[names[0]])
    for k in names:
        flops, tmin = (mm_flops if k.startswith("matmul") else total), min(times[k])
        row = {"median_s": med[k], "min_s": tmin, "all_s": times[k], "ratio_loop_over_this": loop / med[k],
               "ratio_loop_over_this_min": lmin / tmin, "gflops": flops / med[k] / 1e9}
        line = (f"{k:<27} {med[k] * 1e3:>10.1f} {tmin * 1e3:>8.1f} {loop / med[k]:>9.2f} {lmin / tmin:>6.2f} "
                f"{row['gflops']:>8.1f}")
        if k in diffs:
            row["max_abs_diff"] = d = diffs[k]
            line += (f" {d['scores']:>9.2e} {d['selected_tokens']:>12.2e} {d['global_tokens']:>10.2e} "
                     f"{d['anomaly_maps']:>9.2e}")
        rows[k] = row
        print(line)

    r32, r16 = loop / med[names[1]], loop / med[names[2]]
    s16 = diffs[names[2]]["scores"]
    print("\ngoals (reported, not asserted; ratios of medians, min-based in the table):")
    print(f"  vectorised fp32 ratio >= 1.1 : {r32:.2f}  {'met' if r32 >= 1.1 else 'NOT met'}")
    print(f"  vectorised bf16 ratio >= 2   : {r16:.2f}  {'met' if r16 >= 2 else 'NOT met'}")
    print(f"  bf16 |d score| <= 1e-2       : {s16:.2e}  {'met' if s16 <= 1e-2 else 'NOT met'}")
    if device.type == "cuda":
        best = max(r32, r16)
        print(f"  GPU ratio >= 3 (best vectorised) : {best:.2f}  {'met' if best >= 3 else 'NOT met'}")
    if args.json:
        result = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "splits": splits, "rounds": args.rounds, "warmup": args.warmup, "seed": args.seed,
                  "flops": fl, "flops_total": total, "matmul_flops": mm_flops, "variants": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
