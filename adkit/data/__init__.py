"""Data for Anomaly-OV (docs/architecture.md §5).

- ``records``: :class:`AnomalySample`, the one record every source yields, and :class:`DataError`.
- ``synth``: eight defect families on any image (mask, box, location, severity).
- ``normals`` / ``objects``: license-clean normal images in 19 categories with fixed
  train / val / held-out test splits (zero-shot claims stay honest).
- ``loaders``: MVTec AD, VisA, generic folders, ELPV (test only).
- ``llava`` / ``visa_dr``: LLaVA conversation JSON and the VisA-D&R benchmark format.
- ``instruct`` / ``writers``: the paper's instruction-data pipeline with pluggable writers.
"""

from .instruct import (
    balance, build_instructions, conversations, deduplicate, describe, detection_counts, draw_boxes, hint, mask_boxes,
    sample_context,
)
from .llava import load_llava_dataset, read_llava_json, save_llava_dataset, write_llava_json
from .loaders import load_elpv, load_folder, load_mvtec, load_visa
from .normals import CATEGORIES, PROVENANCE, SPLITS, Category, categories, make_samples, normal_image
from .objects import OBJECTS, render_object
from .records import AnomalySample, DataError
from .synth import DEFECT_FAMILIES, SEVERITIES, Defect, location_phrase, perlin_noise, random_defect, synthesize
from .writers import OpenAIWriter, TemplateWriter, TransformersWriter, Writer, WriterError
from .visa_dr import DETECTION_PROMPT, DetectionItem, ReasoningItem, VisaDRBenchmark, read_visa_dr, write_visa_dr

__all__ = [
    "AnomalySample", "DataError",
    "DEFECT_FAMILIES", "SEVERITIES", "Defect", "synthesize", "random_defect", "location_phrase", "perlin_noise",
    "CATEGORIES", "PROVENANCE", "SPLITS", "Category", "categories", "normal_image", "make_samples",
    "OBJECTS", "render_object",
    "load_mvtec", "load_visa", "load_folder", "load_elpv",
    "read_llava_json", "write_llava_json", "load_llava_dataset", "save_llava_dataset",
    "hint", "sample_context", "mask_boxes", "draw_boxes", "describe", "conversations", "detection_counts", "balance",
    "deduplicate", "build_instructions",
    "Writer", "WriterError", "TemplateWriter", "TransformersWriter", "OpenAIWriter",
    "DETECTION_PROMPT", "DetectionItem", "ReasoningItem", "VisaDRBenchmark", "read_visa_dr", "write_visa_dr",
]
