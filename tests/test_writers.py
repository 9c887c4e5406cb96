"""adkit.data.writers (docs/architecture.md §5 pluggable writers): the offline template writer's variety and
determinism, a real tiny transformers LM end to end, and the OpenAI-compatible writer against a
real HTTP server on 127.0.0.1 (success, images as data URLs, HTTP 500, bad JSON, timeout)."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from adkit.data import phrases as P
from adkit.data.writers import (
    TASKS, OpenAIWriter, TemplateWriter, TransformersWriter, Writer, WriterError, build_messages,
    defect_family,
)
from adkit.http import post_chat_completion
from chat_server import ChatServer

ANOMALY = {"category": "capsule", "defect": "poke", "label": 1, "location": "top left", "severity": "severe"}
NORMAL = {"category": "metal nut", "defect": "good", "label": 0}
HINT = "a capsule with severe poke mark at the top left"


# ---------------------------------------------------------------- template writer

@pytest.mark.parametrize("task", ["describe", "cause", "effect", "prevention"])
def test_template_variety_and_facts(task):
    w = TemplateWriter(seed=1)
    answers = [w.write(task, HINT, None, ANOMALY) for _ in range(200)]
    assert len(set(answers)) >= 0.9 * len(answers), f"{task}: only {len(set(answers))} distinct of 200"
    for a in answers:  # category, location and severity always mentioned; every slot filled
        assert "capsule" in a and "top left" in a and "severe" in a and "poke" in a, a
        assert "{" not in a and "}" not in a and "  " not in a and a.endswith("."), a


@pytest.mark.parametrize("task", ["normal_description", "check"])
def test_template_normal_tasks(task):
    w = TemplateWriter(seed=2)
    answers = [w.write(task, "a normal metal nut", None, NORMAL) for _ in range(100)]
    assert len(set(answers)) >= 90
    assert all("metal nut" in a and "{" not in a for a in answers)


def test_template_deterministic_given_seed():
    a = [TemplateWriter(5).write("describe", HINT, None, ANOMALY) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    w1, w2, w3 = TemplateWriter(5), TemplateWriter(5), TemplateWriter(6)
    seq1 = [w1.write(t, HINT, None, ANOMALY) for t in ("describe", "cause", "effect")]
    seq2 = [w2.write(t, HINT, None, ANOMALY) for t in ("describe", "cause", "effect")]
    seq3 = [w3.write(t, HINT, None, ANOMALY) for t in ("describe", "cause", "effect")]
    assert seq1 == seq2 and seq1 != seq3


@pytest.mark.parametrize("defect, family", [
    ("scratch", "scratch"), ("scratch_neck", "scratch"), ("crack", "crack"), ("broken_large", "crack"),
    ("hole", "hole"), ("poke", "hole"), ("stain", "stain"), ("glue_strip", "stain"),
    ("metal_contamination", "contamination"), ("bent_wire", "deformation"), ("cutpaste", "cutpaste"),
    ("perlin", "perlin"), ("missing_cable", "missing"), ("cable_swap", "misplaced"), ("color", "color"),
    ("cut_lead", "cut"), ("faulty_imprint", "print"), ("bad", "generic"), ("weird_thing", "generic"),
    ("crack_and_hole", "crack"),
])
def test_defect_families(defect, family):
    assert defect_family(defect) == family
    ctx = dict(ANOMALY, defect=defect, location=None, severity=None)
    text = TemplateWriter(0).write("describe", "x", None, ctx)
    assert "capsule" in text and "{" not in text
    # the family's own appearance sentences are used (each family has distinct "looks")
    looks = {s.format(cat="capsule", syn=syn) for s in P.FAMILIES[family]["looks"] for syn in P.FAMILIES[family]["syn"]}
    assert any(sent in text for sent in looks), text


def test_defect_words_in_text():
    text = TemplateWriter(0).write("describe", "x", None, dict(ANOMALY, defect="bad"))
    assert "severe defect" in text  # VisA's "bad" in words
    text = TemplateWriter(0).write("describe", "x", None, dict(ANOMALY, defect="broken_large", severity=None))
    assert "large break" in text


def test_template_rejects_unknown_task():
    with pytest.raises(ValueError, match="unknown writer task 'poem'"):
        TemplateWriter(0).write("poem", HINT, None, ANOMALY)


def test_location_with_preposition_kept_verbatim():
    text = TemplateWriter(0).write("cause", HINT, None, dict(ANOMALY, location="on the cap"))
    assert "on the cap" in text and "near the on the cap" not in text


def test_build_messages():
    msgs = build_messages("cause", HINT, dict(ANOMALY, description="A poke mark.", question="Why?", boxed=True),
                          with_image=True)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    for part in (HINT, "location: top left", "severity: severe", "A poke mark.", "Question: Why?", "red boxes",
                 "caused"):
        assert part in user, part
    normal = build_messages("normal_description", "a normal metal nut", NORMAL)[1]["content"]
    assert "defect:" not in normal and "a normal metal nut" in normal


def test_writers_satisfy_protocol():
    assert set(TASKS) == {"describe", "cause", "effect", "prevention", "normal_description", "check"}
    assert isinstance(TemplateWriter(0), Writer)
    assert isinstance(OpenAIWriter("http://127.0.0.1:1", "m"), Writer)


# ---------------------------------------------------------------- local transformers LM

class ForceEOS:
    """A real generate() logits processor: only the EOS token may be produced → empty answer."""

    def __init__(self, eos):
        self.eos = eos

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, -float("inf"))
        out[:, self.eos] = 0.0
        return out


def test_transformers_writer_end_to_end(tiny_lm):
    model, tok = tiny_lm
    w = TransformersWriter(model, tok, max_new_tokens=6)
    assert w.name.startswith("transformers:") and w.multimodal is False
    prompt = w.render(build_messages("describe", HINT, ANOMALY))
    assert HINT in prompt and prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    text = w.write("describe", HINT, None, ANOMALY)
    # the same decode done by hand
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip() and text


def test_transformers_writer_empty_output(tiny_lm):
    from transformers import LogitsProcessorList

    model, tok = tiny_lm
    force = LogitsProcessorList([ForceEOS(tok.eos_token_id)])
    w = TransformersWriter(model, tok, max_new_tokens=4, name="eos-only", logits_processor=force)
    with pytest.raises(WriterError, match=r"eos-only: the model returned an empty answer for task 'cause'"):
        w.write("cause", HINT, None, ANOMALY)
    fb = TransformersWriter(model, tok, max_new_tokens=4, fallback=TemplateWriter(0), logits_processor=force)
    assert "capsule" in fb.write("cause", HINT, None, ANOMALY)


def test_transformers_writer_without_chat_template(tiny_lm):
    model, tok = tiny_lm

    class NoTemplate:  # a tokenizer view without a chat template (plain-LM checkpoints)
        chat_template = None

    w = TransformersWriter(model, NoTemplate())
    prompt = w.render(build_messages("effect", HINT, ANOMALY))
    assert prompt.startswith("System: ") and "User: Object: " + HINT in prompt and prompt.endswith("Assistant:")


# ---------------------------------------------------------------- OpenAI-compatible HTTP

@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def decode_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_openai_writer_text(server):
    w = OpenAIWriter(server.url + "/v1/", "gpt-x", api_key="sk-test", timeout=5)
    assert w.write("cause", HINT, Image.new("RGB", (8, 8)), ANOMALY) == "A written answer."
    req = server.srv.received[-1]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "gpt-x" and isinstance(body["messages"][1]["content"], str)  # no image sent
    assert HINT in body["messages"][1]["content"] and w.name == "openai:gpt-x"


def test_openai_writer_sends_image_as_data_url(server):
    w = OpenAIWriter(server.url, "vision-model", send_images=True, timeout=5)
    assert w.multimodal
    img = Image.new("RGB", (20, 10), (10, 200, 30))
    w.write("describe", HINT, img, dict(ANOMALY, boxed=True))
    parts = server.srv.received[-1]["body"]["messages"][1]["content"]
    kinds = [p["type"] for p in parts]
    assert kinds == ["image_url", "text"] and HINT in parts[1]["text"] and "red boxes" in parts[1]["text"]
    sent = decode_data_url(parts[0]["image_url"]["url"])
    assert sent.size == (20, 10) and sent.convert("RGB").getpixel((3, 3)) == (10, 200, 30)


@pytest.mark.parametrize("mode, pattern", [
    ("500", r"HTTP 500 .*127\.0\.0\.1.*boom"),
    ("malformed", r"malformed response from http://127\.0\.0\.1:\d+/v1/chat/completions"),
    ("slow", r"no reply from http://127\.0\.0\.1:\d+/v1/chat/completions within 0\.3 s"),
])
def test_openai_writer_errors(server, mode, pattern):
    server.srv.mode = mode
    w = OpenAIWriter(server.url, "m", timeout=0.3, name="remote", retries=0)  # retries: test_post_chat_completion_retries_…
    with pytest.raises(WriterError, match=pattern) as info:
        w.write("effect", HINT, None, ANOMALY)
    assert "writer remote" in str(info.value) and isinstance(info.value, RuntimeError)


def test_openai_writer_empty_and_unreachable(server):
    server.srv.reply = "   "
    with pytest.raises(WriterError, match="empty answer from .* for task 'effect'"):
        OpenAIWriter(server.url, "m", timeout=5).write("effect", HINT, None, ANOMALY)
    port = server.srv.server_address[1]
    server.__exit__()
    with pytest.raises(WriterError, match=rf"cannot reach http://127\.0\.0\.1:{port}/v1/chat/completions"):
        OpenAIWriter(f"http://127.0.0.1:{port}", "m", timeout=2, retries=0).write("effect", HINT, None, ANOMALY)
    server.__enter__()  # the fixture closes a running server


def test_post_chat_completion_error_class(server):
    """The shared helper takes the caller's error class (e.g. the judge's JudgeError)."""

    class MyError(RuntimeError):
        pass

    server.srv.mode = "500"
    with pytest.raises(MyError, match=r"^judge j: HTTP 500"):
        post_chat_completion(server.url + "/v1/chat/completions", {"model": "m", "messages": []},
                             who="judge j", error=MyError, timeout=5)


def test_post_chat_completion_retries_rate_limits_and_server_errors(server):
    """429 (with Retry-After) then 503, then a good reply: one answer, three requests; a client
    error (400) is not retried; a server that keeps failing is reported with the attempts."""
    url = server.url + "/v1/chat/completions"
    body = {"model": "m", "messages": []}
    server.srv.reply = "fine"
    server.srv.script = [429, 503]
    assert post_chat_completion(url, body, backoff=0.01) == "fine"
    assert len(server.srv.received) == 3 and server.srv.script == []
    server.srv.received.clear()
    server.srv.script = [400]
    with pytest.raises(RuntimeError, match=r"HTTP 400") as info:
        post_chat_completion(url, body, backoff=0.01)
    assert "attempt" not in str(info.value) and len(server.srv.received) == 1
    server.srv.received.clear()
    server.srv.mode = "500"
    with pytest.raises(RuntimeError, match=r"HTTP 500 .*boom.*\(after 3 attempts\)"):
        post_chat_completion(url, body, retries=2, backoff=0.01)
    assert len(server.srv.received) == 3
