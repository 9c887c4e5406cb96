"""A real OpenAI-style chat-completions server on 127.0.0.1, in a thread: the stand-in for a
paid remote service (a judge or a writer model) in tests/test_judge.py, test_writers.py and
test_instruct.py. ``mode``: ok / 500 / malformed / no_choices / slow; ``script``: statuses to
answer first (429 with ``Retry-After: 0``, 503, …); ``reply``: a string or a function of the
request body; ``received``: every request (path, headers, JSON body)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # keep pytest output clean
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if srv.script:  # statuses to answer first, in order (e.g. [429, 503]), then ``mode``
            code = srv.script.pop(0)
            return self._send(code, b'{"error": "try again"}', {"Retry-After": "0"} if code == 429 else {})
        if srv.mode == "slow":
            time.sleep(1.0)
        if srv.mode == "500":
            return self._send(500, b'{"error": "boom"}')
        if srv.mode == "malformed":
            return self._send(200, b"this is not json")
        if srv.mode == "no_choices":
            return self._send(200, b'{"object": "chat.completion"}')
        content = srv.reply(body) if callable(srv.reply) else srv.reply
        reply = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}
        self._send(200, json.dumps(reply).encode())

    def _send(self, code, payload, headers=None):
        try:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


class ChatServer:
    """``with ChatServer() as s:`` → ``s.url`` (server root), ``s.srv`` (mode, reply, received)."""

    def __init__(self, reply="A written answer."):
        self.reply = reply

    def __enter__(self):
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.srv.daemon_threads = True
        self.srv.received, self.srv.mode, self.srv.reply, self.srv.script = [], "ok", self.reply, []
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()
