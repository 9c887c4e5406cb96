"""What a saved folder tells readers other than adkit: ``generation_config.json`` and ``README.md``.

``generation_config.json`` is a ``transformers.GenerationConfig`` holding the decoding defaults
``AnomalyOV.generate`` applies (the preset's ``config.generation``, :data:`adkit.config.DECODING`:
greedy, no repeated 4-token run, repetition penalty 1.1), with ChatML's ``<|im_end|>`` as end of
turn. ``adkit_config.json`` stays the source of truth for adkit; this file mirrors it.

``README.md`` is a model card with the Hub's YAML front matter (``library_name: adkit``, tags,
the base models the weights derive from and their license, the pipeline), written by
``huggingface_hub.ModelCardData``, and a short body: what the model is (paper §3: the base
MLLM plus the anomaly expert), its parts and sizes, whether detection thresholds are
calibrated, and how to load it.
"""

from __future__ import annotations

from pathlib import Path

from .. import hf

GENERATION_FILE, CARD_FILE = "generation_config.json", "README.md"

#: Hub ids of the models a preset's weights derive from (the tiny preset is random: none)
BASE_MODELS = {
    "small": ["facebook/dinov2-small", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    "paper-0.5b": ["llava-hf/llava-onevision-qwen2-0.5b-ov-hf"],
    "paper-7b": ["llava-hf/llava-onevision-qwen2-7b-ov-hf"],
}
#: all known parts are Apache-2.0: DINOv2, SmolLM2, LLaVA-OneVision (llava-hf), the official
#: expert, and the kit's own trained parts (README "Weight and data sources")
LICENSE = "apache-2.0"
TAGS = ["adkit", "anomaly-ov", "anomaly-detection", "zero-shot-anomaly-detection", "llava-onevision",
        "image-text-to-text"]
PIPELINE = "image-text-to-text"


def generation_config(model):
    """The ``GenerationConfig`` that ``model.generate`` uses when no keyword says otherwise."""
    from transformers import GenerationConfig

    return GenerationConfig(**{"do_sample": False, **model.config.generation,
                               "eos_token_id": model.processor.im_end_id,
                               "pad_token_id": model.processor.pad_token_id})


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # a tied parameter counts once


def card_text(model) -> str:
    """The model card (front matter + body) of ``model`` as saved by ``save_pretrained``."""
    from huggingface_hub import ModelCardData

    config, mllm = model.config, model.mllm
    bases = BASE_MODELS.get(config.name) or ([config.hub_id] if config.hub_id else [])
    data = ModelCardData(library_name="adkit", license=LICENSE, pipeline_tag=PIPELINE, tags=TAGS,
                         base_model=bases or None)
    llm = _count(hf.language_model(mllm)) + (0 if config.text.tie_word_embeddings else _count(mllm.lm_head))
    rows = [("vision tower", type(hf.vision_tower(mllm)).__name__, _count(hf.vision_tower(mllm))),
            ("projector + image_newline", "mlp2x_gelu", _count(hf.projector(mllm)) + hf.image_newline(mllm).numel()),
            ("language model", type(hf.language_model(mllm)).__name__, llm),
            ("anomaly expert", "LTFM + visual-token selector (paper §3.3–3.4)", _count(model.expert))]
    table = "\n".join(f"| {part} | {kind} | {n:,} |" for part, kind, n in rows)
    cal = model.calibration
    calibration = (f"Detection thresholds are calibrated ({cal.source}); `calibration.json` holds them."
                   if cal.calibrated else "Detection thresholds are the uncalibrated default (0.5 for every method).")
    warning = (f"\n**Not trained:** {', '.join(model.untrained)} hold random weights; scores and answers about "
               "images are not meaningful.\n" if model.untrained else "")
    derived = f" The weights derive from {', '.join(f'`{b}`' for b in bases)}." if bases else ""
    body = f"""
# adkit `{config.name}` — Anomaly-OV

Anomaly-OV (*Towards Zero-Shot Anomaly Detection and Reasoning with Multimodal Large Language
Models*, Xu et al., CVPR 2025): LLaVA-OneVision plus an anomaly expert whose score, suspicious
visual tokens and hint phrase are handed to the LLM (paper §3). Saved by adkit, a teaching
kit for the paper.{derived}
{warning}
| part | kind | parameters |
| --- | --- | --- |
{table}

{calibration} Decoding defaults (greedy, anti-loop) are in `generation_config.json`.

## Use

```python
from adkit import AnomalyOV

model = AnomalyOV.from_pretrained("path/to/this/folder")   # dtype="bfloat16", device_map="cuda"
model.detect(["part.png"])[0].score                        # the expert's anomaly score
model.chat("part.png", "Are there any defects for the object in the image?")
```
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def write_card_files(model, path) -> None:
    """Write ``generation_config.json`` and ``README.md`` of ``model`` into the folder ``path``."""
    path = Path(path)
    generation_config(model).save_pretrained(path)
    (path / CARD_FILE).write_text(card_text(model), encoding="utf-8")
