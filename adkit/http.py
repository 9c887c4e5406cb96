"""One small OpenAI-compatible chat-completions client, shared by the data writers
(:mod:`adkit.data.writers`) and the GPT-score judges (:mod:`adkit.eval.judge`).

Standard library only (``urllib``): no extra dependency, and every failure becomes one
readable error naming who asked, the URL and the problem.
"""

from __future__ import annotations

import base64
import io
import json
import socket
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


def post_chat_completion(url: str, body: dict[str, Any], *, api_key: str | None = None, timeout: float = 60.0,
                         who: str = "client", error: type[Exception] = RuntimeError) -> str:
    """POST an OpenAI chat-completions ``body`` to ``url``; the first choice's message content.

    Every failure raises ``error`` (default ``RuntimeError``) with ``who``, the URL and the problem:
    HTTP status + the start of the body, no reply within ``timeout`` s, unreachable server,
    a reply that is not JSON or lacks ``choices[0].message.content``."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        raise error(f"{who}: HTTP {e.code} {e.reason} from {url}: {detail}") from e
    except (socket.timeout, TimeoutError) as e:
        raise error(f"{who}: no reply from {url} within {timeout} s") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise error(f"{who}: no reply from {url} within {timeout} s") from e
        raise error(f"{who}: cannot reach {url}: {e.reason}") from e
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise error(f"{who}: malformed response from {url} (expected choices[0].message.content): "
                    f"{payload[:300]!r}") from e
    if not isinstance(content, str):
        raise error(f"{who}: malformed response from {url}: content is {type(content).__name__}, not a string")
    return content
