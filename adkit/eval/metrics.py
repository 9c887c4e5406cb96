"""Evaluation metrics of Anomaly-OV's protocols (docs/architecture.md §7; paper §5.1 "Training & Evaluation").

Pure functions over numpy arrays; no torch and no scikit-learn, so the kit's numbers are its
own (tests/test_metrics.py checks every one against scikit-learn to 1e-12).

    Zero-shot detection   image AUROC of the expert's `anomaly_score`, per class, then
                          averaged over classes (paper Table 2): `per_class(auroc, ...)` + `macro`.
    Localisation          pixel AUROC of `anomaly_map` against ground-truth masks: `pixel_auroc`.
    MLLM detection        answers to "Are there any anomalies?" parsed to yes/no, then accuracy,
                          precision, recall, F1 with anomaly = positive (VisA-D&R, paper Table 4):
                          `parse_yes_no` + `detection_scores`, per class then macro-averaged.

Conventions: label 1 (or True) = anomalous = positive; a higher score = more anomalous; a
sample is predicted anomalous at threshold t iff score >= t.
"""

from __future__ import annotations

import re
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

__all__ = [
    "auroc", "roc_curve", "pixel_auroc", "f1_max", "per_class", "macro",
    "parse_yes_no", "detection_scores", "PARSE_RULES",
]

PARSE_RULES = ("first_word", "official_substring")


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate 1-D binary labels and finite scores of the same length; return (bool, float64)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    if y.dtype != bool:
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise ValueError(f"labels must be 0/1 or bool (1 = anomalous), got {y[bad][0]!r} at "
                             f"index {int(np.flatnonzero(bad)[0])}")
    if not np.isfinite(s).all():
        n_nan, n_inf = int(np.isnan(s).sum()), int(np.isinf(s).sum())
        first = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"scores must be finite: {n_nan} NaN and {n_inf} infinite value(s), the "
                         f"first at index {first}")
    return y.astype(bool), s


def _both_classes(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"{what} needs both classes, got {n_pos} anomalous (1) and {n_neg} "
                         f"normal (0) sample(s)")


def auroc(labels, scores) -> float:
    """Area under the ROC curve: P(score of an anomaly > score of a normal), ties counting 1/2.

    Computed as the Mann–Whitney U statistic with average ranks for tied scores, which equals
    the trapezoidal area under `roc_curve` (and scikit-learn's `roc_auc_score`). docs/architecture.md §7: the
    expert's zero-shot image AUROC; use `per_class` + `macro` for the paper's averaging.
    """
    y, s = _check(labels, scores)
    _both_classes(y, "AUROC")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # average rank (1-based) of each run of tied scores
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # [R]
    ends = np.r_[starts[1:], s.size]  # [R] exclusive
    run_rank = (starts + 1 + ends) / 2.0  # [R] mean of ranks starts+1 .. ends
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(run_rank, ends - starts)  # [N]
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _cumulative_counts(y: np.ndarray, s: np.ndarray):
    """(fps, tps, thresholds) at every distinct score, thresholds decreasing."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s_desc, y_desc = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_desc)), y.size - 1]  # [R]
    tps = np.cumsum(y_desc)[last_of_run].astype(np.float64)  # [R]
    fps = 1.0 + last_of_run - tps  # [R]
    return fps, tps, s_desc[last_of_run]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), one per distinct score plus a leading (0, 0) at +inf.

    Matches scikit-learn's `roc_curve(labels, scores, drop_intermediate=False)` point for point:
    thresholds are decreasing, point i counts samples with score >= thresholds[i] as anomalous.
    """
    y, s = _check(labels, scores)
    _both_classes(y, "an ROC curve")
    fps, tps, thr = _cumulative_counts(y, s)
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thr]


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    """Pixel-level AUROC: every pixel of every image is one sample (docs/architecture.md §7, localisation).

    `masks[i]` is the [H, W] ground-truth mask (nonzero = anomalous pixel) and `maps[i]` the
    [H, W] `anomaly_map` of image i, already resized to the mask; sizes may differ between images.
    """
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if len(masks) == 0:
        raise ValueError("no masks given")
    ys, ss = [], []
    for i, (m, a) in enumerate(zip(masks, maps)):
        m, a = np.asarray(m), np.asarray(a)
        if m.shape != a.shape:
            raise ValueError(f"pair {i}: mask shape {m.shape} != map shape {a.shape}")
        ys.append((m != 0).ravel())  # [H*W]
        ss.append(a.ravel())  # [H*W]
    return auroc(np.concatenate(ys), np.concatenate(ss))


def f1_max(labels, scores) -> tuple[float, float]:
    """Best F1 over all thresholds of the precision–recall curve, and the threshold reaching it.

    As anomaly-detection papers report "F1-max": F1 = 2PR / (P + R) at each distinct score t
    (anomalous iff score >= t). Ties in F1 go to the highest such threshold. Needs at least one
    anomalous sample (recall is undefined otherwise).
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError(f"F1-max needs at least one anomalous (1) sample, got 0 of {y.size}")
    fps, tps, thr = _cumulative_counts(y, s)
    f1 = 2.0 * tps / (tps + fps + n_pos)  # [R] = 2PR/(P+R), since P = tp/(tp+fp), R = tp/n_pos
    best = int(np.argmax(f1))  # first = highest threshold (thr is decreasing)
    return float(f1[best]), float(thr[best])


def per_class(metric: Callable, labels, scores, classes) -> dict[Hashable, float]:
    """`metric(labels, scores)` within each class: {class: value}, classes in sorted order.

    The paper reports every number per class, then averaged over classes (`macro`), not pooled
    over all images (docs/architecture.md §7). A metric returning (value, extra), like `f1_max`, contributes
    its value. `scores` may be anything numpy indexes, e.g. an array of answers for
    `lambda y, a: detection_scores(a, y)["f1"]`.
    """
    y, s, c = np.asarray(labels), np.asarray(scores), np.asarray(classes)
    if not (len(y) == len(s) == len(c)):
        raise ValueError(f"labels ({len(y)}), scores ({len(s)}) and classes ({len(c)}) differ in length")
    out: dict[Hashable, float] = {}
    for k in sorted(set(c.tolist())):
        sel = c == k
        try:
            value = metric(y[sel], s[sel])
        except ValueError as e:
            raise ValueError(f"class {k!r}: {e}") from e
        out[k] = float(value[0] if isinstance(value, tuple) else value)
    return out


def macro(values: Mapping[Hashable, float]) -> float:
    """Unweighted mean over classes of a `per_class` result (each class counts once)."""
    if len(values) == 0:
        raise ValueError("macro average of no classes")
    return float(np.mean([float(v) for v in values.values()]))


_FIRST_WORD = re.compile(r"[\W\d_]*([^\W\d_]+)")  # skip markdown, quotes, punctuation, numbering


def parse_yes_no(answer: str, rule: str = "first_word") -> bool | None:
    """Parse an MLLM's answer to "is there an anomaly?"; True = anomalous, False = normal.

    rule="first_word" (default): the first word, after stripping whitespace, punctuation,
        markdown (`**`, `#`, `>`) and quotes, case-insensitively: "yes" -> True, "no" -> False,
        anything else (including "") -> None. "**No**" -> False, "yes—a crack" -> True,
        "I see no defect" -> None.
    rule="official_substring": the official VisA-D&R parser, kept only for parity with the
        paper's numbers (docs/architecture.md §7): anomalous iff "Yes" or "yes" is a substring. It never
        returns None, is case-sensitive ("YES" -> False) and matches inside words:
        "No, but the eyes are red" -> True because of "eyes".
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    if rule == "official_substring":
        return "Yes" in answer or "yes" in answer
    if rule != "first_word":
        raise ValueError(f"unknown rule {rule!r}; expected one of {PARSE_RULES}")
    m = _FIRST_WORD.match(answer)
    word = m.group(1).casefold() if m else ""
    return True if word == "yes" else False if word == "no" else None


def detection_scores(answers: Sequence[str], labels, rule: str = "first_word") -> dict:
    """Accuracy, precision, recall, F1 of parsed yes/no answers, anomaly = positive (docs/architecture.md §7).

    Decision: an answer the rule cannot parse counts as predicted *normal* — what the official
    substring parser does with every answer lacking "yes" — and the number of such answers is
    reported as "unparsed" (always 0 for rule="official_substring"). Precision, recall and F1
    that divide by zero are 0.0 (scikit-learn's zero_division=0). Returns floats accuracy,
    precision, recall, f1; ints tp, fp, tn, fn, unparsed, n; and the rule used.
    """
    y = np.asarray(labels)
    if len(answers) != y.size:
        raise ValueError(f"{len(answers)} answers but {y.size} labels")
    y, _ = _check(y, np.zeros(y.size))
    parsed = [parse_yes_no(a, rule) for a in answers]
    pred = np.array([p is True for p in parsed], dtype=bool)  # [N] None -> normal
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "accuracy": (tp + tn) / y.size, "precision": precision, "recall": recall, "f1": f1,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "unparsed": sum(p is None for p in parsed), "n": int(y.size), "rule": rule,
    }
