"""Do the answers state the facts? Defect family, location and verdict on labelled images.

The paper scores reasoning with ROUGE-L, Sentence-BERT and a GPT judge against references
(Table 4). On the kit's synthetic data each anomalous image has known facts — its defect family
and where the (largest) defect region lies on a 3×3 grid — so we can also ask the plain
question a presenter asks: *does the description name the right defect, at the right place?*

    names_family(answer, defect)     a word of the defect's family (name, synonyms, the
                                     defect's own words) appears in the answer
    named_cell(answer)               the 3×3 cell of the first location phrase in the answer
                                     (either vocabulary: "top left" / "upper left", "center" /
                                     "near the centre"), longest phrases matched first
    fact_check(model, samples, ...)  per anomalous sample: "Describe the anomaly in the image."
                                     → family named?, location right?, ROUGE-L against the
                                     template writer's fact-based reference; per sample (all):
                                     the Yes/No detection prompt → accuracy / precision / recall / F1

Rates are over samples, then macro over categories (the paper's per-class averaging).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..data import phrases as P
from ..data.instruct import LOCATION_CELLS, location_from_mask, sample_context
from ..data.synth import LOCATION_GRID
from ..data.visa_dr import DETECTION_PROMPT
from ..data.writers import TemplateWriter, defect_family, defect_words
from . import metrics
from .text import rouge_l

__all__ = ["DESCRIBE_QUESTION", "FactCheck", "family_words", "names_family", "named_cell", "fact_check"]

DESCRIBE_QUESTION = "Describe the anomaly in the image."  # VisA-D&R's first reasoning question

_EXTRA = {(1, 1): ("centre", "middle"), (0, 1): ("upper",), (2, 1): ("lower",)}


def _cell_phrases() -> list[tuple[str, tuple[int, int]]]:
    out = []
    for r in range(3):
        for c in range(3):
            for phrase in (LOCATION_CELLS[r][c], LOCATION_GRID[r][c], *_EXTRA.get((r, c), ())):
                out.append((phrase, (r, c)))
    return sorted(set(out), key=lambda pc: -len(pc[0]))  # "top left" before "top", "left"


_CELLS = _cell_phrases()


def family_words(defect: str) -> set[str]:
    """Words that name ``defect``'s family: the family name, its synonyms and the defect's own words."""
    fam = defect_family(defect)
    words = {fam, defect_words(defect), str(defect).replace("_", " ")}
    if fam != "generic":
        words |= set(P.FAMILIES[fam]["syn"])
    return {w.lower() for w in words if w and w not in ("generic", "defect")}


def names_family(answer: str, defect: str) -> bool:
    text = answer.lower()
    return any(re.search(r"\b" + re.escape(w) + r"(s|es|ed|ing)?\b", text) for w in family_words(defect))


def named_cell(answer: str) -> tuple[int, int] | None:
    """The grid cell (row, col) of the earliest location phrase in ``answer``; None if it names none."""
    text, found = answer.lower(), []
    taken = np.zeros(len(text) + 1, bool)
    for phrase, cell in _CELLS:
        for m in re.finditer(r"\b" + re.escape(phrase) + r"\b", text):
            if not taken[m.start():m.end()].any():
                taken[m.start():m.end()] = True
                found.append((m.start(), cell))
    return min(found)[1] if found else None


def _cell_of(mask) -> tuple[int, int] | None:
    loc = location_from_mask(mask)
    return next(((r, c) for r in range(3) for c in range(3) if LOCATION_CELLS[r][c] == loc), None)


@dataclass
class FactCheck:
    """Per-sample rows and the macro (over categories) rates of :func:`fact_check`."""

    rows: list[dict]
    detection: dict[str, float]  # accuracy / precision / recall / f1, macro over categories
    family_rate: float  # share of descriptions naming the right family, macro over categories
    location_rate: float  # share of descriptions naming the right 3×3 cell
    rouge_l: float  # ROUGE-L of the descriptions against the fact-based references
    per_class: dict[str, dict] = field(default_factory=dict)


def _macro(rows: list[dict], key: str) -> float:
    cats = sorted({r["category"] for r in rows if key in r})
    return float(np.mean([np.mean([r[key] for r in rows if r["category"] == c and key in r]) for c in cats])) \
        if cats else float("nan")


def fact_check(model, samples: Sequence, max_new_tokens: int = 96, batch_size: int = 8, progress: bool = True,
               seed: int = 0) -> FactCheck:
    """Ask every sample the Yes/No detection prompt and every anomalous one to describe the
    anomaly; score the answers against the sample's facts (see the module docstring)."""
    from .visa_dr_runners import generate_answers

    samples = list(samples)
    writer = TemplateWriter(seed)
    rows = []
    steps = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="fact check", leave=False)
    for start in steps:
        part = samples[start:start + batch_size]
        images = [s.load_image() for s in part]
        said = generate_answers(model, images, [[]] * len(part), [DETECTION_PROMPT] * len(part), max_new_tokens=8)
        bad = [i for i, s in enumerate(part) if s.label == 1]
        described = generate_answers(model, [images[i] for i in bad], [[]] * len(bad), [DESCRIBE_QUESTION] * len(bad),
                                     max_new_tokens=max_new_tokens) if bad else []
        described = dict(zip(bad, described))
        for i, s in enumerate(part):
            row = {"id": s.id, "category": s.category, "defect": s.defect, "label": int(s.label),
                   "verdict": said[i], "predicted": int(bool(metrics.parse_yes_no(said[i])))}
            if i in described:
                mask = s.load_mask(image_size=images[i].size) if s.mask is not None else None
                ctx = sample_context(s, mask)
                reference = writer.write("describe", ctx["hint"], None, ctx)
                truth, named = _cell_of(mask), named_cell(described[i])
                row.update(answer=described[i], reference=reference, family=float(names_family(described[i], s.defect)),
                           location=float(truth is not None and named == truth),
                           rouge_l=rouge_l(described[i], reference))
            rows.append(row)
    per_class = {}
    for cat in sorted({r["category"] for r in rows}):
        mine = [r for r in rows if r["category"] == cat]
        per_class[cat] = metrics.detection_scores([r["verdict"] for r in mine], [r["label"] for r in mine])
    detection = {k: float(np.mean([per_class[c][k] for c in per_class])) for k in ("accuracy", "precision", "recall", "f1")}
    return FactCheck(rows=rows, detection=detection, family_rate=_macro(rows, "family"),
                     location_rate=_macro(rows, "location"), rouge_l=_macro(rows, "rouge_l"), per_class=per_class)
