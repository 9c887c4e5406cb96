"""The transformers touch-points (adkit/hf.py): if an upgrade moves an attribute, this fails first."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from adkit import get_preset, hf
from adkit.vision import extract_features


def test_llava_config_carries_the_geometry():
    cfg = get_preset("paper-0.5b")
    lc = hf.llava_config(cfg, image_token_id=151646)
    assert lc.image_token_id == 151646
    assert lc.vision_feature_layer == -1 and lc.vision_feature_select_strategy == "full"
    assert lc.vision_aspect_ratio == "anyres_max_9"
    assert [tuple(p) for p in lc.image_grid_pinpoints] == cfg.geometry.pinpoints
    assert len(lc.image_grid_pinpoints) == 36 and lc.image_grid_pinpoints[1] == [384, 768]
    assert lc.vision_config.num_hidden_layers == 26 and lc.text_config.hidden_size == 896


def test_attribute_paths_exist_on_an_unmodified_model(tiny):
    assert isinstance(tiny.mllm, LlavaOnevisionForConditionalGeneration)
    cfg = tiny.config
    proj = hf.projector(tiny.mllm)
    assert proj.linear_1.in_features == cfg.vision.hidden_size and proj.linear_2.out_features == cfg.text.hidden_size
    assert hf.image_newline(tiny.mllm).shape == (cfg.text.hidden_size,)
    assert hf.embed_tokens(tiny.mllm).weight.shape == (cfg.text.vocab_size, cfg.text.hidden_size)


def test_hidden_states_indexing(tiny):
    """hidden_states[0] = embeddings, [k] = output of encoder layer k; [-1] = LLaVA's feature."""
    tower = hf.vision_tower(tiny.mllm)
    px = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        hs = hf.tower_hidden_states(tower, px)
        assert len(hs) == tiny.config.vision.num_hidden_layers + 1
        emb = tower.embeddings(px)
        torch.testing.assert_close(hs[0], emb)
        layer1 = tower.encoder.layers[0](emb, attention_mask=None)
        layer1 = layer1[0] if isinstance(layer1, tuple) else layer1
        torch.testing.assert_close(hs[1], layer1)
        feats = extract_features(tower, px, levels=(1, 2, 3, 4))
    assert feats.final.shape == (2, 49, 32) and len(feats.levels) == 4
    torch.testing.assert_close(feats.levels[0], hs[1])
    torch.testing.assert_close(feats.final, hs[-1])


def test_chunked_tower_equals_one_pass(tiny):
    """``chunk`` tiles per forward (the CPU default, vision.CPU_TOWER_CHUNK) gives every asked-for
    state of a one-pass forward, for any remainder, and ``final_level=-1`` aliases the last one."""
    tower = hf.vision_tower(tiny.mllm)
    px = torch.randn(7, 3, 56, 56)
    with torch.no_grad():
        whole = extract_features(tower, px, levels=(1, 3), extra=(2,))
        for chunk in (1, 3, 7, 50):
            part = extract_features(tower, px, levels=(1, 3), extra=(2,), chunk=chunk)
            torch.testing.assert_close(part.final, whole.final, rtol=1e-5, atol=1e-6)
            assert sorted(part.states) == [1, 2, 3]
            for i in (1, 2, 3):
                torch.testing.assert_close(part.at(i), whole.at(i), rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="level 9 out of range"):
            extract_features(tower, px, levels=(1, 9), chunk=2)
    n = tiny.config.vision.num_hidden_layers
    last = extract_features(tower, px[:2], levels=(n,), chunk=1)
    assert last.final is not None and torch.equal(last.final, last.levels[0])
