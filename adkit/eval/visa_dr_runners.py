"""VisA-D&R runners (paper Table 4; docs/architecture.md §5, §7): MLLM detection and multi-turn reasoning.

    visa_dr_detection    greedy answers to the VisA-D&R Yes/No prompt (batched `generate`):
                         accuracy / precision / recall / F1 per class, then macro over classes,
                         under both parser rules, with the answers where they differ.
    visa_dr_reasoning    multi-turn on anomalous images, the model's OWN answers as history:
                         ROUGE-L, Sentence-BERT cosine, optional GPT-score (the judge's name
                         recorded), per class then macro over classes.

Both follow a protocol (:mod:`adkit.eval.official`): ``"kit"`` (the defaults below) or
``"official"`` (the official scripts' choices: 4096 new tokens, plain greedy, raw answers, one
image at a time, the pcb2/pcb4 reasoning skip, class ``image.split('/')[1]``, ``int()`` cap).

Benchmarks are duck-typed: ``detection`` items (``image``, ``label``, ``category``, ``question``)
and ``reasoning`` items (``image``, ``category``, ``turns`` = [(question, reference), ...]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import metrics
from . import official as protocols
from .judge import JudgeError
from .runners import AVERAGING, _image, _preset, _progress, _subsample

__all__ = ["DetectionResult", "ReasoningResult", "VisaDRResult", "generate_answers", "visa_dr_detection",
           "detection_summary", "visa_dr_reasoning", "turn_kind", "load_benchmark"]


def generate_answers(model, images: Sequence[Image.Image], conversations: Sequence[Sequence[tuple[str, str]]],
                     questions: Sequence[str], max_new_tokens: int = 128, *, strip: bool = True,
                     plain_greedy: bool = False, fit_context: bool = False, stats: dict | None = None) -> list[str]:
    """Greedy answers, one batch: image i, earlier turns ``conversations[i]`` = [(q, a), ...],
    then ``questions[i]``. The same prompt as `AnomalyOV.chat` (``<image>`` first), batched.

    ``strip=False`` keeps the decoded answers raw; ``plain_greedy`` switches the preset's anti-loop
    defaults off (`official.PLAIN_GREEDY`); ``fit_context`` cuts ``max_new_tokens`` to the room the
    prompt leaves in the LLM's context (counted in ``stats["clipped"]``) instead of refusing. The
    budget is only a limit: generation stops at ``<|im_end|>`` and nothing is allocated for it."""
    convs = []
    for history, q in zip(conversations, questions):
        conv = []
        for hq, ha in history:
            conv += [{"role": "user", "content": hq}, {"role": "assistant", "content": ha}]
        conv.append({"role": "user", "content": q})
        if "<image>" not in "".join(t["content"] for t in conv):
            conv[0] = {"role": "user", "content": "<image>\n" + conv[0]["content"]}
        convs.append(conv)
    convs = model.noted(convs, images)  # "+ notes": the expert's line after each image (adkit.notes)
    batch = model.processor(convs, [[im] for im in images], add_generation_prompt=True)
    batch.pop("labels")
    if fit_context:
        room = model.config.text.max_position_embeddings - int(batch["input_ids"].shape[1])
        if 0 < room < max_new_tokens:
            max_new_tokens = room
            if stats is not None:
                stats["clipped"] = stats.get("clipped", 0) + 1
    ids = model.generate(**batch, max_new_tokens=max_new_tokens,
                         **(protocols.PLAIN_GREEDY if plain_greedy else {}))  # [B, T] new tokens only
    texts = model.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t.strip() for t in texts] if strip else texts


def _generate(model, p, images, histories, questions, max_new_tokens, stats) -> list[str]:
    """`generate_answers` under protocol ``p``."""
    return generate_answers(model, images, histories, questions, max_new_tokens, strip=p.strip,
                            plain_greedy=p.plain_greedy, fit_context=p.name == "official", stats=stats)


def _item_image(model, p, item, i: int) -> Image.Image:
    """The item's image as protocol ``p`` loads it (official: `official.official_image`)."""
    if p.loader != "official":
        return _image(item, i)
    from ..data.records import DataError

    if isinstance(item.image, Image.Image) or isinstance(item.image, np.ndarray):
        raise DataError(f"item {i}: the official loader reads image files, got an in-memory image")
    return protocols.official_image(item.image, model.config.geometry, p.cap_rounding)


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
    protocol: str = "kit"
    images: list[str] = field(default_factory=list)  # each item's "image" as its file wrote it
    clipped: int = 0  # generate() calls whose budget was cut to the context (official protocol)
    single_view: bool = False  # the model read each image as one base view (config.single_view), not anyres


def visa_dr_detection(model, bench, batch_size: int | None = None, rule: str | None = None,
                      max_new_tokens: int | None = None, progress: bool = True, protocol="kit") -> DetectionResult:
    """Greedy answers to each detection item's question (the VisA-D&R Yes/No prompt), scored per
    class then macro over classes under both `metrics.PARSE_RULES`; ``rule`` is the headline.

    ``protocol`` (`official.PROTOCOLS` name or a `official.Protocol`) decides everything not given:
    ``"kit"``: batches of 8, 8 new tokens, first-word headline; ``"official"``: the official
    script's choices (one image at a time, 4096 new tokens, raw answers, substring parser, ...)."""
    p = protocols.get_protocol(protocol)
    batch_size, rule = batch_size or p.batch_size, rule or p.rule
    max_new_tokens = max_new_tokens or p.detection_tokens
    if rule not in metrics.PARSE_RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {metrics.PARSE_RULES}")
    items = list(bench.detection)
    if not items:
        raise ValueError("visa_dr_detection: the benchmark has no detection items")
    categories = [protocols.category_of(it, p) for it in items]
    answers: list[str] = []
    stats: dict = {}
    bar = _progress(len(items), "VisA-D&R detection", progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = [_item_image(model, p, it, start + k) for k, it in enumerate(chunk)]
        answers += _generate(model, p, images, [[] for _ in chunk], [protocols.prompt_of(it, p) for it in chunk],
                             max_new_tokens, stats)
        bar.update(len(chunk))
    bar.close()
    res = detection_summary(answers, [int(it.label) for it in items], categories, rule, preset=_preset(model))
    res.protocol, res.clipped = p.name, stats.get("clipped", 0)
    res.single_view = bool(getattr(model.config, "single_view", False))
    res.images = [getattr(it, "source", "") or str(it.image) for it in items]
    return res


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
    # item, image, category, turn, kind, question, reference, answer, rouge_l, sbert, gpt, judge_raw
    records: list[dict]
    summary: dict[str, dict[str, Any]]  # "low-level"/"complex" → rouge_l, sbert, gpt (macro over classes), n
    judge_failures: int = 0
    averaging: str = AVERAGING
    protocol: str = "kit"
    items: list = field(default_factory=list, repr=False)  # the items asked ("item" indexes them)
    skipped: list[str] = field(default_factory=list)  # "image" of the items the protocol's skip list left out
    unscored: int = 0  # answers without a reference (questions-only file): no ROUGE-L / SBERT / GPT-score
    clipped: int = 0  # generate() calls whose budget was cut to the context (official protocol)
    single_view: bool = False  # the model read each image as one base view (config.single_view), not anyres


def _macro_of(records: list[dict], key: str) -> float | None:
    by_class: dict[str, list[float]] = {}
    for r in records:
        if r[key] is not None:
            by_class.setdefault(r["category"], []).append(float(r[key]))
    return metrics.macro({c: float(np.mean(v)) for c, v in by_class.items()}) if by_class else None


def visa_dr_reasoning(model, bench, judge=None, max_new_tokens: int | None = None, batch_size: int | None = None,
                      sbert: Any = None, progress: bool = True, protocol="kit") -> ReasoningResult:
    """Multi-turn answers on each reasoning item, the model's own earlier answers as history.

    Scores per answer: ROUGE-L (F) and Sentence-BERT cosine against the reference (``sbert``:
    see `adkit.eval.text.sbert_model`), and with a ``judge`` its 1–10 score (a failed judge
    call is recorded as None and counted in ``judge_failures``). Summaries: mean per class,
    then macro over classes, for turn 0 ("low-level") and later turns ("complex"). Items read
    without reference answers (``answered=False``) are asked but not scored (``unscored``).

    ``protocol`` decides what is not given: ``"kit"``: batches of 4, 128 new tokens, no skip;
    ``"official"``: the pcb2/pcb4 skip, 4096 new tokens, one image at a time, raw history.
    """
    from .text import rouge_l, sbert_similarity

    p = protocols.get_protocol(protocol)
    batch_size = batch_size or (4 if p.name == "kit" else p.batch_size)
    max_new_tokens = max_new_tokens or p.reasoning_tokens
    every = list(bench.reasoning)
    if not every:
        raise ValueError("visa_dr_reasoning: the benchmark has no reasoning items")
    items = [it for it in every if not protocols.skipped(it, p)]
    skipped = [getattr(it, "source", "") or str(it.image) for it in every if protocols.skipped(it, p)]
    if not items:
        raise ValueError(f"visa_dr_reasoning: all {len(every)} reasoning items are on the skip list {p.skip}")
    records: list[dict] = []
    stats: dict = {}
    bar = _progress(len(items), "VisA-D&R reasoning", progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = [_item_image(model, p, it, start + k) for k, it in enumerate(chunk)]
        histories: list[list[tuple[str, str]]] = [[] for _ in chunk]
        for t in range(max(len(it.turns) for it in chunk)):
            live = [k for k, it in enumerate(chunk) if t < len(it.turns)]
            qs = [chunk[k].turns[t][0] for k in live]
            outs = _generate(model, p, [images[k] for k in live], [histories[k] for k in live], qs, max_new_tokens,
                             stats)
            for k, q, a in zip(live, qs, outs):
                histories[k].append((q, a))  # the model's own answer is the history (docs/architecture.md §7)
                records.append({"item": start + k, "image": getattr(chunk[k], "source", "") or str(chunk[k].image),
                                "category": protocols.category_of(chunk[k], p), "turn": t,
                                "kind": turn_kind(t), "question": q, "reference": chunk[k].turns[t][1], "answer": a})
        bar.update(len(chunk))
    bar.close()
    records.sort(key=lambda r: (r["item"], r["turn"]))
    for r in records:
        r["rouge_l"], r["sbert"], r["gpt"], r["judge_raw"] = None, None, None, None
    scored = [r for r in records if getattr(items[r["item"]], "answered", True)]  # with a reference answer
    sims = sbert_similarity([r["answer"] for r in scored], [r["reference"] for r in scored], model=sbert) \
        if scored else []
    failures = 0
    for r, sim in zip(scored, sims):
        r["rouge_l"], r["sbert"] = rouge_l(r["answer"], r["reference"]), float(sim)
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
                           records, summary, failures, protocol=p.name, items=items, skipped=skipped,
                           unscored=len(records) - len(scored), clipped=stats.get("clipped", 0),
                           single_view=bool(getattr(model.config, "single_view", False)))


@dataclass
class VisaDRResult:
    """Detection and (optionally) reasoning on one VisA-D&R benchmark."""

    detection: DetectionResult | None
    reasoning: ReasoningResult | None
    source: str = ""
    protocol: Any = "kit"  # the official.Protocol (or its name) the run followed
    size: str = ""  # <size> of the official file names (official.size_tag of the preset by default)


def load_benchmark(path, limit: int | None = None, seed: int = 0, require_answers: bool = True):
    """A VisA-D&R benchmark read with `adkit.data.visa_dr.read_visa_dr` (``limit``: seeded
    random subsets of its detection and reasoning items; ``require_answers=False`` reads
    questions-only reasoning files, as the official ``visa_dr.json``)."""
    from types import SimpleNamespace

    from ..data.visa_dr import read_visa_dr

    bench = read_visa_dr(path, require_answers=require_answers)
    if limit is None:
        return bench
    return SimpleNamespace(detection=_subsample(list(bench.detection), limit, seed),
                           reasoning=_subsample(list(bench.reasoning), limit, seed), root=getattr(bench, "root", path))
