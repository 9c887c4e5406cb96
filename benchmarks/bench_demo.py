"""Detection through the demo app vs a direct ``model.detect`` call, side by side (docs/architecture.md §8).

Three ways to score the same image file, interleaved in one run:

* ``direct``  — ``model.detect(path)`` (decode + tower + expert + map stitching);
* ``handler`` — :func:`adkit.demo.handlers.detect` (the above + verdict + overlay picture);
* ``app``     — ``gradio_client`` → the app on 127.0.0.1 → the handler → back (upload, queue,
  overlay PNG encode, download).

``--browser`` adds a fourth way, what a presenter waits for: the page in headless Chromium
(Playwright driving Debian's ``chromium``), the image set on the page's file input, timed until
the new overlay image has loaded (upload, queue, handler, JPEG, download, rendering; the
chained ``/explain`` keeps running after that and is not counted).

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


def _browser_page(url: str):
    """A headless Chromium page on the app, ready for uploads; and the function that closes it."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=chromium, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"])
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=60_000)

    def stop():
        browser.close()
        pw.stop()

    return page, stop


def _browser_detect(page, path: str, lock) -> float:
    """Set ``path`` on the page's file input; seconds until a new overlay image has loaded. Then
    (not timed) wait until the chained ``/explain`` has let go of the model's lock for 0.6 s, so
    it does not run beside the next measurement."""
    before = page.evaluate("() => document.querySelector('#overlay img')?.src || ''")
    t0 = time.perf_counter()
    page.locator("#input-image input[type=file]").set_input_files(path)
    page.wait_for_function("(old) => { const img = document.querySelector('#overlay img');"
                           " return img && img.src !== old && img.complete && img.naturalWidth > 0; }",
                           arg=before, timeout=120_000)
    seconds = time.perf_counter() - t0
    free = 0
    while free < 3:
        page.wait_for_timeout(200)
        if lock.acquire(blocking=False):
            lock.release()
            free += 1
        else:
            free = 0
    return seconds


def bench(preset: str, repeats: int, warmup: int, browser: bool = False) -> dict:
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
        page = None
        if browser:
            page, stop = _browser_page(url)
            times["browser"] = []
            calls["browser"] = lambda p: _browser_detect(page, p, pipeline.lock)
        try:
            with torch.no_grad():
                for i in range(warmup + repeats):
                    path = paths[i % len(paths)]
                    for name, call in calls.items():  # interleaved: the same load for all of them
                        t0 = time.perf_counter()
                        measured = call(path)  # the browser path times itself (a float); the others return results
                        if i >= warmup:
                            times[name].append(measured if name == "browser" else time.perf_counter() - t0)
        finally:
            if page is not None:
                stop()
    finally:
        demo.close()
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    extra = {"browser_ratio": med["browser"] / med["direct"]} if browser else {}
    return {"preset": preset, **med, "ratio": med["app"] / med["direct"], **extra, "images": len(paths)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=["tiny"], choices=["tiny", "small", "paper-0.5b", "paper-7b"],
                    help="presets to measure (default: tiny)")
    ap.add_argument("--repeats", type=int, default=12, help="timed rounds per preset (default: 12)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    ap.add_argument("--browser", action="store_true",
                    help="also time the page in headless Chromium: file input set → new overlay loaded")
    args = ap.parse_args(argv)
    rows = [bench(p, args.repeats, args.warmup, args.browser) for p in args.preset]
    print(f"{'preset':<11}{'direct ms':>11}{'handler ms':>12}{'app ms':>10}{'app/direct':>12}  goal ≤ 1.2")
    for r in rows:
        print(f"{r['preset']:<11}{r['direct']:>11.1f}{r['handler']:>12.1f}{r['app']:>10.1f}{r['ratio']:>12.2f}"
              f"  {'ok' if r['ratio'] <= 1.2 else 'over'}  ({r['images']} example images, median)")
        if "browser" in r:
            print(f"{'':<11}browser (Chromium, upload → overlay shown) {r['browser']:.1f} ms = "
                  f"{r['browser_ratio']:.2f}× direct  {'ok' if r['browser_ratio'] <= 1.2 else 'over'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
