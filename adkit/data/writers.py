"""Pluggable text writers of the instruction-data pipeline (docs/architecture.md §5; paper §4.1 data).

The paper has GPT-4o write the detailed descriptions and multi-round conversations of
Anomaly-Instruct-125k from an image with red boxes plus a class/defect hint. Here the
writer is pluggable: anything with

    name: str                   recorded in every output record (``record["meta"]["writer"]``)
    multimodal: bool            True → the pipeline passes the (boxed) image, else ``None``
    write(task, hint, image, context) -> str

where ``task`` is one of `TASKS`, ``hint`` the paper's hint ("a capsule with poke mark near the
top left"), ``image`` a PIL image or ``None`` and ``context`` a dict with the sample's facts:
``category``, ``defect``, ``label``, ``location``, ``severity``, ``extent``, ``object``,
``boxed`` (red boxes drawn), ``question`` (the user turn being answered) and, for follow-up
tasks, ``description`` (the answer of ``"describe"``). Missing keys mean unknown.

Shipped writers:
    `TemplateWriter`      offline default; composes answers from the phrase bank (phrases.py)
    `TransformersWriter`  a local transformers causal LM (chat template when it has one)
    `OpenAIWriter`        any OpenAI-compatible ``/v1/chat/completions`` server over HTTP

Model writers share one prompt (`build_messages`); failures raise `WriterError` naming the
writer, the URL / model and the problem. `post_chat_completion` is the HTTP helper (the same
protocol as adkit.eval.judge's OpenAIJudge, with the error class as a parameter).
"""

from __future__ import annotations

import random
import string
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from ..http import chat_url, image_data_url, post_chat_completion
from . import phrases as P

__all__ = ["TASKS", "WriterError", "Writer", "build_messages",
           "defect_family", "defect_words",
           "TemplateWriter", "TransformersWriter", "OpenAIWriter"]

TASKS = ("describe", "cause", "effect", "prevention", "normal_description", "check")

SYSTEM_PROMPT = ("You are an expert in industrial and medical visual inspection. You write accurate, "
                 "fluent answers for a visual instruction-tuning dataset about anomaly detection.")
TASK_PROMPTS = {
    "describe": "Describe the anomaly of this object in detail: what it looks like, where it is and how large it is.",
    "cause": "Explain what most likely caused this anomaly.",
    "effect": "Explain what effect this anomaly could have on the object and its use.",
    "prevention": "Explain how this kind of anomaly could be prevented.",
    "normal_description": "Describe this normal object in detail: its appearance, shape, colour and texture.",
    "check": "Explain what an inspector should check on this kind of object to find defects.",
}


class WriterError(RuntimeError):
    """A writer could not produce text (HTTP error, timeout, malformed reply, empty output)."""


@runtime_checkable
class Writer(Protocol):
    name: str
    multimodal: bool

    def write(self, task: str, hint: str, image: Image.Image | None, context: dict) -> str: ...


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown writer task {task!r}; known tasks: {', '.join(TASKS)}")


def build_messages(task: str, hint: str, context: dict, with_image: bool = False) -> list[dict[str, str]]:
    """The chat messages every model writer sends: system `SYSTEM_PROMPT`, then a user turn with
    the hint, the known facts, the task and (for follow-ups) the earlier description."""
    _check_task(task)
    lines = [f"Object: {hint}."]
    keys = ("category",) if context.get("label") == 0 else ("category", "defect", "location", "severity", "extent")
    facts = [f"{k}: {context[k]}" for k in keys if context.get(k) not in (None, "")]
    if facts:
        lines.append("Known facts: " + "; ".join(facts) + ".")
    if with_image and context.get("boxed"):
        lines.append("The anomalous regions are marked with red boxes in the image; "
                     "do not mention the boxes in your answer.")
    if context.get("description") and task != "describe":
        lines.append(f"Description of the object: {context['description']}")
    if context.get("question"):
        lines.append(f"Question: {context['question']}")
    lines.append(TASK_PROMPTS[task] + " Answer in 2 to 4 sentences, without preamble.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


# ------------------------------------------------------------------ offline template writer

def _article(phrase: str) -> str:
    word = phrase.split(" ", 1)[0].lower()
    vowel = word[:1] in "aeiou" and not word.startswith(("uni", "use", "one", "eu"))
    return ("an " if vowel or word in ("hour", "honest") else "a ") + phrase


def defect_family(defect: str) -> str:
    """The phrase-bank family of a defect name (``ALIASES``, then ``KEYWORDS``, else generic)."""
    key = (defect or "").strip().lower().replace("-", "_").replace(" ", "_")
    if key in P.ALIASES:
        return P.ALIASES[key]
    return next((fam for word, fam in P.KEYWORDS if word in key), "generic")


def defect_words(defect: str) -> str:
    """A defect name in words: ``"broken_large"`` → ``"large break"``, ``"bent_wire"`` → ``"bent wire"``."""
    key = (defect or "").strip().lower()
    return P.DEFECT_WORDS.get(key, key.replace("_", " ").replace("-", " ") or "defect")


class _Slots(string.Formatter):
    """``{Name}`` (capitalised) fills in slot ``name`` with its first letter upper-cased."""

    def get_value(self, key, args, kwargs):
        value = kwargs[key.lower()] if key not in kwargs else kwargs[key]
        return value[:1].upper() + value[1:] if key[:1].isupper() else value


class TemplateWriter:
    """Offline writer: answers composed from `adkit.data.phrases` (frames × synonyms × family
    phrases), deterministic given ``seed`` and the order of calls. Answers about anomalies mention
    the category, the defect (with severity or extent) and the location whenever they are known."""

    multimodal = False

    def __init__(self, seed: int = 0, name: str = "template"):
        self.seed, self.name = seed, name
        self.rng = random.Random(seed)
        self._fmt = _Slots()

    def _slots(self, hint: str, context: dict) -> dict[str, str]:
        rng = self.rng
        cat = str(context.get("category") or "object").replace("_", " ")
        fam = P.FAMILIES[defect_family(context.get("defect", ""))]
        adjective = context.get("severity") or context.get("extent") or ""
        noun = (f"{adjective} " if adjective else "") + defect_words(context.get("defect", ""))
        loc = context.get("location")
        if loc and str(loc).lower().startswith(P.PREPOSITIONS):
            where = str(loc)
        elif loc:
            where = rng.choice(P.WHERE_FRAMES).format(loc=loc)
        else:
            where = rng.choice(P.WHERE_UNKNOWN)
        syn = rng.choice(fam["syn"])
        fill = {"cat": cat, "syn": syn}
        c1, c2 = rng.sample(fam["cause"], 2)
        e1, e2 = rng.sample(fam["effect"], 2)
        p1, p2 = rng.sample(fam["prev"], 2)
        k1, k2 = rng.sample(P.CHECKS, 2)
        slots = {"cat": cat, "syn": syn, "where": where, "a_defect": _article(noun), "the_defect": "the " + noun,
                 "obj": context.get("object") or _article(cat),
                 "check": k1, "check2": k2}
        for key, value in (("cause", c1), ("cause2", c2), ("effect", e1), ("effect2", e2), ("prev", p1), ("prev2", p2)):
            slots[key] = value.format(**fill)
        slots["look"], slots["look2"] = (s.format(**fill) for s in rng.sample(fam["looks"], 2))
        return slots

    def _say(self, frames: list[str], slots: dict) -> str:
        return self._fmt.format(self.rng.choice(frames), **slots)

    def write(self, task: str, hint: str, image: Image.Image | None = None, context: dict | None = None) -> str:
        _check_task(task)
        s = self._slots(hint, context or {})
        rng, say = self.rng, self._say
        if task == "describe":
            parts = [say(P.DESCRIBE_OPEN, s), s["look"]]
            parts += [s["look2"]] if rng.random() < 0.5 else []
            count = int((context or {}).get("count") or 1)
            if count > 1:
                n = P.NUMBER_WORDS[count] if count < len(P.NUMBER_WORDS) else str(count)
                parts.append(say(P.COUNT_FRAMES, {**s, "n": n, "N": n.capitalize()}))
            else:
                parts += [say(P.DESCRIBE_MORE, s)]
        elif task == "cause":
            parts = [say(P.CAUSE_OPEN, s), say(P.CAUSE_MORE, s)]
        elif task == "effect":
            parts = [say(P.EFFECT_OPEN, s), say(P.EFFECT_MORE, s)]
        elif task == "prevention":
            parts = [say(P.PREV_OPEN, s), say(P.PREV_MORE, s)]
        elif task == "normal_description":
            more = rng.sample(P.NORMAL_MORE, rng.choice((2, 3)))
            parts = [say(P.NORMAL_OPEN, s)] + [x.format(cat=s["cat"]) for x in more]
        else:  # check
            parts = [say(P.CHECK_OPEN, s)]
        parts.append(say(P.NORMAL_CLOSERS if task in ("normal_description", "check") else P.CLOSERS, s))
        return " ".join(p for p in parts if p)


# ------------------------------------------------------------------ local transformers LM

class TransformersWriter:
    """A local transformers causal LM as writer (text only: the image is not used). The prompt is
    `build_messages` rendered with the tokenizer's chat template, or plainly (``System: ... User:
    ... Assistant:``) when it has none. Greedy decoding by default (``generate_kwargs`` override).
    An empty reply raises `WriterError`, or uses ``fallback.write`` when a fallback is given."""

    multimodal = False

    def __init__(self, model, tokenizer, max_new_tokens: int = 160, name: str | None = None,
                 fallback: Writer | None = None, **generate_kwargs):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.fallback, self.generate_kwargs = fallback, {"do_sample": False, **generate_kwargs}
        ident = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        self.name = name or f"transformers:{ident}"

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text the model sees."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        body = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
        return body + "\n\nAssistant:"

    def generate(self, prompt: str) -> str:
        """Decode ``prompt``'s continuation (special tokens skipped, whitespace stripped)."""
        import torch

        tok = self.tokenizer
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, pad_token_id=pad,
                                      eos_token_id=tok.eos_token_id, **self.generate_kwargs)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def write(self, task: str, hint: str, image: Image.Image | None = None, context: dict | None = None) -> str:
        text = self.generate(self.render(build_messages(task, hint, context or {})))
        if text:
            return text
        if self.fallback is not None:
            return self.fallback.write(task, hint, image, context or {})
        raise WriterError(f"writer {self.name}: the model returned an empty answer for task {task!r} ({hint})")


# ------------------------------------------------------------------ OpenAI-compatible HTTP

class OpenAIWriter:
    """A writer behind any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp,
    Ollama, ...). ``send_images=True`` makes it multimodal: the (boxed) image goes along as a
    base64 PNG data URL in an ``image_url`` content part, as the paper's GPT-4o saw it."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 send_images: bool = False, max_tokens: int = 300, temperature: float = 0.7,
                 name: str | None = None, retries: int = 3):
        self.url, self.model, self.api_key, self.timeout = chat_url(base_url), model, api_key, timeout
        self.retries = retries  # 429 / 5xx / timeouts are retried with backoff (adkit.http)
        self.multimodal, self.max_tokens, self.temperature = send_images, max_tokens, temperature
        self.name = name or f"openai:{model}"

    def request_body(self, task: str, hint: str, image: Image.Image | None, context: dict) -> dict[str, Any]:
        send = self.multimodal and image is not None
        messages = build_messages(task, hint, context, with_image=send)
        if send:
            text = messages[1]["content"]
            messages[1] = {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(image)}}, {"type": "text", "text": text}]}
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}

    def write(self, task: str, hint: str, image: Image.Image | None = None, context: dict | None = None) -> str:
        body = self.request_body(task, hint, image, context or {})
        text = post_chat_completion(self.url, body, api_key=self.api_key, timeout=self.timeout,
                                    who=f"writer {self.name}", error=WriterError, retries=self.retries).strip()
        if not text:
            raise WriterError(f"writer {self.name}: empty answer from {self.url} for task {task!r} ({hint})")
        return text
