"""Decoding speed of ``small`` chat: transformers' ``generate`` vs adkit's static-cache loop.

Both paths get the same prompt embeddings (a ``data_samples`` photo and a question, embedded once,
so the vision tower is not timed) and the preset's decoding defaults (greedy,
``repetition_penalty``, ``no_repeat_ngram_size``); ``min_new_tokens`` fixes the length. Per round,
after a warm-up, each path runs once with 1 new token (≈ prefill) and once with ``--new-tokens``,
alternating; decode tokens/s = (n - 1) / (t_n - t_1). Medians are printed with the ratio new/old
and whether the token ids are equal.

The ceiling: decoding one token reads every LLM weight once (the decoder and the LM head; the
embedding lookup reads one row), so tokens/s ≤ memory bandwidth / weight bytes. The bandwidth
is measured here, as the median time of a sum over a 1 GiB tensor on ``--device``; so is the
time of the step's matrix-vector products alone (every ``nn.Linear`` on one token), the floor
for any loop around the same kernels.
Nothing here is asserted by tests (docs/architecture.md §8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
QUESTION = "Is there any anomaly in the image? Please describe it."


def clock(device: torch.device, fn, *args, **kw):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn(*args, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t, out


def bandwidth(device: torch.device, rounds: int) -> float:
    """Bytes/s read by a sum over a 1 GiB fp32 tensor (median of ``rounds``)."""
    x = torch.ones(256 * 1024 * 1024, device=device)
    x.sum()
    times = [clock(device, x.sum)[0] for _ in range(rounds)]
    return x.numel() * x.element_size() / statistics.median(times)


def weight_bytes_per_token(mllm) -> int:
    """Bytes of the weights one decode step reads: the text decoder without its embedding table,
    plus the LM head (the same table when tied)."""
    from adkit import hf

    embed, head = hf.embed_tokens(mllm).weight, hf.lm_head(mllm).weight
    params = {p.data_ptr(): p for p in hf.language_model(mllm).parameters() if p is not embed}
    params[head.data_ptr()] = head
    return sum(p.numel() * p.element_size() for p in params.values())


def matmul_floor(mllm, device: torch.device, rounds: int) -> float:
    """Seconds of one decode step's matrix-vector products alone: every ``nn.Linear`` of the
    decoder and the LM head on a 1-token input (median of ``rounds``) — what no decoding loop
    goes below without fewer weight bytes or a faster kernel."""
    from adkit import hf

    linears = [m for m in hf.language_model(mllm).modules() if isinstance(m, torch.nn.Linear)] + [hf.lm_head(mllm)]
    dtype = hf.lm_head(mllm).weight.dtype
    inputs = {lin.in_features: torch.randn(1, 1, lin.in_features, device=device, dtype=dtype) for lin in linears}

    def step():
        for lin in linears:
            lin(inputs[lin.in_features])

    step()
    return statistics.median(clock(device, step)[0] for _ in range(rounds))


@torch.no_grad()  # a decorator, not set_grad_enabled(False): callers (tests) keep autograd
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="the LLM's weights")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (medians); paths alternate")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens per timed generation")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for torch")
    ap.add_argument("--json", metavar="PATH", help="also dump the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from PIL import Image

    from adkit import AnomalyOV, decoding

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnomalyOV.from_preset("small").to(device)
    model.mllm.to(DTYPES[args.dtype])
    root = Path(__file__).resolve().parents[1] / "data_samples" / "test" / "hazelnut"
    image = Image.open(sorted(root.rglob("*.png"))[0]).convert("RGB")
    batch = model.processor([[{"role": "user", "content": "<image>\n" + QUESTION}]], [[image]],
                            add_generation_prompt=True)
    embeds, _ = model.embed(batch["input_ids"], batch["pixel_values"], batch["image_sizes"], batch["split_sizes"],
                            batch["single_view"])
    mask = batch["attention_mask"].to(device)
    gen = {**model.config.generation, "do_sample": False, "eos_token_id": model.processor.im_end_id,
           "pad_token_id": model.processor.pad_token_id}

    def old(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.mllm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n,
                                       min_new_tokens=n, **gen)

    def new(n):
        return decoding.greedy_generate(model.mllm, embeds, mask, max_new_tokens=n, min_new_tokens=n, **gen)

    paths = {"transformers generate (old)": old, "static-cache loop (new)": new}
    n = args.new_tokens
    print(f"adkit decode benchmark: torch {torch.__version__}, {args.device}, {args.dtype}, "
          f"{args.threads} threads, prompt {embeds.shape[1]} tokens, {n} new tokens", file=sys.stderr)
    for fn in paths.values():
        fn(4)  # warm-up
    times = {k: {"prefill": [], "full": []} for k in paths}
    ids = {}
    for r in range(args.rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            times[name]["prefill"].append(clock(device, paths[name], 1)[0])
            sec, ids[name] = clock(device, paths[name], n)
            times[name]["full"].append(sec)
    gbps = bandwidth(device, 5)
    per_token = weight_bytes_per_token(model.mllm)
    limit = gbps / per_token
    floor = matmul_floor(model.mllm, device, 10)
    rows = {}
    for name, t in times.items():  # medians, and the fastest round (least disturbed on a shared machine)
        prefill, full = statistics.median(t["prefill"]), statistics.median(t["full"])
        rows[name] = {"prefill_s": prefill, "decode_tok_s": (n - 1) / max(full - prefill, 1e-9),
                      "prefill_min_s": min(t["prefill"]),
                      "decode_tok_s_best": (n - 1) / max(min(t["full"]) - min(t["prefill"]), 1e-9),
                      "decode_tok_s_rounds": [(n - 1) / max(f - p, 1e-9) for f, p in zip(t["full"], t["prefill"])]}
    o, w = (rows[k] for k in paths)
    equal = torch.equal(*(ids[k].cpu() for k in paths))
    print(f"memory bandwidth (sum over 1 GiB): {gbps / 1e9:.1f} GB/s; LLM weights read per token: "
          f"{per_token / 1e6:.0f} MB ({args.dtype}) -> bandwidth limit {limit:.1f} tokens/s")
    print(f"the step's matrix-vector products alone: {floor * 1e3:.1f} ms ({per_token / floor / 1e9:.1f} GB/s) "
          f"-> {1 / floor:.1f} tokens/s")
    print("medians (best: from the fastest 1-token and n-token rounds)")
    print(f"{'path':<30} {'prefill s':>10} {'best':>6} {'decode tok/s':>13} {'best':>6} {'of limit':>9}  rounds")
    for name, row in rows.items():
        print(f"{name:<30} {row['prefill_s']:>10.2f} {row['prefill_min_s']:>6.2f} {row['decode_tok_s']:>13.1f} "
              f"{row['decode_tok_s_best']:>6.1f} {row['decode_tok_s'] / limit:>8.0%}  "
              + " ".join(f"{x:.1f}" for x in row["decode_tok_s_rounds"]))
    print(f"ratio new/old: decode {w['decode_tok_s'] / o['decode_tok_s']:.2f}x "
          f"(best {w['decode_tok_s_best'] / o['decode_tok_s_best']:.2f}x), prefill time "
          f"{w['prefill_s'] / o['prefill_s']:.2f}x; ids equal: {'yes' if equal else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "bandwidth_Bps": gbps, "weight_bytes": per_token,
                                               "limit_tok_s": limit, "matmul_floor_s": floor, "ids_equal": equal, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
