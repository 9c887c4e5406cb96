"""The demo (adkit.demo): handlers called directly, then the real app through gradio_client.

All on the tiny preset. The app is launched for real on 127.0.0.1 (a free port) and spoken
to over HTTP by gradio_client, as any API user would; the CLI runs as a subprocess.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from adkit.demo import example_images
from adkit.demo import handlers as H

GEN = {"repetition_penalty": 5.0}  # the tiny LLM's greedy answer is otherwise only newlines
Q1, Q2 = H.PAPER_PROMPTS[1], H.PAPER_PROMPTS[2]


@pytest.fixture(scope="module")
def pipe(tiny):
    return H.DemoPipeline(tiny, gen_kwargs=GEN, max_new_tokens=12)


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo):
    """Good and bad uploads, as files on disk (what Gradio hands the handlers)."""
    d = tmp_path_factory.mktemp("uploads")
    photo.save(d / "photo.png")
    (d / "notes.txt").write_bytes(b"this is not an image\n")
    good = (d / "photo.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "bomb.png").write_bytes(_png_header(100_000, 100_000))  # over PIL's own limit too
    (d / "huge.png").write_bytes(_png_header(9000, 9000))  # 81 MP: over the demo's 67 MP (8192²)
    Image.fromarray((np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 13)).save(d / "deep16.png")
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[..., 0], rgba[10:50, 20:70, 3] = 200, 255
    Image.fromarray(rgba).save(d / "alpha.png")
    return d


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height (a decompression bomb: never decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- handlers


def test_detect_matches_model_and_verdict_rule(pipe, tiny, files):
    r = H.detect(pipe, str(files / "photo.png"), threshold=0.5)
    det = tiny.detect(Image.open(files / "photo.png"))[0]
    assert r.score == pytest.approx(det.score, abs=1e-6)
    assert r.verdict == ("anomalous" if det.score >= 0.5 else "normal")
    assert H.detect(pipe, str(files / "photo.png"), threshold=det.score).verdict == "anomalous"  # ≥ is anomalous
    assert H.detect(pipe, str(files / "photo.png"), threshold=min(1.0, det.score + 1e-3)).verdict == "normal"
    assert r.overlay.shape == (120, 170, 3) and r.overlay.dtype == np.uint8
    assert f"{r.detection.grid_shape[0]}×{r.detection.grid_shape[1]} crops" in r.status


def test_detect_methods_and_the_mutual_reference_set(pipe, tiny, files, photo):
    """Each method scores as model.detect does; mutual compares the upload with the reference set
    (the gallery by default, or uploaded files) and never with a copy of itself."""
    rng = np.random.default_rng(3)
    refs = []
    for i in range(3):
        path = files / f"ref{i}.png"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
        refs.append(str(path))
    r = H.detect(pipe, str(files / "photo.png"), method="self")
    assert r.detection.method == "self" and r.score == pytest.approx(tiny.detect(photo, method="self")[0].score, abs=1e-6)
    m = H.detect(pipe, str(files / "photo.png"), method="mutual", reference=refs + [str(files / "photo.png")])
    direct = tiny.detect(photo, method="mutual", reference=[Image.open(p) for p in refs])[0]
    assert m.score == pytest.approx(direct.score, abs=1e-6) and "3 reference image(s)" in m.status
    with pytest.raises(H.DemoInputError, match="add reference images"):
        H.detect(H.DemoPipeline(tiny), str(files / "photo.png"), method="mutual")  # no gallery, no uploads
    with pytest.raises(H.DemoInputError, match="reference image: notes.txt"):
        H.detect(pipe, str(files / "photo.png"), method="mutual", reference=[str(files / "notes.txt")])
    with pytest.raises(H.DemoInputError, match="unknown method"):
        H.detect(pipe, str(files / "photo.png"), method="oracle")
    assert pipe.threshold_for("self") == tiny.calibration.threshold("self")
    assert H.DemoPipeline(tiny, threshold=0.25).threshold_for("mutual") == 0.25


def test_overlay_by_hand(photo):
    amap = np.linspace(0, 1, 120 * 170, dtype=np.float32).reshape(120, 170)
    import matplotlib

    pixels = np.asarray(photo, dtype=np.float32) / 255  # [H, W, 3] in [0, 1]
    by_hand = np.rint((0.5 * pixels + 0.5 * matplotlib.colormaps["jet"](amap)[..., :3]) * 255)  # (1-α)·photo + α·jet
    assert np.array_equal(H.overlay(photo, amap), by_hand.astype(np.uint8))
    big = Image.new("RGB", (1600, 800))
    assert H.overlay(big, np.zeros((800, 1600)), max_side=400).shape == (200, 400, 3)
    with pytest.raises(ValueError, match="does not match"):
        H.overlay(photo, amap[:10])


@pytest.mark.parametrize("name, message", [
    ("notes.txt", "notes.txt cannot be used: not a recognised image format"),
    ("truncated.png", "truncated.png cannot be used: image data is truncated"),
    ("bomb.png", "bomb.png cannot be used: the image is too large .* 67.1 megapixels"),
    ("huge.png", "huge.png cannot be used: the image is too large"),
    ("missing.png", "missing.png cannot be used: no such file"),
])
def test_bad_uploads_get_a_friendly_error(pipe, files, name, message):
    with pytest.raises(H.DemoInputError, match=message):
        H.detect(pipe, {"path": str(files / name), "orig_name": name})


def test_unusual_but_valid_uploads_work_with_a_note(pipe, files):
    deep = H.detect(pipe, str(files / "deep16.png"))
    assert "high-bit-depth image scaled to 8 bits" in deep.status
    alpha = H.detect(pipe, str(files / "alpha.png"))
    assert "composited over black" in alpha.status
    assert np.asarray(alpha.image)[0, 0].tolist() == [0, 0, 0]  # transparent corner → black
    with pytest.raises(H.DemoInputError, match="no image yet"):
        H.detect(pipe, None)


def test_explain_pictures(pipe, files):
    crops, tokens = H.explain(pipe, str(files / "photo.png"))
    for pic in (crops, tokens):
        assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3 and pic.std() > 0


def test_chat_stream_equals_model_chat_multi_turn(pipe, tiny, photo, files):
    parts = list(H.chat_stream(pipe, str(files / "photo.png"), Q1))
    assert len(parts) >= 2 and all(b.startswith(a) for a, b in zip(parts, parts[1:]))  # growing prefixes
    first = parts[-1]
    assert first and first == tiny.chat(photo, Q1, max_new_tokens=12, **GEN)
    messages = [{"role": "user", "content": [{"type": "text", "text": Q1}]},
                {"role": "assistant", "content": [{"type": "text", "text": first}]}]
    assert H.history_pairs(messages) == [(Q1, first)]
    second = list(H.chat_stream(pipe, str(files / "photo.png"), Q2, messages))[-1]
    assert second == tiny.chat(photo, Q2, history=[(Q1, first)], max_new_tokens=12, **GEN)
    with pytest.raises(H.DemoInputError, match="type a question"):
        next(H.chat_stream(pipe, str(files / "photo.png"), "  "))


def test_example_images(tmp_path):
    (tmp_path / "bottle" / "test").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "a_mask.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "bottle" / "test" / name)
    (tmp_path / "README.md").write_text("x")
    assert [p.name for p in example_images(tmp_path)] == ["a.jpg", "b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(H.DemoInputError, match="no images found"):
        example_images(tmp_path / "empty")
    default = example_images()  # data_samples/ or the cached skimage photos, offline
    assert default and all(p.is_file() for p in default)


def test_presets_listed_only_when_weights_exist(tmp_path, tiny):
    assert H.available_presets("small", env={}) == ["small", "tiny"]
    assert H.available_presets("tiny", env={}) == ["tiny", "small"]
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "config.json").write_text('{"text_config": {"hidden_size": 896}}')
    (tmp_path / "expert.pth").write_bytes(b"x")
    env = {"ADKIT_LLAVA_PATH": str(tmp_path / "llava"), "ADKIT_EXPERT_PATH": str(tmp_path / "expert.pth")}
    assert H.available_presets("small", env=env) == ["small", "tiny", "paper-0.5b"]
    assert H.available_presets("small", env={**env, "ADKIT_EXPERT_PATH": str(tmp_path / "nope")}) == ["small", "tiny"]
    assert "untrained" in H.untrained_note(tiny)
    with pytest.raises(H.DemoInputError, match="not available"):
        H.DemoPipeline(tiny, presets=["tiny"]).model_for("paper-7b")


# ----------------------------------------------------------------------------- the app over HTTP


@pytest.fixture(scope="module")
def app(pipe):
    from adkit.demo import build_demo

    demo = build_demo(pipe)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def _words(text: str) -> list[str]:
    return text.split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_binds_loopback_and_names_every_event(app, client):
    demo, url = app
    assert url.startswith("http://127.0.0.1:")
    api = client.view_api(return_format="dict", print_info=False)
    assert {"/detect", "/explain", "/verdict", "/chat", "/ask_0", "/ask_3", "/clear_chat",
            "/load_preset", "/method_threshold", "/detect_method"} <= set(api["named_endpoints"])
    assert not api["unnamed_endpoints"]
    with pytest.raises(ValueError, match="never creates a public share link"):
        demo.launch(share=True, prevent_thread_lock=True)


def test_app_detect_chat_and_bad_upload(client, tiny, photo, files):
    from gradio_client import handle_file

    score, verdict, overlay, status = client.predict(handle_file(str(files / "photo.png")), 0.5, "tiny", "expert", None,
                                                     api_name="/detect")
    direct = tiny.detect(photo)[0].score
    assert score == pytest.approx(direct, abs=1e-4)  # the score box shows 4 decimals
    assert ("anomalous" if direct >= 0.5 else "normal") in verdict
    with Image.open(overlay) as sent:  # a JPEG preview of the handler's overlay
        assert sent.format == "JPEG" and np.asarray(sent).shape == (120, 170, 3)
        expected_overlay = H.detect(H.DemoPipeline(tiny), str(files / "photo.png"), 0.5).overlay
        assert np.abs(np.asarray(sent, np.float32) - expected_overlay).mean() < 4.0
    assert "normal" in client.predict(0.3, 0.5, api_name="/verdict")  # the slider re-judges, no model run
    assert "anomalous" in client.predict(0.5, 0.5, api_name="/verdict")
    messages, box = client.predict(handle_file(str(files / "photo.png")), Q1, [], "tiny", api_name="/chat")
    assert box == "" and [m["role"] for m in messages] == ["user", "assistant"]
    answer = messages[1]["content"][0]["text"]
    expected = tiny.chat(photo, Q1, max_new_tokens=12, **GEN)
    assert _words(answer) == _words(expected)  # the Chatbot turns tabs into spaces
    answer = expected
    messages, _ = client.predict(handle_file(str(files / "photo.png")), messages, "tiny", api_name="/ask_2")
    assert messages[2]["content"][0]["text"] == Q2
    assert _words(messages[3]["content"][0]["text"]) == _words(
        tiny.chat(photo, Q2, history=[(Q1, answer)], max_new_tokens=12, **GEN))
    # a bad upload: a status line, no crash; the next good request is served as before
    score, verdict, overlay, status = client.predict(handle_file(str(files / "notes.txt")), 0.5, "tiny", "expert", None,
                                                     api_name="/detect")
    assert score is None and overlay is None and "not a recognised image format" in status
    score, *_ = client.predict(handle_file(str(files / "bomb.png")), 0.5, "tiny", "expert", None, api_name="/detect")
    assert score is None
    assert client.predict(handle_file(str(files / "photo.png")), 0.5, "tiny", "expert", None, api_name="/detect")[0] is not None


def test_app_method_selector_and_mutual_over_http(client, tiny, photo, files):
    """Over HTTP: the method's calibrated threshold for the slider; mutual against the gallery."""
    from gradio_client import handle_file

    assert client.predict("self", "tiny", api_name="/method_threshold") == tiny.calibration.threshold("self")
    score, verdict, _, status = client.predict(handle_file(str(files / "photo.png")), 0.5, "tiny", "mutual", None,
                                               api_name="/detect")
    assert score is not None and "mutual, transductive" in status and "reference image(s)" in status


def test_app_refuses_oversized_uploads(app, tmp_path):
    from adkit.demo.app import MAX_FILE_SIZE

    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (int(MAX_FILE_SIZE.removesuffix("mb")) * 1024 * 1024 + 1024))
    import httpx

    with open(big, "rb") as fh:
        r = httpx.post(app[1] + "gradio_api/upload", files={"files": ("huge.png", fh, "image/png")}, timeout=60)
    assert r.status_code == 413


# ----------------------------------------------------------------------------- CLI and import hygiene


def test_cli_refuses_remote_host_before_loading(capsys):
    from adkit.cli import main

    assert main(["demo", "--preset", "tiny", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["demo", "--preset", "tiny", "--port", "70000"]) == 2
    assert main(["demo", "--examples", "/nonexistent/folder", "--preset", "tiny", "--port", "0"]) == 2
    assert "/nonexistent/folder: no such folder" in capsys.readouterr().err


def test_import_is_side_effect_free():
    """Importing the package or its CLI module imports no Gradio (and so sets nothing up)."""
    code = "import sys, adkit.demo, adkit.demo.cli; assert 'gradio' not in sys.modules, 'gradio imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
