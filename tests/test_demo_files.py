"""The demo reads only what it was given (adkit.demo.uploads), checked over raw HTTP.

A real app on 127.0.0.1 (tiny preset) receives hand-written JSON payloads the way an attacker
would send them — no gradio_client upload step — naming server files that were never uploaded:
absolute paths, ``..`` out of the upload folder, a symlink out of it, a FIFO, a device, a folder.
Each must be refused without any pixel of the file coming back and without revealing whether the
path exists; genuine uploads keep working. Gradio's own file route is probed too.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from adkit.demo import handlers as H
from adkit.demo.uploads import MAX_UPLOAD_BYTES, REFUSED, UploadGuard, upload_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A server file nobody uploaded: a PNG whose pixels would be recognisable in an overlay."""
    path = tmp_path_factory.mktemp("server-private") / "secret.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def app(tiny):
    from adkit.demo import build_demo

    demo = build_demo(H.DemoPipeline(tiny, max_new_tokens=4))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def inside():
    """A scratch folder inside Gradio's upload folder (for links and FIFOs placed there)."""
    root = upload_folder()
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root, prefix="adkit-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _call(url: str, api: str, data: list, timeout: float = 60) -> tuple[str, object]:
    """POST /gradio_api/call/<api> then read its event stream: (event, data) of the last event."""
    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=timeout)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    event, payload = "", None
    deadline = time.monotonic() + timeout  # heartbeats keep the stream alive: a stuck worker must still fail
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"/{api} gave no answer within {timeout} s")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                text = line.split(":", 1)[1].strip()
                payload = json.loads(text) if text and text != "null" else None
            if event in ("complete", "error") and payload is not None:
                break
    return event, payload


def _detect(url, image, method="expert", reference=None, timeout: float = 60):
    return _call(url, "detect", [image, 0.5, "tiny", method, reference], timeout=timeout)


def _refused(event, payload):
    """An answer that carries no picture and only the generic refusal."""
    if event == "error":
        return True
    score, verdict, overlay, status = payload
    assert score is None and overlay is None, payload
    return REFUSED in status


def _server_paths(secret, inside):
    root = upload_folder()
    link = inside / "link.png"
    if not link.exists():
        link.symlink_to(secret)
    fifo = inside / "pipe.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    folder = inside / "folder.png"
    folder.mkdir(exist_ok=True)
    return {
        "absolute": str(secret),
        "dot-dot out of the upload folder": f"{root}/../../{secret.relative_to('/')}",
        "symlink inside pointing out": str(link),
        "FIFO inside": str(fifo),
        "device": "/dev/zero",
        "folder inside": str(folder),
        "relative": os.path.relpath(secret),
        "NUL byte": str(secret) + "\0.png",
    }


@pytest.mark.parametrize("case", ["absolute", "dot-dot out of the upload folder", "symlink inside pointing out",
                                  "FIFO inside", "device", "folder inside", "relative", "NUL byte"])
@pytest.mark.parametrize("meta", [False, True], ids=["bare", "with-meta"])
def test_detect_refuses_server_paths(app, secret, inside, case, meta):
    path = _server_paths(secret, inside)[case]
    payload = {"path": path, **({"meta": {"_type": "gradio.FileData"}} if meta else {})}
    event, data = _detect(app[1], payload, timeout=30)  # a FIFO that were opened would hang here
    assert _refused(event, data), (case, event, data)


def test_refusal_says_nothing_about_the_path(app, secret):
    """Existing file, missing file and a system file get the same words: no size, no type."""
    answers = [_detect(app[1], {"path": p})[1][3] for p in (str(secret), "/no/such/file.png", "/etc/passwd")]
    assert answers[0] == answers[1] == answers[2] and "bytes" not in answers[0] and "format" not in answers[0]


def test_other_events_refuse_server_paths(app, secret, tiny):
    url = app[1]
    event, data = _detect(url, {"path": str(secret)}, method="mutual")
    assert _refused(event, data)
    uploaded = _upload(url, secret)  # the image itself uploaded, a reference naming a server file
    event, data = _detect(url, {"path": uploaded}, method="mutual", reference=[{"path": str(secret)}])
    assert _refused(event, data)
    event, data = _call(url, "explain", [{"path": str(secret)}, "tiny"])
    assert event == "error" or data == [None, None]
    event, data = _call(url, "chat", [{"path": str(secret)}, "Describe the anomaly in detail.", [], "tiny"])
    assert event == "error" and data is None or "secret" not in json.dumps(data)


def _upload(url: str, path: Path) -> str:
    """Upload through Gradio's own route, as the page does: the server path of the stored copy."""
    with open(path, "rb") as fh:
        r = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, fh, "image/png")}, timeout=30)
    r.raise_for_status()
    return r.json()[0]


def test_genuine_uploads_still_work(app, secret, tiny):
    """The same image, uploaded, is scored as the model scores it; a data: URL snapshot too."""
    url = app[1]
    expected = round(tiny.detect(Image.open(secret))[0].score, 4)
    stored = _upload(url, secret)
    assert Path(stored).resolve().is_relative_to(upload_folder())
    event, data = _detect(url, {"path": stored, "meta": {"_type": "gradio.FileData"}})
    assert event == "complete" and data[0] == pytest.approx(expected, abs=1e-4) and data[2] is not None
    snapshot = "data:image/png;base64," + base64.b64encode(secret.read_bytes()).decode()
    event, data = _detect(url, {"path": None, "url": snapshot})
    assert event == "complete" and data[0] == pytest.approx(expected, abs=1e-4)


def test_oversized_data_url_is_refused_before_decoding(app):
    """A data: URL bypasses the upload route's cap; the guard applies the same cap to it."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    body = base64.b64encode(buf.getvalue() + b"\0" * (MAX_UPLOAD_BYTES + 1024)).decode()
    event, data = _detect(app[1], {"path": None, "url": "data:image/png;base64," + body}, timeout=120)
    assert event == "error" or (data[0] is None and "cap" in data[3]), data


def test_gradio_file_route_serves_nothing_outside(app, secret):
    url, root = app[1], upload_folder()
    for target in (str(secret), f"{root}/../..{secret}", f"{root}/%2e%2e/%2e%2e{secret}", "/etc/passwd",
                   f"..%2F..%2F..{secret}"):
        r = httpx.get(f"{url}gradio_api/file={target}", timeout=30)
        assert r.status_code in (400, 403, 404), (target, r.status_code)
        assert secret.read_bytes()[:64] not in r.content


def test_guard_rules_directly(tmp_path, secret):
    """The guard on its own: allowed roots and files, everything else refused before any open."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    good = allowed / "a.png"
    good.write_bytes(secret.read_bytes())
    guard = UploadGuard(roots=[allowed], files=[secret], max_bytes=secret.stat().st_size)
    assert guard.vet({"path": str(good)}) == str(good.resolve())
    assert guard.vet(str(secret)) == str(secret.resolve())  # an example file, named exactly
    assert guard.vet(None) is None and guard.vet_many(None) == []
    for bad in (str(secret.parent / "other.png"), str(allowed / ".." / "x.png"), "a.png", "", 3):
        with pytest.raises(H.DemoInputError, match="reads only images uploaded"):
            guard.vet(bad) if not isinstance(bad, int) else guard.vet_path(bad)
    big = allowed / "big.png"
    big.write_bytes(b"\0" * (secret.stat().st_size + 1))
    with pytest.raises(H.DemoInputError, match="MB cap"):
        guard.vet({"path": str(big)})
    with pytest.raises(H.DemoInputError, match="no longer on the server"):
        guard.vet({"path": str(allowed / "gone.png")})
    with pytest.raises(H.DemoInputError, match="not valid base64"):
        guard.vet({"url": "data:image/png;base64,@@@@"})
    with pytest.raises(H.DemoInputError, match="without a file"):
        guard.vet({"url": "https://example.com/x.png"})


def test_uploads_are_swept_from_the_cache(tiny, secret):
    """Gradio's upload folder does not grow with every request: the app's sweep deletes what it
    received once it is older than the age (here 1 s, checked every second), and a request
    naming the deleted upload is told to upload it again; the shipped default is an hour."""
    from adkit.demo import build_demo
    from adkit.demo.app import UPLOAD_SWEEP_S

    assert UPLOAD_SWEEP_S == (600, 3600)
    demo = build_demo(H.DemoPipeline(tiny, max_new_tokens=4), delete_cache=(1, 1))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    try:
        stored = _upload(url, secret)
        assert Path(stored).is_file()
        event, data = _detect(url, {"path": stored, "meta": {"_type": "gradio.FileData"}})
        assert event == "complete" and data[0] is not None
        deadline = time.monotonic() + 30
        while Path(stored).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not Path(stored).exists(), "the sweep left the upload in the cache"
        event, data = _detect(url, {"path": stored, "meta": {"_type": "gradio.FileData"}})
        assert event == "complete" and data[0] is None and data[2] is None
        assert "no longer on the server; please upload it again" in data[3]
    finally:
        demo.close()
