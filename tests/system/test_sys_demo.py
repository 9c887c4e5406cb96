"""Reliability suite, demo groups: bad uploads and server paths, sent to a live demo over raw HTTP.

One real server (``build_demo`` on the tiny model, 127.0.0.1, a free port) takes every case as
a client would send it — uploads through Gradio's own route, then the ``/gradio_api/call/…``
events with the JSON the page sends, or with a hand-written payload naming a server file.

* **upload**: odd but valid images are scored (a finite score in [0, 1] and an overlay);
  broken, disguised, truncated and bomb files get one status line and no picture; the upload
  cap holds for files and for inline ``data:`` URLs; malformed payloads are answered, not
  crashed on; the server still scores a genuine upload at the end.
* **traversal**: a path the client never uploaded (absolute, ``..``, symlink out, FIFO,
  device, folder, ``/proc``, NUL, relative) is refused with the same words whether it exists
  or not, by every event; Gradio's file route serves nothing outside the app's folders.
"""

from __future__ import annotations

import base64
import io
import json
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from adkit.demo import handlers as H
from adkit.demo.uploads import MAX_UPLOAD_BYTES, REFUSED, upload_folder
from bad_files import image_files
from ledger import LEDGER
from test_demo_files import _call, _detect, _free_port, _server_paths, _upload
from test_demo_files import inside, secret  # noqa: F401 - the same fixtures: a private server file, a folder in the upload dir

META = {"_type": "gradio.FileData"}


@pytest.fixture(scope="module")
def server(tiny):
    from adkit.demo import build_demo

    demo = build_demo(H.DemoPipeline(tiny, max_new_tokens=4))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    yield url
    demo.close()


def _status_line(data) -> str:
    status = data[3]
    assert isinstance(status, str) and status.strip(), f"no status message: {data!r}"
    assert "\n" not in status.strip() and "Traceback" not in status, f"not one line: {status!r}"
    return status


def _scored(event, data):
    assert event == "complete", f"event {event}: {data!r}"
    assert isinstance(data[0], float) and 0.0 <= data[0] <= 1.0, f"score {data[0]!r}"
    assert data[2] is not None, "no overlay"


def _no_picture(event, data, words: str | None = None):
    """Refused: an answer came, it carries no score and no picture, and one status line."""
    assert event == "complete", f"event {event}: {data!r}"
    assert data[0] is None and data[2] is None, f"picture or score leaked: {data!r}"
    status = _status_line(data)
    assert words is None or words in status, f"{words!r} not in {status!r}"


def _refused_or_error(event, data, words: str | None = None):
    """Either a refusal (as :func:`_no_picture`) or an error event carrying a message (what Gradio
    answers before the app runs, for a payload that is not file data at all); never a picture."""
    if event == "error":
        message = (data or {}).get("error") if isinstance(data, dict) else None
        assert isinstance(message, str) and message.strip(), f"error without a message: {data!r}"
        assert "Traceback" not in message and "File \"" not in message, f"a traceback: {message[:120]!r}"
        assert words is None or words in message, f"{words!r} not in {message!r}"
        return
    _no_picture(event, data, words)


def _png_bytes(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _data_url(body: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(body).decode()


def test_upload(server, tmp_path):
    files = image_files(tmp_path / "uploads")
    cases = {}
    for name, (path, valid) in files.items():
        def attack(path=path, valid=valid):
            stored = _upload(server, path)
            event, data = _detect(server, {"path": stored, "meta": META}, timeout=120)
            (_scored if valid else _no_picture)(event, data)
        cases[name] = attack

    def over_cap():
        big = tmp_path / "big.png"
        big.write_bytes(_png_bytes() + b"\0" * (MAX_UPLOAD_BYTES + 4096))
        with open(big, "rb") as fh:
            r = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.png", fh, "image/png")}, timeout=60)
        assert r.status_code == 413, f"HTTP {r.status_code}"

    cases["file over the 20 MB cap"] = over_cap
    payloads = {
        "data: URL, valid PNG": ({"path": None, "url": _data_url(_png_bytes())}, None),
        "data: URL over the cap": ({"path": None, "url": _data_url(_png_bytes() + b"\0" * (MAX_UPLOAD_BYTES + 8))}, "cap"),
        "data: URL, not base64": ({"path": None, "url": "data:image/png;base64,@@@@"}, "base64"),
        "data: URL, not base64-marked": ({"path": None, "url": "data:image/png,rawbytes"}, "base64"),
        "data: URL carrying text": ({"path": None, "url": _data_url(b"hello " * 50)}, "image"),
        "http URL": ({"path": None, "url": "http://127.0.0.1:9/x.png"}, None),
        "payload is a number": (3, None),
        "payload is a list": ([{"path": "/etc/passwd"}], None),
        "payload dict without path": ({}, None),
        "path is a number": ({"path": 12}, None),
        "path is empty": ({"path": ""}, None),
        "no image at all": (None, None),
    }
    for name, (payload, words) in payloads.items():
        def attack(payload=payload, words=words, valid=name == "data: URL, valid PNG"):
            event, data = _detect(server, payload, timeout=120)
            if valid:
                _scored(event, data)
            else:
                _refused_or_error(event, data, words)
        cases[name] = attack

    def chat_on_broken_upload():
        stored = _upload(server, files["truncated PNG"][0])
        event, data = _call(server, "chat", [{"path": stored, "meta": META}, "Is there a defect?", [], "tiny"], timeout=120)
        _refused_or_error(event, data, "cannot be used: image data is truncated or corrupt")

    def mutual_with_broken_reference():
        good = _upload(server, files["grayscale PNG"][0])
        bad = _upload(server, files["zero bytes"][0])
        event, data = _detect(server, {"path": good, "meta": META}, method="mutual",
                              reference=[{"path": bad, "meta": META}], timeout=120)
        assert event == "complete", f"event {event}"
        assert data[0] is not None or _status_line(data)

    def still_serving():
        stored = _upload(server, files["RGBA PNG"][0])
        _scored(*_detect(server, {"path": stored, "meta": META}, timeout=120))

    cases.update({"chat on a truncated upload": chat_on_broken_upload,
                  "mutual with a zero-byte reference": mutual_with_broken_reference,
                  "server still scores a genuine upload": still_serving})
    LEDGER.run_all("demo: bad uploads", cases)
    LEDGER.assert_handled("demo: bad uploads")


def test_traversal(server, secret, inside):
    paths = _server_paths(secret, inside)
    paths.update({"/etc/passwd": "/etc/passwd", "/etc/shadow": "/etc/shadow", "/proc/self/environ": "/proc/self/environ",
                  "/dev/urandom": "/dev/urandom", "missing file": "/no/such/file.png",
                  "upload folder itself": str(upload_folder()), "file:// URL as path": f"file://{secret}"})
    missing = _detect(server, {"path": "/no/such/other.png"})[1][3]

    def baseline():
        assert REFUSED in missing, f"a missing path got {missing!r}"

    cases = {"detect: a path nobody uploaded gets the refusal": baseline}
    for name, path in paths.items():
        for meta in (False, True):
            def attack(path=path, meta=meta):
                payload = {"path": path, **({"meta": META} if meta else {})}
                event, data = _detect(server, payload, timeout=30)  # a FIFO that were opened would hang here
                if event == "error":  # Gradio's own check of "meta" payloads ("… was not uploaded by a user")
                    _refused_or_error(event, data)
                    assert not any(w in data["error"] for w in ("bytes", "format", "size")), data["error"]
                    return
                _no_picture(event, data, REFUSED)
                assert data[3] == missing, "the answer differs from a missing file's: it tells the path apart"
            cases[f"detect: {name}{' (meta)' if meta else ''}"] = attack

    def mutual_reference():
        uploaded = _upload(server, secret)
        for ref in ({"path": str(secret)}, {"path": str(secret), "meta": META}):
            event, data = _detect(server, {"path": uploaded, "meta": META}, method="mutual", reference=[ref])
            _refused_or_error(event, data)
            assert event == "error" or REFUSED in data[3]

    def explain():
        event, data = _call(server, "explain", [{"path": str(secret)}, "tiny"])
        assert event == "error" or data == [None, None], f"explain answered {str(data)[:80]}"

    def chat():
        event, data = _call(server, "chat", [{"path": str(secret)}, "Describe the anomaly.", [], "tiny"])
        assert event in ("complete", "error") and "secret" not in json.dumps(data)
        assert event == "error" or REFUSED in json.dumps(data), "chat did not refuse"

    cases.update({"mutual: reference naming a server file": mutual_reference, "explain: server path": explain,
                  "chat: server path": chat})
    root = upload_folder()
    routes = {
        "file route: absolute": str(secret),
        "file route: ../ out of the upload folder": f"{root}/../..{secret}",
        "file route: %2e%2e encoded": f"{root}/%2e%2e/%2e%2e{secret}",
        "file route: %252e double encoded": f"{root}/%252e%252e/%252e%252e{secret}",
        "file route: ..%2F": f"..%2F..%2F..{secret}",
        "file route: /etc/passwd": "/etc/passwd",
        "file route: backslashes": f"{root}\\..\\..{secret}",
        "file route: symlink inside": str(inside / "link.png"),
    }
    for name, target in routes.items():
        def attack(target=target):
            r = httpx.get(f"{server}gradio_api/file={target}", timeout=30)
            assert r.status_code in (400, 403, 404), f"HTTP {r.status_code}"
            assert secret.read_bytes()[:64] not in r.content and b"root:" not in r.content
        cases[name] = attack
    LEDGER.run_all("demo: server paths", cases)
    LEDGER.assert_handled("demo: server paths")
    assert os.path.exists(secret)  # untouched
