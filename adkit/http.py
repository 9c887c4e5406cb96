"""One small OpenAI-compatible chat-completions client, shared by the data writers
(:mod:`adkit.data.writers`) and the GPT-score judges (:mod:`adkit.eval.judge`).

Standard library only (``urllib``): no extra dependency; transient failures (429, 5xx,
timeouts) are retried with backoff, and every final failure becomes one readable error naming
who asked, the URL and the problem.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from PIL import Image

__all__ = ["image_data_url", "chat_url", "post_chat_completion"]


def image_data_url(image: Image.Image, format: str = "PNG") -> str:
    """``data:image/png;base64,...`` of an RGB PIL image (how chat APIs take inline images)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_url(base_url: str) -> str:
    """``{root}/v1/chat/completions`` for a server root given with or without ``/v1``."""
    root = base_url.rstrip("/")
    return (root[:-3] if root.endswith("/v1") else root) + "/v1/chat/completions"


#: HTTP statuses worth another try: rate limited, or the server briefly unwell
RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is capped


class _Transient(Exception):
    """A failure that may pass: the message to report and how long the server asked us to wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(headers.get("Retry-After"))))
    except (TypeError, ValueError):  # absent, or an HTTP date (then the backoff decides)
        return None


def post_chat_completion(url: str, body: dict[str, Any], *, api_key: str | None = None, timeout: float = 60.0,
                         who: str = "client", error: type[Exception] = RuntimeError, retries: int = 3,
                         backoff: float = 0.5) -> str:
    """POST an OpenAI chat-completions ``body`` to ``url``; the first choice's message content.

    Rate limits (429), server errors (500/502/503/504), timeouts and refused connections are
    retried up to ``retries`` times, waiting the server's ``Retry-After`` or ``backoff·2^k``
    seconds. Every final failure raises ``error`` (default ``RuntimeError``) with ``who``, the
    URL and the problem: HTTP status + the start of the body, no reply within ``timeout`` s,
    unreachable server (with the number of attempts), a reply that is not JSON or lacks
    ``choices[0].message.content`` (not retried: asking again would not fix it)."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode()
    for attempt in range(retries + 1):
        try:
            payload = _post_once(url, data, headers, timeout, who, error)
            break
        except _Transient as exc:
            if attempt == retries:
                raise error(f"{exc} (after {attempt + 1} attempt{'s' if attempt else ''})") from exc
            time.sleep(exc.retry_after if exc.retry_after is not None else backoff * 2 ** attempt)
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise error(f"{who}: malformed response from {url} (expected choices[0].message.content): "
                    f"{payload[:300]!r}") from e
    if not isinstance(content, str):
        raise error(f"{who}: malformed response from {url}: content is {type(content).__name__}, not a string")
    return content


def _post_once(url: str, data: bytes, headers: dict, timeout: float, who: str, error: type[Exception]) -> bytes:
    """One POST: the reply's bytes; :class:`_Transient` for what a retry may fix, ``error`` otherwise."""
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        message = f"{who}: HTTP {e.code} {e.reason} from {url}: {detail}"
        if e.code in RETRY_STATUS:
            raise _Transient(message, _retry_after(e.headers)) from e
        raise error(message) from e
    except (socket.timeout, TimeoutError) as e:
        raise _Transient(f"{who}: no reply from {url} within {timeout} s") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise _Transient(f"{who}: no reply from {url} within {timeout} s") from e
        raise _Transient(f"{who}: cannot reach {url}: {e.reason}") from e
