"""One script for a GPU machine: the paper-geometry numbers of the kit, side by side in one run.

Random weights at the preset's geometry (nothing to download; the speed of a matrix product
does not depend on its values), built directly on ``--device``:

1. **expert** — ``adkit.AnomalyExpert`` (vectorised) vs the official per-image-loop forward
   (``bench_expert.loop_forward``, the same weights through the official key names), 4 images
   of 3/5/7/10 crops at the paper geometry (D = 1152, 27×27 patches); goal ≥ 3×. The paper-
   geometry anchor on an H200 is 2.19 ms for the official expert (10 crops, bf16).
2. **tower** — the preset's vision tower on ``--crops`` tiles (SigLIP-so400m at 384 px for
   the paper presets): ms per forward and tiles/s, in ``--dtype``.
3. **LLM** — prefill of ``--prompt-tokens`` tokens (ms, tokens/s), then greedy decode
   tokens/s of ``--new-tokens`` for: transformers' default ``generate``, ``generate`` with
   ``cache_implementation="static"``, and adkit's static-cache loop (``adkit.decoding``), with
   whether their token ids are equal; goal ≥ 250 tokens/s on ``paper-0.5b`` (moonshot 1,000;
   the H200 anchors: 61 tokens/s for the default ``generate`` on Qwen2-0.5B, 264 static).

Timing: warm-up, then ``--rounds`` rounds with the variants alternating; medians. CUDA times
use ``torch.cuda.synchronize``. On a CPU, ``--preset tiny`` runs the whole suite in seconds
(a smoke run; the numbers mean nothing there). Nothing here is asserted by tests.

    .venv/bin/python benchmarks/gpu_suite.py --device cuda --dtype bf16            # on the GPU
    .venv/bin/python benchmarks/gpu_suite.py --device cpu --preset tiny --rounds 1  # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import DTYPES, clock  # noqa: E402  (CUDA-synchronised perf_counter)
from bench_expert import loop_forward, vec_forward  # noqa: E402  (the official loop transcription)


def rounds(device, variants: dict, n: int, warmup: int = 1) -> tuple[dict, dict]:
    """Median seconds of each variant over ``n`` rounds (order alternating), and its last output."""
    times, outs = {k: [] for k in variants}, {}
    for _ in range(warmup):
        for k, fn in variants.items():
            outs[k] = fn()
    names = list(variants)
    for r in range(n):
        for k in names if r % 2 == 0 else names[::-1]:
            sec, outs[k] = clock(device, variants[k])
            times[k].append(sec)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def expert_rows(config, device, dtype, n_rounds: int) -> dict:
    from adkit.expert import AnomalyExpert
    from adkit.weights.official import load_into

    cfg = config.expert_config()
    splits = [3, 5, 7, 10]
    torch.manual_seed(0)
    expert = AnomalyExpert(cfg).eval().to(device)
    sd = {k: v.to(device) for k, v in expert.to_official_state_dict().items()}
    proj = AnomalyExpert(dataclasses.replace(cfg, projection_dtype="bfloat16")).eval().to(device)
    load_into(proj, sd)
    n, P, D = sum(splits), cfg.num_patches, cfg.vision_dim
    final = torch.randn(n, P, D, device=device)
    levels = [torch.randn(n, P, D, device=device) for _ in range(cfg.num_levels)]
    variants = {"official loop fp32": lambda: loop_forward(sd, final, levels, splits, cfg),
                "adkit vectorised fp32": lambda: vec_forward(expert, final, levels, splits)}
    if dtype == torch.bfloat16:
        variants["adkit vectorised, bf16 projections"] = lambda: vec_forward(proj, final, levels, splits)
    with torch.inference_mode():
        med, outs = rounds(device, variants, n_rounds)
    loop = med["official loop fp32"]
    diff = float((outs["adkit vectorised fp32"]["scores"] - outs["official loop fp32"]["scores"]).abs().max())
    print(f"\n1. expert, D={D}, {cfg.grid}x{cfg.grid} patches, crops {splits} (N={n}); goal >= 3x the loop")
    for k, sec in med.items():
        print(f"   {k:<38} {sec * 1e3:>9.2f} ms   {loop / sec:>6.2f}x")
    print(f"   max |score vectorised - loop| = {diff:.2e}")
    return {"ms": {k: v * 1e3 for k, v in med.items()}, "ratio": {k: loop / v for k, v in med.items()},
            "score_diff": diff, "splits": splits}


def tower_rows(model, device, crops: int, n_rounds: int) -> dict:
    size = model.config.vision.image_size
    pixels = torch.randn(crops, 3, size, size, device=device)
    with torch.inference_mode():
        med, _ = rounds(device, {"tower": lambda: model.features(pixels)}, n_rounds)
    sec = med["tower"]
    print(f"\n2. vision tower, {crops} tiles of {size} px, {model.dtype}: {sec * 1e3:.2f} ms ({crops / sec:.1f} tiles/s)")
    return {"ms": sec * 1e3, "tiles_per_s": crops / sec, "crops": crops, "size": size}


def llm_rows(model, device, prompt_tokens: int, new_tokens: int, n_rounds: int) -> dict:
    from adkit import decoding, hf

    mllm = model.mllm
    torch.manual_seed(0)
    vocab = hf.embed_tokens(mllm).weight.shape[0]
    ids = torch.randint(0, vocab, (1, prompt_tokens), device=device)
    embeds = hf.embed_tokens(mllm)(ids)
    mask = torch.ones_like(ids)
    eos = model.processor.im_end_id
    gen = {"do_sample": False, "eos_token_id": eos, "pad_token_id": model.processor.pad_token_id,
           "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    lm = hf.language_model(mllm)

    def prefill():
        hidden = lm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return hf.lm_head(mllm)(hidden[:, -1])

    def hf_generate(k, **extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mllm.generate(inputs_embeds=embeds, attention_mask=mask, **{**gen, "max_new_tokens": k,
                                                                               "min_new_tokens": k}, **extra)

    def adkit_loop(k):
        return decoding.greedy_generate(mllm, embeds, mask, **{**gen, "max_new_tokens": k, "min_new_tokens": k})

    paths = {"transformers generate (dynamic cache)": lambda k: hf_generate(k),
             "transformers generate (static cache)": lambda k: hf_generate(k, cache_implementation="static"),
             "adkit static-cache loop": adkit_loop}
    with torch.inference_mode():
        med_pre, _ = rounds(device, {"prefill": prefill}, n_rounds)
        variants = {}
        for name, fn in paths.items():
            variants[name + " 1"] = (lambda f: lambda: f(1))(fn)
            variants[name + " n"] = (lambda f: lambda: f(new_tokens))(fn)
        med, outs = rounds(device, variants, n_rounds)
    pre = med_pre["prefill"]
    print(f"\n3. LLM {type(lm).__name__}, {model.dtype}: prefill {prompt_tokens} tokens {pre * 1e3:.1f} ms "
          f"({prompt_tokens / pre:,.0f} tokens/s); greedy decode of {new_tokens} tokens (goal >= 250 tokens/s)")
    rows = {"prefill_ms": pre * 1e3, "prefill_tok_s": prompt_tokens / pre, "decode": {}}
    first = None
    for name in paths:
        rate = (new_tokens - 1) / max(med[name + " n"] - med[name + " 1"], 1e-9)
        out = outs[name + " n"]
        out = out[:, -new_tokens:] if out.shape[1] > new_tokens else out
        first = out if first is None else first
        same = bool(torch.equal(out.cpu(), first.cpu()))
        rows["decode"][name] = {"tok_s": rate, "ids_equal_to_first": same}
        print(f"   {name:<40} {rate:>9.1f} tokens/s   ids equal to the first: {'yes' if same else 'no'}")
    return rows


@torch.no_grad()  # a decorator, not set_grad_enabled(False): callers (tests) keep autograd
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="tower and LLM dtype (default: bf16)")
    ap.add_argument("--preset", default="paper-0.5b", help="geometry (default: paper-0.5b; tiny for a CPU smoke run)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds, medians (default: 5)")
    ap.add_argument("--crops", type=int, default=10, help="tiles per tower forward (default: 10)")
    ap.add_argument("--prompt-tokens", type=int, default=1500, help="prefill length (default: 1500)")
    ap.add_argument("--new-tokens", type=int, default=128, help="decoded tokens per timed run (default: 128)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("expert", "tower", "llm"), help="sections to skip")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    from adkit import AnomalyOV
    from adkit.config import get_preset

    config = get_preset(args.preset)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"adkit gpu_suite: {args.preset} geometry, random weights, {name}, {args.dtype}, torch {torch.__version__}, "
          f"{args.rounds} rounds")
    results = {"args": vars(args), "device_name": name}
    if "expert" not in args.skip:
        results["expert"] = expert_rows(config, device, dtype, args.rounds)
    if {"tower", "llm"} - set(args.skip):
        t = time.perf_counter()
        with torch.device(device):  # random init on the device itself: seconds for 0.5B on a GPU
            model = AnomalyOV.from_config(config).eval()
        model.set_dtype(dtype)
        print(f"(built {args.preset} with random weights on {device} in {time.perf_counter() - t:.1f} s)")
        if "tower" not in args.skip:
            results["tower"] = tower_rows(model, device, args.crops, args.rounds)
        if "llm" not in args.skip:
            results["llm"] = llm_rows(model, device, args.prompt_tokens, args.new_tokens, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
