"""VisA-D&R runners (paper Table 4; docs/architecture.md §5, §7): MLLM detection and multi-turn reasoning.

    visa_dr_detection    greedy answers to the VisA-D&R Yes/No prompt (batched `generate`):
                         accuracy / precision / recall / F1 per class, then macro over classes,
                         under both parser rules, with the answers where they differ.
    visa_dr_reasoning    multi-turn on anomalous images, the model's OWN answers as history:
                         ROUGE-L, Sentence-BERT cosine, optional GPT-score (the judge's name
                         recorded), per class then macro over classes.

Benchmarks are duck-typed: ``detection`` items (``image``, ``label``, ``category``, ``question``)
and ``reasoning`` items (``image``, ``category``, ``turns`` = [(question, reference), ...]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import metrics
from .judge import JudgeError
from .runners import AVERAGING, _image, _preset, _progress, _subsample

__all__ = ["DetectionResult", "ReasoningResult", "VisaDRResult", "generate_answers", "visa_dr_detection",
           "detection_summary", "visa_dr_reasoning", "turn_kind", "load_benchmark"]


def generate_answers(model, images: Sequence[Image.Image], conversations: Sequence[Sequence[tuple[str, str]]],
                     questions: Sequence[str], max_new_tokens: int = 128) -> list[str]:
    """Greedy answers, one batch: image i, earlier turns ``conversations[i]`` = [(q, a), ...],
    then ``questions[i]``. The same prompt as `AnomalyOV.chat` (``<image>`` first), batched."""
    convs = []
    for history, q in zip(conversations, questions):
        conv = []
        for hq, ha in history:
            conv += [{"role": "user", "content": hq}, {"role": "assistant", "content": ha}]
        conv.append({"role": "user", "content": q})
        if "<image>" not in "".join(t["content"] for t in conv):
            conv[0] = {"role": "user", "content": "<image>\n" + conv[0]["content"]}
        convs.append(conv)
    batch = model.processor(convs, [[im] for im in images], add_generation_prompt=True)
    batch.pop("labels")
    ids = model.generate(**batch, max_new_tokens=max_new_tokens)  # [B, T] new tokens only
    return [t.strip() for t in model.tokenizer.batch_decode(ids, skip_special_tokens=True)]


@dataclass
class DetectionResult:
    """VisA-D&R detection: answers, and scores under both parser rules (``rule`` = the headline)."""

    preset: str
    rule: str
    answers: list[str]
    labels: np.ndarray  # [N] 0/1
    categories: list[str]
    per_class: dict[str, dict[str, dict]]  # rule → class → metrics.detection_scores(...)
    macro: dict[str, dict[str, float]]  # rule → accuracy/precision/recall/f1, macro over classes
    differences: list[dict]  # answers the two rules parse differently
    averaging: str = AVERAGING


def visa_dr_detection(model, bench, batch_size: int = 8, rule: str = "first_word", max_new_tokens: int = 8,
                      progress: bool = True) -> DetectionResult:
    """Greedy answers to each detection item's question (the VisA-D&R Yes/No prompt), scored per
    class then macro over classes under both `metrics.PARSE_RULES`; ``rule`` is the headline."""
    if rule not in metrics.PARSE_RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {metrics.PARSE_RULES}")
    items = list(bench.detection)
    if not items:
        raise ValueError("visa_dr_detection: the benchmark has no detection items")
    answers: list[str] = []
    bar = _progress(len(items), "VisA-D&R detection", progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = [_image(it, start + k) for k, it in enumerate(chunk)]
        answers += generate_answers(model, images, [[] for _ in chunk], [it.question for it in chunk], max_new_tokens)
        bar.update(len(chunk))
    bar.close()
    return detection_summary(answers, [int(it.label) for it in items], [str(it.category) for it in items], rule,
                             preset=_preset(model))


def detection_summary(answers: Sequence[str], labels, categories: Sequence[str], rule: str = "first_word",
                      preset: str = "") -> DetectionResult:
    """Score answers per class, then macro over classes, under both parser rules, and list the
    answers the rules parse differently ("eyes" → substring says anomalous, first word says not)."""
    if rule not in metrics.PARSE_RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {metrics.PARSE_RULES}")
    answers, cats = list(answers), [str(c) for c in categories]
    labels = np.asarray(labels).astype(int)
    if not (len(answers) == labels.size == len(cats)):
        raise ValueError(f"answers ({len(answers)}), labels ({labels.size}) and categories ({len(cats)}) differ in length")
    c_arr, a_arr = np.asarray(cats), np.asarray(answers, dtype=object)
    per_class, macro = {}, {}
    for r in metrics.PARSE_RULES:
        per_class[r] = {c: metrics.detection_scores(list(a_arr[c_arr == c]), labels[c_arr == c], r)
                        for c in sorted(set(cats))}
        macro[r] = {k: metrics.macro({c: v[k] for c, v in per_class[r].items()})
                    for k in ("accuracy", "precision", "recall", "f1")}
    differences = []
    for i, a in enumerate(answers):
        fw, sub = metrics.parse_yes_no(a, "first_word"), metrics.parse_yes_no(a, "official_substring")
        if bool(fw) != sub:  # None (unparsed) counts as normal, as in detection_scores
            differences.append({"index": i, "category": cats[i], "label": int(labels[i]), "answer": a,
                                "first_word": fw, "official_substring": sub})
    return DetectionResult(preset, rule, answers, labels, cats, per_class, macro, differences)


def turn_kind(turn: int) -> str:
    """Paper Table 4's split: turn 0 (describe the anomaly) is "low-level"; later turns
    (cause, effect, prevention) are "complex"."""
    return "low-level" if turn == 0 else "complex"


@dataclass
class ReasoningResult:
    """VisA-D&R reasoning: one record per (item, turn) and summaries per turn kind."""

    preset: str
    judge_name: str | None  # None: no GPT-score computed
    records: list[dict]  # item, category, turn, kind, question, reference, answer, rouge_l, sbert, gpt, judge_raw
    summary: dict[str, dict[str, Any]]  # "low-level"/"complex" → rouge_l, sbert, gpt (macro over classes), n
    judge_failures: int = 0
    averaging: str = AVERAGING


def _macro_of(records: list[dict], key: str) -> float | None:
    by_class: dict[str, list[float]] = {}
    for r in records:
        if r[key] is not None:
            by_class.setdefault(r["category"], []).append(float(r[key]))
    return metrics.macro({c: float(np.mean(v)) for c, v in by_class.items()}) if by_class else None


def visa_dr_reasoning(model, bench, judge=None, max_new_tokens: int = 128, batch_size: int = 4,
                      sbert: Any = None, progress: bool = True) -> ReasoningResult:
    """Multi-turn answers on each reasoning item, the model's own earlier answers as history.

    Scores per answer: ROUGE-L (F) and Sentence-BERT cosine against the reference (``sbert``:
    see `adkit.eval.text.sbert_model`), and with a ``judge`` its 1–10 score (a failed judge
    call is recorded as None and counted in ``judge_failures``). Summaries: mean per class,
    then macro over classes, for turn 0 ("low-level") and later turns ("complex").
    """
    from .text import rouge_l, sbert_similarity

    items = list(bench.reasoning)
    if not items:
        raise ValueError("visa_dr_reasoning: the benchmark has no reasoning items")
    records: list[dict] = []
    bar = _progress(len(items), "VisA-D&R reasoning", progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = [_image(it, start + k) for k, it in enumerate(chunk)]
        histories: list[list[tuple[str, str]]] = [[] for _ in chunk]
        for t in range(max(len(it.turns) for it in chunk)):
            live = [k for k, it in enumerate(chunk) if t < len(it.turns)]
            qs = [chunk[k].turns[t][0] for k in live]
            outs = generate_answers(model, [images[k] for k in live], [histories[k] for k in live], qs, max_new_tokens)
            for k, q, a in zip(live, qs, outs):
                histories[k].append((q, a))  # the model's own answer is the history (docs/architecture.md §7)
                records.append({"item": start + k, "category": str(chunk[k].category), "turn": t, "kind": turn_kind(t),
                                "question": q, "reference": chunk[k].turns[t][1], "answer": a})
        bar.update(len(chunk))
    bar.close()
    records.sort(key=lambda r: (r["item"], r["turn"]))
    sims = sbert_similarity([r["answer"] for r in records], [r["reference"] for r in records], model=sbert)
    failures = 0
    for r, sim in zip(records, sims):
        r["rouge_l"], r["sbert"] = rouge_l(r["answer"], r["reference"]), float(sim)
        r["gpt"], r["judge_raw"] = None, None
        if judge is not None:
            try:
                res = judge.score(r["question"], r["reference"], r["answer"])
                r["gpt"], r["judge_raw"] = res.score, res.raw
            except JudgeError as e:
                failures += 1
                r["judge_raw"] = f"error: {e}"
    summary = {}
    for kind in ("low-level", "complex"):
        sub = [r for r in records if r["kind"] == kind]
        summary[kind] = {"rouge_l": _macro_of(sub, "rouge_l"), "sbert": _macro_of(sub, "sbert"),
                         "gpt": _macro_of(sub, "gpt"), "n": len(sub)}
    return ReasoningResult(_preset(model), getattr(judge, "name", None) if judge is not None else None,
                           records, summary, failures)


@dataclass
class VisaDRResult:
    """Detection and (optionally) reasoning on one VisA-D&R benchmark."""

    detection: DetectionResult | None
    reasoning: ReasoningResult | None
    source: str = ""


def load_benchmark(path, limit: int | None = None, seed: int = 0):
    """A VisA-D&R benchmark read with `adkit.data.visa_dr.read_visa_dr` (``limit``: seeded
    random subsets of its detection and reasoning items)."""
    from types import SimpleNamespace

    from ..data.visa_dr import read_visa_dr

    bench = read_visa_dr(path)
    if limit is None:
        return bench
    return SimpleNamespace(detection=_subsample(list(bench.detection), limit, seed),
                           reasoning=_subsample(list(bench.reasoning), limit, seed), root=getattr(bench, "root", path))
