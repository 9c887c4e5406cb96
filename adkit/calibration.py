"""Verdict thresholds per scoring method, chosen on validation data and stored with the weights.

A score is not a verdict: "anomalous" means score ≥ a threshold, and a threshold is a choice
made on data. adkit makes it on the kit's *validation* categories (never on a test set) with
:func:`fit` and stores it beside the shipped weights (``adkit/weights/small/calibration.json``);
``adkit eval calibrate`` writes one for any preset. Each method also gets a logistic
``p = sigmoid((raw − centre) / scale)`` fitted on the same data, so scores of different methods
can be averaged ("expert+self") on a common, probability-like scale.

Presets without a calibration file (``tiny``, the paper presets until calibrated) get
:meth:`Calibration.default`: threshold 0.5 for every method, marked uncalibrated.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MethodCalibration", "Calibration", "fit_method"]


@dataclass(frozen=True)
class MethodCalibration:
    threshold: float  # verdict: anomalous iff score >= threshold
    centre: float = 0.5  # logistic: p = sigmoid((score - centre) / scale)
    scale: float = 0.1

    def probability(self, score):
        """The logistic of ``score`` (float or array) on this method's fitted scale."""
        z = (np.asarray(score, dtype=np.float64) - self.centre) / self.scale
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        return float(p) if np.ndim(p) == 0 else p


@dataclass
class Calibration:
    methods: dict[str, MethodCalibration] = field(default_factory=dict)
    calibrated: bool = False
    source: str = "uncalibrated: threshold 0.5 for every method"  # how it was made

    @classmethod
    def default(cls) -> "Calibration":
        return cls()

    def get(self, method: str) -> MethodCalibration:
        return self.methods.get(method, MethodCalibration(threshold=0.5))

    def threshold(self, method: str) -> float:
        return self.get(method).threshold

    def is_calibrated(self, method: str) -> bool:
        """True when ``method``'s threshold was chosen on validation data (not the 0.5 default)."""
        return self.calibrated and method in self.methods

    def to_json(self) -> str:
        return json.dumps({"format": "adkit-calibration", "calibrated": self.calibrated, "source": self.source,
                           "methods": {k: asdict(v) for k, v in self.methods.items()}}, indent=1)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "Calibration":
        from .validate import probability, read_json

        path = Path(path)
        raw = read_json(path, what="calibration file")  # a missing / non-JSON / too deep file: one line naming it
        if not isinstance(raw, dict) or raw.get("format") != "adkit-calibration" or not isinstance(raw.get("methods"), dict):
            raise ValueError(f"{path}: not an adkit calibration file (expected format 'adkit-calibration')")
        methods = {}
        for name, m in raw["methods"].items():
            try:
                cal = MethodCalibration(float(m["threshold"]), float(m.get("centre", 0.5)), float(m.get("scale", 0.1)))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: method {name!r} needs a numeric 'threshold'") from None
            if not all(math.isfinite(v) for v in asdict(cal).values()) or cal.scale <= 0:
                raise ValueError(f"{path}: method {name!r} has a non-finite value or a scale <= 0: {m}")
            probability(cal.threshold, f"{path}: method {name!r} threshold")  # a verdict threshold lies in [0, 1]
            methods[name] = cal
        return cls(methods, bool(raw.get("calibrated", True)), str(raw.get("source", "")))


def fit_method(labels, scores) -> MethodCalibration:
    """Threshold and logistic of one method from validation labels (0/1) and scores.

    Threshold: the score maximising balanced accuracy (Youden's J = TPR − FPR), placed midway
    between it and the next lower score so it does not sit on a sample. Logistic: a
    class-balanced 1-D logistic regression (Newton's method, exact on separable data thanks to a
    tiny ridge), so p = 0.5 lies on the balanced decision boundary.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("fit_method needs matching 1-D labels (0/1) and scores")
    if y.min() == y.max():
        raise ValueError("fit_method needs normal and anomalous validation samples")
    order = np.unique(s)[::-1]  # candidate thresholds, high to low
    tpr = np.array([(s[y == 1] >= t).mean() for t in order])
    fpr = np.array([(s[y == 0] >= t).mean() for t in order])
    best = int(np.argmax(tpr - fpr))
    below = order[best + 1] if best + 1 < len(order) else order[best]
    threshold = float((order[best] + below) / 2) if below != order[best] else float(order[best])
    # class-balanced logistic regression on standardised scores
    mu, sd = s.mean(), max(s.std(), 1e-12)
    x = (s - mu) / sd
    w = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    a, b = 1.0, 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-(a * x + b)))
        g = np.array([np.sum(w * (p - y) * x) + 1e-3 * a, np.sum(w * (p - y))])
        h = w * p * (1 - p)
        hess = np.array([[np.sum(h * x * x) + 1e-3, np.sum(h * x)], [np.sum(h * x), np.sum(h) + 1e-9]])
        step = np.linalg.solve(hess, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    a = max(a, 1e-6)  # a score that falls with anomaly would be a broken method; keep p monotone
    return MethodCalibration(threshold=threshold, centre=float(mu - b * sd / a), scale=float(sd / a))
