"""adkit.eval.judge (docs/architecture.md §7 GPT-score): prompt, score parsing, the OpenAI-compatible HTTP judge
against a real local test server (a stand-in for the paid service), and a local SmolLM2 judge."""

from __future__ import annotations

import pytest
from chat_server import ChatServer

from adkit.eval.judge import (
    JUDGE_SYSTEM, Judge, JudgeError, JudgeResult, OpenAIJudge, TransformersJudge, build_messages,
    parse_score,
)

Q, REF, ANS = "Is there any defect?", "Yes, a crack on the left side.", "Yes, there is a crack."


# ---------------------------------------------------------------- parsing and prompt

@pytest.mark.parametrize("text, want", [
    ("8", 8.0), ("Score: 7/10", 7.0), ("**9**", 9.0), ("I'd give it 6.5 out of 10", 6.5),
    ("10\nThe answer is complete.", 10.0), ("1", 1.0), ("  7.5. Good but brief.", 7.5),
    ("Rating: **8/10** - accurate.", 8.0),
])
def test_parse_score_accepts(text, want):
    assert parse_score(text) == want


@pytest.mark.parametrize("text", ["0", "11", "85/100", "0.5", "-3", "", "no score here", "score: ten", None])
def test_parse_score_rejects(text):
    assert parse_score(text) is None


def test_prompt_contents():
    msgs = build_messages(Q, REF, ANS)
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == JUDGE_SYSTEM
    user = msgs[1]["content"]
    for part in (Q, REF, ANS, "helpfulness", "relevance", "accuracy", "level of details", "1 to 10",
                 "first output a single line containing only the score"):
        assert part in user
    assert user.index(Q) < user.index(REF) < user.index(ANS)


# ---------------------------------------------------------------- OpenAI-compatible HTTP judge

@pytest.fixture
def server():
    with ChatServer("8\nAccurate and relevant.") as s:
        yield s.srv


def _judge(srv, **kw):
    return OpenAIJudge(f"http://127.0.0.1:{srv.server_address[1]}", "judge-model", **kw)


def test_openai_judge_request_and_reply(server):
    judge = _judge(server, api_key="sk-test", timeout=5)
    assert isinstance(judge, Judge) and judge.name == "openai:judge-model"
    res = judge.score(Q, REF, ANS)
    assert res == JudgeResult(8.0, "8\nAccurate and relevant.", "openai:judge-model")
    (req,) = server.received
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert body["messages"] == build_messages(Q, REF, ANS)
    user = body["messages"][1]["content"]
    assert Q in user and REF in user and ANS in user


def test_openai_judge_base_url_with_v1_and_no_key(server):
    srv_url = f"http://127.0.0.1:{server.server_address[1]}/v1/"
    server.reply = "Score: 6.5/10. Misses the location."
    res = OpenAIJudge(srv_url, "m", name="my-judge", timeout=5).score(Q, REF, ANS)
    assert res.score == 6.5 and res.judge_name == "my-judge"
    assert server.received[0]["path"] == "/v1/chat/completions"
    assert "Authorization" not in server.received[0]["headers"]


def test_openai_judge_unparseable_reply_gives_none(server):
    server.reply = "The answer is quite good."
    res = _judge(server, timeout=5).score(Q, REF, ANS)
    assert res.score is None and res.raw == "The answer is quite good." and res.judge_name


def test_openai_judge_http_500(server):
    server.mode = "500"
    judge = _judge(server, timeout=5)
    with pytest.raises(JudgeError, match=r"HTTP 500.*127\.0\.0\.1.*/v1/chat/completions.*boom"):
        judge.score(Q, REF, ANS)


@pytest.mark.parametrize("mode", ["malformed", "no_choices"])
def test_openai_judge_malformed_json(server, mode):
    server.mode = mode
    judge = _judge(server, timeout=5)
    with pytest.raises(JudgeError, match=r"malformed response from http://127\.0\.0\.1:\d+/v1/chat/completions"):
        judge.score(Q, REF, ANS)


def test_openai_judge_timeout(server):
    server.mode = "slow"
    judge = _judge(server, timeout=0.2, retries=0)
    with pytest.raises(JudgeError, match=r"no reply from http://127\.0\.0\.1:\d+/v1/chat/completions within 0\.2 s"):
        judge.score(Q, REF, ANS)
    assert len(server.received) == 1  # gave up after its own timeout, once


def test_openai_judge_retries_a_rate_limit(server):
    """A 429 (the paid service's rate limit) is waited out: the score arrives, not a gap."""
    server.script = [429]
    assert _judge(server, timeout=5).score(Q, REF, ANS).score == 8.0
    assert len(server.received) == 2


def test_openai_judge_unreachable():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JudgeError, match=rf"cannot reach http://127\.0\.0\.1:{port}/v1/chat/completions"):
        OpenAIJudge(f"http://127.0.0.1:{port}", "m", timeout=1, retries=0).score(Q, REF, ANS)


# ---------------------------------------------------------------- local transformers judge

def test_transformers_judge_smollm2():
    from adkit.weights import smollm2 as S

    model, tok = S.smollm2()
    judge = TransformersJudge(model, tok, max_new_tokens=8, name="smollm2-135m")
    assert isinstance(judge, Judge)
    res = judge.score(Q, REF, ANS)
    assert isinstance(res, JudgeResult) and res.judge_name == "smollm2-135m"
    assert isinstance(res.raw, str)
    assert res.score == parse_score(res.raw)
    assert res.score is None or 1.0 <= res.score <= 10.0
    assert TransformersJudge(model, tok).name.startswith("transformers:")
