"""The demo in a real browser (Playwright + Debian's chromium), as the presenter uses it.

Uploads an example image through the page's file input, waits for the anomaly score and the
overlay, asks one of the paper's questions with a suggestion button, checks that the page
never requested anything outside 127.0.0.1 (no web fonts, no analytics, no CDN), and saves a
screenshot to ``$ADKIT_SCREENSHOT`` (default: the test's tmp folder). Tiny preset; set
``ADKIT_DEMO_PRESET=small`` to take the README screenshot with real weights.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
LOCAL_SCHEMES = {"data", "blob", "about"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settled_text(page, selector: str, quiet_ms: int = 1500, limit_s: float = 90.0) -> str:
    """The element's text once it has not changed for ``quiet_ms`` (streaming finished)."""
    import time

    last, since, deadline = None, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        text = page.locator(selector).inner_text()
        if text != last:
            last, since = text, time.monotonic()
        elif time.monotonic() - since >= quiet_ms / 1000:
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{selector} kept changing for {limit_s} s")


@pytest.fixture(scope="module")
def url(request):
    import warnings

    from adkit.demo import DemoPipeline, build_demo

    preset = os.environ.get("ADKIT_DEMO_PRESET", "tiny")
    if preset == "tiny":
        model = request.getfixturevalue("tiny")
    else:
        from adkit import AnomalyOV

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = AnomalyOV.from_preset(preset)
    gen = {"repetition_penalty": 5.0} if preset == "tiny" else {}
    demo = build_demo(DemoPipeline(model, gen_kwargs=gen, max_new_tokens=24 if preset == "tiny" else 64))
    _, address, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    yield address, bool(model.untrained)
    demo.close()


def test_upload_detect_chat_offline_in_chromium(url, tmp_path):
    url, untrained = url
    from playwright.sync_api import sync_playwright

    from adkit.demo import PAPER_PROMPTS, example_images

    assert Path(CHROMIUM).exists(), "chromium is needed (Debian: apt-get install chromium)"
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=60_000)
            note = page.locator("#untrained-note").inner_text()  # visible exactly when parts are untrained
            assert ("untrained" in note) == untrained, note
            page.locator("#input-image input[type=file]").set_input_files(str(example_images()[0]))
            page.wait_for_function("() => /threshold/.test(document.querySelector('#verdict').innerText)",
                                   timeout=60_000)  # the verdict line arrives with the score
            shown = page.locator("#score input").input_value()
            score = float(shown)
            assert 0.0 <= score <= 1.0
            page.wait_for_selector("#overlay img", timeout=60_000)
            assert page.locator("#overlay img").evaluate("img => img.complete && img.naturalWidth > 0")
            assert ("anomalous" if score >= 0.5 else "normal") in page.locator("#verdict").inner_text()
            # a gallery example: its payload names the app's copy of the file, which the upload guard admits
            page.locator("[class*=gallery] button").nth(1).click()
            page.wait_for_function(f"() => document.querySelector('#score input').value !== '{shown}'",
                                   timeout=60_000)
            assert "⚠" not in _settled_text(page, "#status")
            page.get_by_role("button", name=PAPER_PROMPTS[0]).click()  # the VisA-D&R detection question
            page.wait_for_function("() => document.querySelectorAll('#chatbot .message').length >= 2 &&"
                                   " document.querySelector('#chatbot .bot') !== null", timeout=60_000)
            chat = _settled_text(page, "#chatbot")  # the streamed answer has stopped growing
            assert PAPER_PROMPTS[0][:40] in chat
            shot = Path(os.environ.get("ADKIT_SCREENSHOT") or tmp_path / "demo.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    outside = sorted({u for u in requests if urlparse(u).scheme not in LOCAL_SCHEMES
                      and urlparse(u).hostname != "127.0.0.1"})
    assert requests and not outside, f"requests left 127.0.0.1: {outside}"
