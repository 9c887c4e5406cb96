"""Preset speed: ``small`` preset detect / forward / chat on a laptop-class CPU (issue: real weights).

Measured side by side in one run (docs/architecture.md §8; nothing here is asserted by tests):

* first-use conversion time of the offline assets (DINOv2 ONNX → transformers, SmolLM2 GGUF →
  safetensors) into a fresh cache folder, and the cached load time;
* ``detect`` (tower + expert, no LLM) on a 1024×768 and a 384×384 photo;
* the full forward with the expert vs the base MLLM forward without it on the same image and
  prompt — the ratio is the expert's overhead (goal ≤ 1.10);
* ``chat`` decoding speed in tokens/s.
Rounds alternate the variants after a warm-up; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings

import torch


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def conversion_times() -> dict[str, float]:
    from adkit.weights import dinov2, smollm2

    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for name, mod, fn, kw in [("dinov2", dinov2, dinov2.dinov2_small, dict(image_size=224)),
                                  ("smollm2", smollm2, smollm2.smollm2, {})]:
            res[f"{name} first use (convert + cache)"] = timed(fn, cache_dir=tmp, **kw)[0]
            mod._cached.cache_clear()  # forget the in-process copy: the next call reads the disk cache
            res[f"{name} cached load"] = timed(fn, cache_dir=tmp, **kw)[0]
            mod._cached.cache_clear()
    return res


def photo(height: int, width: int):
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement (medians reported)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per chat for tokens/s")
    ap.add_argument("--skip-conversion", action="store_true", help="do not time the first-use conversions")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"adkit preset benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    rows = []
    if not args.skip_conversion:
        for name, sec in conversion_times().items():
            rows.append((name, sec * 1e3, ""))
    import adkit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sec, model = timed(adkit.AnomalyOV.from_preset, "small")
    rows.append(("from_preset('small') (assets cached)", sec * 1e3, ""))
    question = "Are there any defects for the object in the image? Please reply with 'Yes' or 'No'."
    for h, w in [(768, 1024), (384, 384)]:
        img = photo(h, w)
        conv = [{"role": "user", "content": "<image>\n" + question}]
        batches = {}
        for expert in (True, False):
            model.use_expert = expert
            batches[expert] = model.processor([conv], [[img]], add_generation_prompt=True)
        model.use_expert = True
        tokens = {e: int(b["attention_mask"].sum()) for e, b in batches.items()}

        def forward(expert):
            model.use_expert = expert
            try:
                return model(**batches[expert])
            finally:
                model.use_expert = True

        detect_t, with_t, without_t = [], [], []
        model.detect(img), forward(True), forward(False)  # warm-up
        for _ in range(args.rounds):
            detect_t.append(timed(model.detect, img)[0])
            with_t.append(timed(forward, True)[0])
            without_t.append(timed(forward, False)[0])
        med = statistics.median
        tag = f"{h}x{w}"
        rows.append((f"detect {tag} (tower + expert)", med(detect_t) * 1e3, f"{model.detect(img)[0].grid_shape} crops"))
        rows.append((f"forward {tag} with expert", med(with_t) * 1e3, f"{tokens[True]} tokens"))
        rows.append((f"forward {tag} without expert", med(without_t) * 1e3, f"{tokens[False]} tokens"))
        rows.append((f"  expert overhead {tag} (goal <= 1.10)", None, f"ratio {med(with_t) / med(without_t):.3f}"))
    img = photo(384, 384)
    n = args.new_tokens

    def chat(tokens):  # min_new_tokens: the untrained projector would otherwise stop at once
        return model.chat(img, "Describe the image.", max_new_tokens=tokens, min_new_tokens=tokens)

    chat(2)  # warm-up
    one, full = [], []
    for _ in range(max(1, args.rounds // 2)):
        one.append(timed(chat, 1)[0])
        full.append(timed(chat, n)[0])
    t1, tn = statistics.median(one), statistics.median(full)
    rows.append(("chat 384x384, prefill + 1 token", t1 * 1e3, ""))
    rows.append((f"chat 384x384, prefill + {n} tokens", tn * 1e3,
                 f"decode {(n - 1) / (tn - t1):.1f} tokens/s, overall {n / tn:.1f} tokens/s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'median ms':>10}  note")
    print("-" * (width + 30))
    for name, ms, note in rows:
        print(f"{name:<{width}}  {'' if ms is None else f'{ms:10.1f}':>10}  {note}")


if __name__ == "__main__":
    main()
