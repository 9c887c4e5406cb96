"""A bounded load test of the demo: 8 concurrent gradio_client clients × 5 detections each.

Every request must be answered with the same score a direct ``model.detect`` gives (the
queue, its concurrency limit and the pipeline's lock serialise model use without losing or
mixing up requests). Tiny preset; nothing here measures time.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

CLIENTS, REQUESTS = 8, 5


@pytest.fixture(scope="module")
def served(tiny):
    from adkit.demo import DemoPipeline, build_demo, example_images

    demo = build_demo(DemoPipeline(tiny), concurrency_limit=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    yield url, example_images()
    demo.close()
    demo.output_dir.close()


def test_concurrent_clients_all_answered(served, tiny):
    from gradio_client import Client, handle_file

    url, examples = served
    expected = {str(p): round(d.score, 4) for p, d in zip(examples, tiny.detect([str(p) for p in examples]))}

    def session(i: int) -> list[tuple[str, float | None, str]]:
        client = Client(url, verbose=False)
        out = []
        for k in range(REQUESTS):
            path = str(examples[(i + k) % len(examples)])
            score, verdict, overlay, status = client.predict(handle_file(path), 0.5, "tiny", "expert", None, api_name="/detect")
            out.append((path, score, status))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for rs in pool.map(session, range(CLIENTS)) for r in rs]
    assert len(results) == CLIENTS * REQUESTS
    errors = [(p, status) for p, score, status in results if score is None]
    assert not errors, errors
    for path, score, _ in results:  # each answer belongs to its own image
        assert score == pytest.approx(expected[path], abs=1e-4), path


# ----------------------------------------------------------------------------- a real `adkit demo` process

RUNS, LOAD_CLIENTS, LOAD_REQUESTS = 3, 16, 10


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``adkit demo --preset tiny`` in its own process, its temp dir (TMPDIR: the output folder
    and Gradio's cache) in a fresh folder; (process, url, tmp)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    tmp = tmp_path_factory.mktemp("demo-tmp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "adkit.cli", "demo", "--preset", "tiny", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):  # until it answers (or dies); a bound on waiting, not a timing assertion
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            time.sleep(0.5)
    assert proc.poll() is None, (tmp / "server.log").read_text()
    yield proc, url, tmp
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def _load_run(url: str, examples) -> list:
    from gradio_client import Client, handle_file

    def session(i: int):
        client = Client(url, verbose=False)
        out = []
        for k in range(LOAD_REQUESTS):
            path = str(examples[(i + k) % len(examples)])
            out.append(client.predict(handle_file(path), 0.5, "tiny", "expert", None, api_name="/detect")[0])
        return out

    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        return [s for ss in pool.map(session, range(LOAD_CLIENTS)) for s in ss]


def test_rss_stays_flat_and_outputs_bounded_over_repeated_load_runs(server):
    """Three runs of 16 clients × 10 detections against one server process: every request answered,
    RSS after the third run within 5 % of RSS after the first, the output folder bounded."""
    from adkit.demo import example_images
    from adkit.demo.outputs import KEEP_FILES

    proc, url, tmp = server
    examples = example_images()
    rss = []
    for _ in range(RUNS):
        scores = _load_run(url, examples)
        assert len(scores) == LOAD_CLIENTS * LOAD_REQUESTS and all(s is not None for s in scores)
        rss.append(_rss_kb(proc.pid))
    growth = (rss[-1] - rss[0]) / rss[0]
    print(f"demo RSS after each run (KiB): {rss}; growth after the first: {growth:+.1%}")
    assert growth < 0.05, rss
    folders = list(tmp.glob("adkit-demo-*"))
    assert len(folders) == 1
    assert 0 < len(list(folders[0].iterdir())) <= KEEP_FILES  # 480 pictures written, the newest kept


def test_the_largest_upload_costs_about_what_a_budget_sized_one_does(server, tmp_path):
    """Per-request memory is bounded by the pixel budget: after a 2304² upload (the budget), the
    largest image the demo accepts (8192², 67 MP, under the upload cap) raises the server's peak
    RSS (VmHWM) by less than half of what its maps alone would need at full size."""
    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    from adkit.demo.handlers import DEMO_MAX_PIXELS

    proc, url, _ = server
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    side = int(DEMO_MAX_PIXELS ** 0.5)
    Image.fromarray(cells.repeat(side // 128, 0).repeat(side // 128, 1)).save(tmp_path / "max.png")
    Image.fromarray(cells.repeat(18, 0).repeat(18, 1)).save(tmp_path / "budget.png")  # 2304²
    assert (tmp_path / "max.png").stat().st_size < 20 * 2 ** 20
    client = Client(url, verbose=False)
    for name in ("budget.png", "max.png"):
        score, _, _, status = client.predict(handle_file(str(tmp_path / name)), 0.5, "tiny", "expert", None,
                                             api_name="/detect")
        assert score is not None, status
        if name == "budget.png":
            hwm_budget = _rss_kb(proc.pid, "VmHWM")
    extra_mb = (_rss_kb(proc.pid, "VmHWM") - hwm_budget) / 1024
    full_maps_mb = DEMO_MAX_PIXELS * 4 * 3 / 2 ** 20  # three float32 maps at full size alone: 768 MB
    print(f"peak RSS added by the {DEMO_MAX_PIXELS / 1e6:.0f} MP upload: {extra_mb:.0f} MB")
    assert extra_mb < full_maps_mb / 2  # the decode itself (192 MB for a 67 MP PNG) is unavoidable


def test_sigterm_removes_the_output_folder(server):
    """SIGTERM (what service managers and `kill` send) stops the server and removes adkit-demo-*."""
    import signal

    from gradio_client import Client, handle_file

    from adkit.demo import example_images

    proc, url, tmp = server
    Client(url, verbose=False).predict(handle_file(str(example_images()[0])), 0.5, "tiny", "expert", None,
                                       api_name="/detect")
    (folder,) = tmp.glob("adkit-demo-*")
    assert any(folder.iterdir())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    assert not folder.exists() and not list(tmp.glob("adkit-demo-*"))
