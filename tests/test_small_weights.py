"""The shipped `small` weights (adkit/weights/small, MODEL_CARD.md): what they hold, that
`from_preset("small")` loads them, that the LoRA merge is exact, and that the expert detects
anomalies on categories it never saw (the held-out split of data_samples/)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from adkit import AnomalyOV, hf
from adkit.data import load_mvtec
from adkit.data.normals import categories
from adkit.eval import runners
from adkit.weights.parts import lora_deltas
from adkit.weights.presets import SMALL_FILES, SMALL_WEIGHTS

SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"


def _read(name):
    with safe_open(str(SMALL_WEIGHTS / name), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata() or {}


@pytest.fixture(scope="module")
def trained():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # trained weights: no "untrained" warning
        return AnomalyOV.from_preset("small")


def test_files_hold_only_the_trained_parts():
    total = sum((SMALL_WEIGHTS / f).stat().st_size for f in SMALL_FILES)
    assert total <= 20e6
    expert, meta1 = _read("expert.safetensors")
    parts, meta2 = _read("trained.safetensors")
    assert meta1["format"] == meta2["format"] == "adkit-parts" and meta1["preset"] == meta2["preset"] == "small"
    assert expert and all(k.startswith("expert.") for k in expert)
    prefixes = ("mllm.model.multi_modal_projector.", "mllm.model.image_newline")
    lora = [k for k in parts if ".lora_" in k]
    assert lora and all(k.startswith(prefixes) or ".lora_" in k for k in parts)
    assert any(k.startswith(prefixes[0]) for k in parts) and prefixes[1] in parts
    assert json.loads(meta2["lora"])["r"] == 8
    assert "notes" not in meta2  # stage 2 was trained without the note line; the preset adds it at inference
    reader, meta3 = _read("reader.safetensors")
    assert meta3["adkit_part"] == "defect-reader" and sorted(reader) == ["reader.bias", "reader.mean",
                                                                        "reader.scale", "reader.weight"]
    assert (SMALL_WEIGHTS / "MODEL_CARD.md").is_file()


def test_from_preset_loads_them_and_merges_lora_exactly(trained, small):
    assert trained.untrained == ()
    expert, _ = _read("expert.safetensors")
    own = trained.state_dict()
    for k, v in expert.items():
        assert torch.equal(own[k], v), k
    parts, meta = _read("trained.safetensors")
    base = small.state_dict()  # the untrained base (conftest: trained=False)
    deltas = lora_deltas(parts, json.loads(meta["lora"]))
    for name, delta in list(deltas.items())[:6]:  # W = W0 + (α/r)·B·A, computed independently
        torch.testing.assert_close(own[name], base[name] + delta)
    untouched = "mllm.model.language_model.layers.0.input_layernorm.weight"  # not a LoRA target
    assert torch.equal(own[untouched], base[untouched])
    assert torch.equal(own["mllm.model.image_newline"], parts["mllm.model.image_newline"])
    assert set(own) == set(base)  # merged: a plain AnomalyOV, save_pretrained works as before
    assert hf.language_model(trained.mllm) is not None


def test_trained_expert_detects_anomalies_on_held_out_categories(trained):
    """Zero-shot protocol: data_samples/test holds categories the expert never trained on."""
    samples = load_mvtec(SAMPLES / "test")
    assert {s.category for s in samples} == set(categories("test"))
    result = runners.zero_shot(trained, samples, batch_size=8, progress=False, dataset="held-out")
    assert result.image_auroc_macro >= 0.6, result.image_auroc
    scores = np.asarray(result.scores)
    assert scores[np.asarray(result.labels) == 1].mean() > scores[np.asarray(result.labels) == 0].mean()


def test_shipped_calibration_covers_every_method(trained):
    """Thresholds chosen on the val categories ship beside the weights and reach every Detection."""
    from adkit.calibration import Calibration
    from adkit.weights.presets import SMALL_CALIBRATION
    from adkit.zeroshot import METHODS

    cal = Calibration.load(SMALL_CALIBRATION)
    assert cal.calibrated and set(cal.methods) == set(METHODS) and "validation images" in cal.source
    assert all(0.0 < m.threshold < 1.0 and m.scale > 0 for m in cal.methods.values())
    assert trained.calibration == cal
    assert trained.expert.prior is not None  # the shipped expert is the "+ prior" variant
    assert float(trained.expert.prior.statistics[1]) > 0  # standardised on the training images


def test_shipped_notes_name_held_out_defect_families_well_above_chance(trained):
    """The "+ notes" reader on data_samples' held-out anomalous images (categories it never saw):
    the family it names is right at least twice as often as always naming the most frequent one."""
    from adkit.train.reader import evaluate_reader

    assert trained.config.notes and trained.reader is not None
    anomalous = [s for s in load_mvtec(SAMPLES / "test") if s.label == 1]
    report = evaluate_reader(trained, trained.reader, anomalous)
    assert report.family_accuracy >= 2 * report.chance, report  # measured: 0.54 vs 0.21 on 24 images
    assert report.location_accuracy > 1 / 9, report
    notes = trained.write_notes([s.load_image() for s in anomalous[:4]])
    assert all(n.startswith("Expert note: ") for n in notes)


def _repeated_4grams(text: str) -> int:
    words = text.split()
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(grams) - len(set(grams))


def test_shipped_answers_do_not_loop_on_held_out_images(trained):
    """The paper's reasoning questions on held-out images (never trained on), with the default
    decoding: no answer repeats a 4-word sequence (under plain greedy most of them did)."""
    from adkit.demo.handlers import PAPER_PROMPTS

    images = [sorted((SAMPLES / "test" / c / "test").glob("*/*.png"))[0] for c in ("pill", "transistor")]
    for path in images:
        history = []
        for question in PAPER_PROMPTS[1:3]:  # describe, cause: the answers that looped
            answer = trained.chat(str(path), question, history=history, max_new_tokens=48)
            history.append((question, answer))
            assert answer and _repeated_4grams(answer) == 0, (path.parent.name, question, answer)
