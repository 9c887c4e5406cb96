"""fp32 vs bf16 compute for the shipped ``small`` model (``AnomalyOV.set_dtype``, ``--dtype``).

Two models side by side in one process, the same weights: ``from_preset("small")`` (fp32) and
``from_preset("small", dtype="bfloat16")`` (projector and LLM weights in bf16, the tower's
matmuls under bf16 autocast, the expert in fp32). Per round, after a warm-up, each runs in
alternating order:

- ``detect``: the expert's score and map for one 1024×768 photo (anyres tiles, tower + expert);
- ``prefill``: the LLM's forward over the embedded chat prompt of that photo (~1.5k tokens,
  the tower not timed), up to the first token's logits;
- ``decode``: greedy tokens/s after the prefill, ``(n - 1) / (t_n - t_1)`` with the kit's
  decoder at the preset's decoding defaults and ``min_new_tokens`` fixing the length.

Printed: medians (and the fastest round), the ratio fp32/bf16 (> 1: bf16 faster), and what
equality holds: the largest score difference and mean map difference, whether the greedy
first token and the full answers are equal. Whether bf16 is native here is printed too: on a
CPU without avx512_bf16/AMX it is emulated and slower, which is why ``--dtype auto`` does not
pick it there. Nothing here is asserted by tests (docs/architecture.md §8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import clock  # noqa: E402  (CUDA-synchronised perf_counter)

QUESTION = "Are there any defects for the object in the image? Please reply with 'Yes' or 'No'."


def photo(width: int = 1024, height: int = 768):
    """skimage's coffee photo at ``width``×``height`` (public domain, shipped with scikit-image)."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.coffee()).resize((width, height), Image.BICUBIC)


@torch.no_grad()  # a decorator, not set_grad_enabled(False): callers (tests) keep autograd
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds, medians (default: 5)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens per timed generation (default: 32)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help=f"CPU threads for torch (default: {torch.get_num_threads()})")
    ap.add_argument("--json", metavar="PATH", help="also dump the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from adkit import AnomalyOV, decoding, hf, precision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"fp32": AnomalyOV.from_preset("small").to(device),
                  "bf16": AnomalyOV.from_preset("small").to(device).set_dtype("bfloat16")}
    image = photo()
    prompts = {}
    for name, model in models.items():
        batch = model.processor([[{"role": "user", "content": "<image>\n" + QUESTION}]], [[image]],
                                add_generation_prompt=True)
        embeds, _ = model.embed(batch["input_ids"], batch["pixel_values"], batch["image_sizes"],
                                batch["split_sizes"], batch["single_view"])
        prompts[name] = embeds, batch["attention_mask"].to(device)
    length = prompts["fp32"][0].shape[1]
    gen = {**models["fp32"].config.generation, "do_sample": False, "pad_token_id": models["fp32"].processor.pad_token_id,
           "eos_token_id": models["fp32"].processor.im_end_id}
    n = args.new_tokens

    def detect(name):
        return models[name].detect(image)[0]

    def prefill(name):
        model, (embeds, mask) = models[name], prompts[name]
        hidden = hf.language_model(model.mllm)(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return hf.lm_head(model.mllm)(hidden[:, -1]).argmax(-1)

    def generate(name, k):
        model, (embeds, mask) = models[name], prompts[name]
        return decoding.greedy_generate(model.mllm, embeds, mask, max_new_tokens=k, min_new_tokens=k, **gen)

    native = precision.native_bf16(device)
    print(f"adkit dtype benchmark: torch {torch.__version__}, {args.device}, {args.threads} threads, bf16 "
          f"{'native' if native else 'EMULATED (no avx512_bf16/AMX: expect bf16 slower)'}; detect 1024x768, "
          f"prompt {length} tokens, {n} new tokens, {args.rounds} rounds", file=sys.stderr)
    for name in models:  # warm-up
        detect(name), prefill(name), generate(name, 2)
    times = {name: {"detect": [], "prefill": [], "gen1": [], "genn": []} for name in models}
    out = {}
    for r in range(args.rounds):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            t = times[name]
            sec, det = clock(device, detect, name)
            t["detect"].append(sec)
            sec, first = clock(device, prefill, name)
            t["prefill"].append(sec)
            t["gen1"].append(clock(device, generate, name, 1)[0])
            sec, ids = clock(device, generate, name, n)
            t["genn"].append(sec)
            out[name] = det, first, ids
    rows = {}
    for name, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        rows[name] = {"detect_s": med["detect"], "detect_min_s": min(t["detect"]),
                      "prefill_s": med["prefill"], "prefill_min_s": min(t["prefill"]),
                      "decode_tok_s": (n - 1) / max(med["genn"] - med["gen1"], 1e-9),
                      "decode_tok_s_best": (n - 1) / max(min(t["genn"]) - min(t["gen1"]), 1e-9)}
    (d32, f32, i32), (d16, f16, i16) = out["fp32"], out["bf16"]
    equal = {"score_abs_diff": abs(d32.score - d16.score),
             "map_mean_abs_diff": float(abs(d32.anomaly_map - d16.anomaly_map).mean()),
             "first_token_equal": bool(torch.equal(f32.cpu(), f16.cpu())),
             "answer_equal": bool(torch.equal(i32.cpu(), i16.cpu()))}
    print(f"{'measurement':<22} {'fp32':>9} {'best':>7} {'bf16':>9} {'best':>7} {'ratio':>7}")
    for key, label, unit in (("detect_s", "detect 1024x768", "s"), ("prefill_s", f"prefill {length} tok", "s"),
                             ("decode_tok_s", "decode", "tok/s")):
        best = key.replace("_s", "_min_s") if unit == "s" else "decode_tok_s_best"
        a, b = rows["fp32"][key], rows["bf16"][key]
        ratio = a / b if unit == "s" else b / a
        print(f"{label:<22} {a:>8.3f}{unit[0]} {rows['fp32'][best]:>7.3f} {b:>8.3f}{unit[0]} "
              f"{rows['bf16'][best]:>7.3f} {ratio:>6.2f}x")
    print(f"equality: |score diff| {equal['score_abs_diff']:.2e}, mean |map diff| {equal['map_mean_abs_diff']:.2e}, "
          f"first token equal: {'yes' if equal['first_token_equal'] else 'no'}, {n}-token answer equal: "
          f"{'yes' if equal['answer_equal'] else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "equality": equal, "prompt_tokens": length,
                                               "native_bf16": native, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
