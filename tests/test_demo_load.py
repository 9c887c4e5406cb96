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
