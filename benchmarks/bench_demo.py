"""Detection through the demo app vs a direct ``model.detect`` call, side by side (docs/architecture.md §8).

Three ways to score the same image file, interleaved in one run:

* ``direct``  — ``model.detect(path)`` (decode + tower + expert + map stitching);
* ``handler`` — :func:`adkit.demo.handlers.detect` (the above + verdict + overlay picture);
* ``app``     — ``gradio_client`` → the app on 127.0.0.1 → the handler → back (upload, queue,
  overlay PNG encode, download).

Prints median milliseconds and the overhead ratio app / direct (goal ≤ 1.2 for models
whose detection takes long enough for the fixed HTTP cost to fade; the tiny preset's 6 ms
detection cannot meet it). Example: ``python benchmarks/bench_demo.py --preset tiny small``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
import warnings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(preset: str, repeats: int, warmup: int) -> dict:
    import torch

    from adkit import AnomalyOV
    from adkit.demo import DemoPipeline, build_demo, example_images
    from adkit.demo import handlers as H
    from gradio_client import Client, handle_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = AnomalyOV.from_preset(preset)
    pipeline = DemoPipeline(model)
    demo = build_demo(pipeline)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    try:
        client = Client(url, verbose=False)
        paths = [str(p) for p in example_images()]
        times = {"direct": [], "handler": [], "app": []}
        calls = {
            "direct": lambda p: model.detect(p),
            "handler": lambda p: H.detect(pipeline, p, 0.5),
            "app": lambda p: client.predict(handle_file(p), 0.5, preset, "expert", None, api_name="/detect"),
        }
        with torch.no_grad():
            for i in range(warmup + repeats):
                path = paths[i % len(paths)]
                for name, call in calls.items():  # interleaved: the same load for all three
                    t0 = time.perf_counter()
                    call(path)
                    if i >= warmup:
                        times[name].append(time.perf_counter() - t0)
    finally:
        demo.close()
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    return {"preset": preset, **med, "ratio": med["app"] / med["direct"], "images": len(paths)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=["tiny"], choices=["tiny", "small", "paper-0.5b", "paper-7b"],
                    help="presets to measure (default: tiny)")
    ap.add_argument("--repeats", type=int, default=12, help="timed rounds per preset (default: 12)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    args = ap.parse_args(argv)
    rows = [bench(p, args.repeats, args.warmup) for p in args.preset]
    print(f"{'preset':<11}{'direct ms':>11}{'handler ms':>12}{'app ms':>10}{'app/direct':>12}  goal ≤ 1.2")
    for r in rows:
        print(f"{r['preset']:<11}{r['direct']:>11.1f}{r['handler']:>12.1f}{r['app']:>10.1f}{r['ratio']:>12.2f}"
              f"  {'ok' if r['ratio'] <= 1.2 else 'over'}  ({r['images']} example images, median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
