"""A tower with a CLS token (DINOv2) drops it before the grid; parity with transformers still holds."""

from __future__ import annotations

import torch
from transformers import Dinov2Config

from adkit import AnomalyOV, get_preset


def test_dinov2_tower_expert_off_matches_transformers(photo):
    base = get_preset("tiny")
    vision = Dinov2Config(hidden_size=32, num_hidden_layers=5, num_attention_heads=4, intermediate_size=64,
                          image_size=56, patch_size=8)
    cfg = base.replace(name="tiny-dinov2", vision=vision, has_cls_token=True)
    model = AnomalyOV.from_config(cfg)
    conv = [{"role": "user", "content": "<image>\nAny defect?"}]
    model.use_expert = False
    batch = model.processor([conv], [[photo]])
    with torch.no_grad():
        ours = model(**batch).logits
        ref = model.mllm(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                         image_sizes=batch["image_sizes"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    model.use_expert = True
    feats = model.features(batch["pixel_values"])
    assert feats.final.shape[1] == 49  # 7×7 grid, CLS dropped
    res = model.detect(photo)
    assert res[0].anomaly_map.shape == (photo.height, photo.width)
