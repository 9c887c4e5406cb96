"""The GPT-score of the reasoning protocol (docs/architecture.md §7; paper §4.2, §5.3, VisA-D&R): a judge model
rates an answer 1-10 against the reference answer.

    Prompt     `JUDGE_SYSTEM` + `JUDGE_TEMPLATE` (fixed; `build_messages` fills in the question,
               the reference and the answer). The judge rates helpfulness, relevance, accuracy
               and level of detail as one overall score and must put the score first.
    Parsing    `parse_score`: the first number in 1..10 of the reply (``"8"``, ``"Score: 7/10"``,
               ``"**9**"``, ``"I'd give it 6.5 out of 10"``); ``None`` when there is none.
    Judges     anything with a ``name`` and ``score(question, reference, answer) -> JudgeResult``
               (`Judge` protocol). Shipped: `OpenAIJudge`, any OpenAI-compatible
               ``/v1/chat/completions`` server over plain HTTP (``urllib``, no ``openai``
               package), and `TransformersJudge`, a local chat model decoded greedily.

The judge is pluggable and its name is recorded in every `JudgeResult` (docs/architecture.md §7: "always
named in the results"), because scores from different judges are not comparable. Decoding is
deterministic (temperature 0 / greedy). Nothing here downloads anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..http import chat_url, post_chat_completion

__all__ = [
    "JUDGE_SYSTEM", "JUDGE_TEMPLATE", "SCORE_RANGE", "JudgeError", "JudgeResult", "Judge",
    "build_messages", "parse_score", "OpenAIJudge", "TransformersJudge",
]

SCORE_RANGE = (1.0, 10.0)

JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."

JUDGE_TEMPLATE = (
    "[Question]\n{question}\n\n"
    "[Reference Answer]\n{reference}\n[End of Reference Answer]\n\n"
    "[Assistant's Answer]\n{answer}\n[End of Assistant's Answer]\n\n"
    "We would like to request your feedback on the performance of an AI assistant in response "
    "to the user question displayed above, compared with the reference answer.\n"
    "Please rate the helpfulness, relevance, accuracy, and level of details of the assistant's "
    "answer. The assistant receives one overall score on a scale of 1 to 10, where a higher "
    "score indicates better overall performance.\n"
    "Please first output a single line containing only the score (a number from 1 to 10). "
    "In the subsequent line, please provide a brief explanation of your evaluation."
)


class JudgeError(RuntimeError):
    """A judge could not produce a reply (HTTP error, timeout, malformed response)."""


@dataclass(frozen=True)
class JudgeResult:
    """One judged answer: ``score`` in [1, 10] or ``None`` if the reply had no valid score,
    the judge's ``raw`` reply, and ``judge_name`` (which judge gave it; always recorded)."""

    score: float | None
    raw: str
    judge_name: str


@runtime_checkable
class Judge(Protocol):
    name: str

    def score(self, question: str, reference: str, answer: str) -> JudgeResult: ...


def build_messages(question: str, reference: str, answer: str) -> list[dict[str, str]]:
    """The chat messages sent to every judge: system `JUDGE_SYSTEM`, user `JUDGE_TEMPLATE` filled."""
    user = JUDGE_TEMPLATE.format(question=question, reference=reference, answer=answer)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_NUMBER = re.compile(r"(?<![\w.-])(\d+(?:\.\d+)?)(?![\w])")


def parse_score(text: str) -> float | None:
    """The score in a judge's reply: the first number in [1, 10], else ``None``.

    Markdown emphasis and the like are ignored; ``"7/10"`` and ``"6.5 out of 10"`` give the
    first number (a denominator is never taken as the score). A first number outside 1..10
    (``"0"``, ``"11"``, ``"85/100"``) rejects the reply rather than looking further, so a
    malformed score is never replaced by an unrelated number later in the text.
    """
    if not isinstance(text, str):
        return None
    m = _NUMBER.search(text)
    if m is None:
        return None
    value = float(m.group(1))
    lo, hi = SCORE_RANGE
    return value if lo <= value <= hi else None


class OpenAIJudge:
    """A judge behind an OpenAI-compatible chat-completions HTTP API (OpenAI, vLLM, llama.cpp,
    Ollama, ...). ``base_url`` is the server root, with or without ``/v1``; requests go to
    ``{base_url}/v1/chat/completions`` with temperature 0. ``name`` defaults to
    ``"openai:{model}"``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_tokens: int = 256, name: str | None = None, retries: int = 3):
        self.url = chat_url(base_url)
        self.model, self.api_key, self.timeout, self.max_tokens = model, api_key, timeout, max_tokens
        self.retries = retries  # 429 / 5xx / timeouts are retried with backoff (adkit.http)
        self.name = name or f"openai:{model}"

    def request_body(self, question: str, reference: str, answer: str) -> dict[str, Any]:
        return {"model": self.model, "messages": build_messages(question, reference, answer),
                "temperature": 0, "max_tokens": self.max_tokens}

    def complete(self, body: dict[str, Any]) -> str:
        """POST ``body``; return the first choice's message content. Raises `JudgeError`."""
        return post_chat_completion(self.url, body, api_key=self.api_key, timeout=self.timeout,
                                    who=f"judge {self.name}", error=JudgeError, retries=self.retries)

    def score(self, question: str, reference: str, answer: str) -> JudgeResult:
        raw = self.complete(self.request_body(question, reference, answer))
        return JudgeResult(parse_score(raw), raw, self.name)


class TransformersJudge:
    """A local chat model as judge (transformers ``model`` + ``tokenizer`` with a chat template),
    greedy decoding, at most ``max_new_tokens``. ``name`` defaults to the model's
    ``config.name_or_path`` (or its class name) prefixed with ``"transformers:"``."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 32, name: str | None = None):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        ident = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        self.name = name or f"transformers:{ident}"

    def score(self, question: str, reference: str, answer: str) -> JudgeResult:
        import torch

        tok = self.tokenizer
        prompt = tok.apply_chat_template(build_messages(question, reference, answer), tokenize=False,
                                         add_generation_prompt=True)
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        raw = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        return JudgeResult(parse_score(raw), raw, self.name)
