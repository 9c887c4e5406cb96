"""Evaluation of Anomaly-OV's protocols (docs/architecture.md §7).

- ``metrics``: pure functions over arrays (AUROC, ROC, pixel AUROC, F1-max, per-class / macro,
  Yes/No parsers, detection scores), each tested against sklearn or a hand computation.
- ``localisation``: AUPRO (MVTec AD's per-region overlap), AP and PR curves, pixel AP and
  F1-max, under anomalib's names (``image_AUROC``, ``pixel_AUPRO``, ...).
- ``text`` / ``judge``: ROUGE-L, Sentence-BERT cosine, the pluggable GPT-score judge.
- ``runners``: zero-shot detection (ELPV, MVTec/VisA/folders, held-out categories) and
  VisA-D&R detection + multi-turn reasoning; ``report``: CSV + markdown + figures;
  ``paper``: the paper's Tables 2, 4 and 8 (packaged copies) side by side with ours.
Importing this package loads neither torch models nor matplotlib.
"""

from .metrics import (
    PARSE_RULES, auroc, detection_scores, f1_max, macro, parse_yes_no, per_class, pixel_auroc,
    roc_curve,
)
from .localisation import aupro, average_precision, pixel_average_precision, pixel_f1_max, pixel_metrics
from .paper import compare_visa_dr, compare_zero_shot, expert_per_class_table, visa_dr_table, zero_shot_table
from .report import write_report
from .runners import (
    DetectionResult, ReasoningResult, VisaDRResult, ZeroShotResult, load_benchmark, load_samples,
    visa_dr_detection, visa_dr_reasoning, zero_shot,
)

__all__ = [
    "PARSE_RULES", "auroc", "detection_scores", "f1_max", "macro", "parse_yes_no", "per_class",
    "pixel_auroc", "roc_curve", "aupro", "average_precision", "pixel_average_precision", "pixel_f1_max",
    "pixel_metrics",
    "zero_shot", "visa_dr_detection", "visa_dr_reasoning", "load_samples", "load_benchmark",
    "ZeroShotResult", "DetectionResult", "ReasoningResult", "VisaDRResult",
    "write_report", "zero_shot_table", "visa_dr_table", "expert_per_class_table", "compare_zero_shot",
    "compare_visa_dr",
]
