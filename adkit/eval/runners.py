"""Evaluation runners: the paper's three protocols end to end (paper §4.1; DESIGN §7).

    zero_shot            the expert alone (`model.detect`, batched): image AUROC per class,
                         then macro over classes (paper Table 2); pixel AUROC where masks
                         exist; F1-max; per-sample scores and ROC points kept.
    visa_dr_detection    greedy answers to the VisA-D&R Yes/No prompt (batched `generate`):
                         accuracy / precision / recall / F1 per class, then macro over classes
                         (paper Table 4), under both parser rules, with the answers where they differ.
    visa_dr_reasoning    multi-turn on anomalous images, the model's OWN answers as history
                         (DESIGN §5, §7): ROUGE-L, Sentence-BERT cosine, optional GPT-score
                         (the judge's name recorded), per class then macro over classes.

Inputs are duck-typed: samples need ``image``, ``label``, ``category`` (`AnomalySample`);
benchmarks need ``detection`` items (``image``, ``label``, ``category``, ``question``) and
``reasoning`` items (``image``, ``category``, ``turns`` = [(question, reference), ...]).
`load_samples` / `load_benchmark` read folders and packages through the data loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import metrics
from .judge import JudgeError

__all__ = [
    "AVERAGING", "SOURCES", "ZeroShotResult", "DetectionResult", "ReasoningResult", "VisaDRResult",
    "zero_shot", "visa_dr_detection", "detection_summary", "visa_dr_reasoning", "generate_answers", "load_samples",
    "load_benchmark", "turn_kind",
]

AVERAGING = "macro over classes (per-class value, then the unweighted mean of the classes)"
SOURCES = ("elpv", "mvtec", "visa", "folder", "heldout")
_DATASET_NAMES = {"elpv": "ELPV", "mvtec": "MVTec AD", "visa": "VisA", "heldout": "held-out"}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="img", leave=False)


def _preset(model) -> str:
    return getattr(getattr(model, "config", None), "name", None) or type(model).__name__


def _sample_name(s, i: int) -> str:
    return str(getattr(s, "id", "") or (s.image if isinstance(s.image, str) else f"sample {i}"))


def _image(s, i: int) -> Image.Image:
    """The RGB image of a sample or benchmark item; errors name the record."""
    from ..data.records import DataError
    from ..images import load_image

    try:
        img = s.image
        return load_image(Image.fromarray(img) if isinstance(img, np.ndarray) else img)
    except Exception as e:  # noqa: BLE001 — re-raised with the record's name
        raise DataError(f"{_sample_name(s, i)} ({getattr(s, 'category', '?')}): cannot load image: {e}") from e


# ---------------------------------------------------------------------------- zero-shot (Table 2)

@dataclass
class ZeroShotResult:
    """Expert-only detection on a set of samples (paper Table 2 protocol)."""

    dataset: str
    preset: str
    ids: list[str]
    categories: list[str]
    labels: np.ndarray  # [N] 0/1
    scores: np.ndarray  # [N] anomaly_score per sample, in input order
    image_auroc: dict[str, float]  # per class
    image_auroc_macro: float  # macro over classes
    f1_max: dict[str, float]
    f1_max_macro: float
    roc: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # per class (fpr, tpr, thresholds)
    pooled_auroc: float | None  # all images as one pool (not the paper's number; for reference)
    pixel_auroc: dict[str, float] = field(default_factory=dict)  # classes with masks only
    pixel_auroc_macro: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # class → why it has no image AUROC
    averaging: str = AVERAGING
    untrained: tuple = ()  # the model's parts without trained weights (model.untrained) when it ran

    @property
    def n(self) -> int:
        return int(self.labels.size)

    def per_class_rows(self) -> list[dict[str, Any]]:
        cats, y = np.asarray(self.categories), self.labels
        rows = []
        for c in sorted(set(self.categories)):
            sel = cats == c
            rows.append({"class": c, "n": int(sel.sum()), "anomalous": int(y[sel].sum()),
                         "image_auroc": self.image_auroc.get(c), "f1_max": self.f1_max.get(c),
                         "pixel_auroc": self.pixel_auroc.get(c), "note": self.skipped.get(c, "")})
        return rows


def _pixel_pair(s, det, pixel_size: int):
    """(mask, map) at most ``pixel_size`` on the long side; None when the truth is unknown."""
    amap = np.asarray(det.anomaly_map, dtype=np.float32)  # [H, W]
    h, w = amap.shape
    scale = min(1.0, pixel_size / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (W, H) for PIL
    if getattr(s, "mask", None) is not None:
        mask = s.load_mask(size) if hasattr(s, "load_mask") else \
            np.asarray(Image.fromarray((np.asarray(s.mask) > 0).astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    elif int(s.label) == 0:
        mask = np.zeros(size[::-1], dtype=bool)  # a normal image: no anomalous pixel
    else:
        return None  # anomalous without a mask: pixel truth unknown
    if size != (w, h):
        amap = np.asarray(Image.fromarray(amap, mode="F").resize(size, Image.BILINEAR))  # [H', W']
    return mask, amap


def zero_shot(model, samples: Sequence, batch_size: int = 8, progress: bool = True, dataset: str = "custom",
              pixel_size: int = 224) -> ZeroShotResult:
    """Score ``samples`` with the expert alone (`model.detect`, ``batch_size`` images per call).

    Image AUROC and F1-max per class, then macro over classes (paper Table 2). Pixel AUROC
    per class where any sample of the class has a mask (normal images count as all-normal,
    anomalous images without a mask are left out), with maps and masks resized to at most
    ``pixel_size`` px on the long side. A class with only one label is skipped (reason kept
    in ``skipped``); if no class remains, a ValueError says so.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("zero_shot: no samples to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = np.array([int(s.label) for s in samples])
    bad = np.flatnonzero(~np.isin(labels, (0, 1)))
    if bad.size:
        raise ValueError(f"{_sample_name(samples[bad[0]], bad[0])}: label must be 0 or 1, got {labels[bad[0]]}")
    cats = [str(s.category) for s in samples]
    mask_classes = {c for s, c in zip(samples, cats) if getattr(s, "mask", None) is not None}
    scores = np.empty(len(samples))
    pix: dict[str, tuple[list, list]] = {c: ([], []) for c in mask_classes}
    bar = _progress(len(samples), f"zero-shot {dataset}", progress)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = [_image(s, start + k) for k, s in enumerate(chunk)]
        dets = model.detect(images)
        for k, (s, det) in enumerate(zip(chunk, dets)):
            scores[start + k] = float(det.score)
            if cats[start + k] in mask_classes:
                pair = _pixel_pair(s, det, pixel_size)
                if pair is not None:
                    pix[cats[start + k]][0].append(pair[0])
                    pix[cats[start + k]][1].append(pair[1])
        bar.update(len(chunk))
    bar.close()

    c_arr = np.asarray(cats)
    image_auroc, f1, roc, skipped = {}, {}, {}, {}
    for c in sorted(set(cats)):
        sel = c_arr == c
        n_pos = int(labels[sel].sum())
        if n_pos == 0 or n_pos == int(sel.sum()):
            skipped[c] = f"needs both labels, has {n_pos} anomalous and {int(sel.sum()) - n_pos} normal"
            continue
        image_auroc[c] = metrics.auroc(labels[sel], scores[sel])
        f1[c] = metrics.f1_max(labels[sel], scores[sel])[0]
        roc[c] = metrics.roc_curve(labels[sel], scores[sel])
    if not image_auroc:
        raise ValueError(f"zero_shot on {dataset}: no class has both normal and anomalous samples "
                         f"({'; '.join(f'{c}: {r}' for c, r in skipped.items())})")
    pixel = {}
    for c, (masks, maps) in sorted(pix.items()):
        if masks and any(m.any() for m in masks) and not all(m.all() for m in masks):
            pixel[c] = metrics.pixel_auroc(masks, maps)
    both = 0 < labels.sum() < labels.size
    return ZeroShotResult(
        dataset=dataset, preset=_preset(model), ids=[_sample_name(s, i) for i, s in enumerate(samples)],
        categories=cats, labels=labels, scores=scores, image_auroc=image_auroc,
        image_auroc_macro=metrics.macro(image_auroc), f1_max=f1, f1_max_macro=metrics.macro(f1), roc=roc,
        pooled_auroc=metrics.auroc(labels, scores) if both else None, pixel_auroc=pixel,
        pixel_auroc_macro=metrics.macro(pixel) if pixel else None, skipped=skipped,
        untrained=tuple(getattr(model, "untrained", ()) or ()))


def _subsample(samples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def load_samples(source: str, path=None, *, limit: int | None = None, seed: int = 0,
                 categories: Sequence[str] | None = None, per_class: int = 8) -> tuple[str, list]:
    """(dataset name, samples) from a source in `SOURCES`, importing its loader only now.

    ``elpv``: the packaged ELPV set (``limit`` images, seeded); ``mvtec`` / ``visa`` / ``folder``:
    a test split on disk under ``path`` (``limit``: a seeded random subset); ``heldout``: the
    kit's held-out synthetic categories, ``per_class`` images each (half normal).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if source != "elpv" and source != "heldout" and path is None:
        raise ValueError(f"source {source!r} needs a folder path")
    if source == "elpv":
        from ..data.loaders import load_elpv

        return "ELPV", load_elpv(limit=limit, seed=seed)
    if source == "heldout":
        from ..data import normals

        cats = list(categories) if categories else list(normals.categories("test"))
        n_normal = per_class // 2
        samples = normals.make_samples(cats, n_normal, per_class - n_normal, seed)
        return "held-out", _subsample(samples, limit, seed)
    from ..data import loaders

    if source == "mvtec":
        samples = loaders.load_mvtec(path, split="test", categories=categories)
    elif source == "visa":
        samples = loaders.load_visa(path, split="test", categories=categories)
    else:
        from pathlib import Path

        samples = loaders.load_folder(path, category=None if not categories else
                                      categories[0] if len(categories) == 1 else list(categories))
        return Path(path).name or "folder", _subsample(list(samples), limit, seed)
    return _DATASET_NAMES[source], _subsample(list(samples), limit, seed)


# ---------------------------------------------------------------------------- VisA-D&R (Table 4)

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
                histories[k].append((q, a))  # the model's own answer is the history (DESIGN §7)
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
