"""The small preset: real DINOv2-S/14 + SmolLM2-135M wired into the LLaVA-OneVision layout."""

from __future__ import annotations

import pytest
import torch

from adkit import AnomalyOV, hf, token_budget
from adkit.weights.dinov2 import dinov2_small
from adkit.weights.smollm2 import smollm2


def test_untrained_small_base_says_so():
    with pytest.warns(UserWarning, match=r"expert, projector, image_newline are untrained"):
        model = AnomalyOV.from_preset("small", trained=False)
    assert model.untrained == ("expert", "projector", "image_newline")


def test_tower_and_llm_hold_the_converted_weights(small, photo):
    """The LLaVA tower is the converted DINOv2, the LLM is SmolLM2 (weights copied, not random)."""
    tower = dinov2_small(image_size=224)
    px = small.processor.images([photo]).pixel_values
    with torch.no_grad():
        ours = hf.tower_hidden_states(hf.vision_tower(small.mllm), px)[-1]
        ref = tower(pixel_values=px, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(ours, ref)
    llm, tok = smollm2()
    ids = tok("Anomaly detection finds", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(small.mllm.model.language_model(input_ids=ids).last_hidden_state,
                                   llm.model(input_ids=ids).last_hidden_state)


def test_real_llm_answers_through_adkit_generate(small):
    batch = small.processor([[{"role": "user", "content": "What is the capital of France?"}]],
                            add_generation_prompt=True)
    batch.pop("labels")
    ids = small.generate(**batch, max_new_tokens=12)
    assert "Paris" in small.tokenizer.decode(ids[0], skip_special_tokens=True)


def test_small_expert_off_equals_transformers(small, photo):
    small.use_expert = False
    try:
        batch = small.processor([[{"role": "user", "content": "<image>\nDescribe it."}]], [[photo]])
        with torch.no_grad():
            ours = small(**batch).logits
            ref = small.mllm(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                             image_sizes=batch["image_sizes"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    finally:
        small.use_expert = True


def test_small_detect_and_budget(small, photo):
    res = small.detect(photo)[0]
    assert res.anomaly_map.shape == (photo.height, photo.width) and 0 < res.score < 1
    budget = token_budget(768, 1024, preset="small")
    lay = budget.layout
    assert lay.grid_shape == (2, 2) and lay.base_tokens == 256  # 448-px cap, 16×16 grid
    assert budget.hint == 6  # "with {slightly|moderately|highly} suspicious features: " in SmolLM2
    batch = small.processor([[{"role": "user", "content": "<image>\nAny defect?"}]], [[photo]])
    assert int((batch["input_ids"] == small.processor.image_token_id).sum()) == \
        small.processor.layout(photo.height, photo.width).total
