"""Evaluation of Anomaly-OV's protocols (DESIGN §7): metrics over numpy arrays, no torch needed."""

from .metrics import (
    PARSE_RULES, auroc, detection_scores, f1_max, macro, parse_yes_no, per_class, pixel_auroc,
    roc_curve,
)

__all__ = [
    "PARSE_RULES", "auroc", "detection_scores", "f1_max", "macro", "parse_yes_no", "per_class",
    "pixel_auroc", "roc_curve",
]
