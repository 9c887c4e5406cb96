"""The expert against a from-scratch transcription of docs/architecture.md §3, and the official checkpoint I/O."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from adkit import AnomalyExpert, ExpertConfig
from adkit.weights.official import OFFICIAL_KEY_MAP, CheckpointError

from reference_expert import reference_expert

SMALL = ExpertConfig(vision_dim=48, grid=9, embed_dim=24, class_dim=20, attention_dim=16, score_hidden=12)


def random_inputs(cfg: ExpertConfig, splits, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    n = sum(splits)
    final = torch.randn(n, cfg.num_patches, cfg.vision_dim, generator=gen) * scale
    levels = [torch.randn(n, cfg.num_patches, cfg.vision_dim, generator=gen) * scale for _ in range(cfg.num_levels)]
    return final, levels


def randomised_expert(cfg: ExpertConfig, seed=0) -> AnomalyExpert:
    """Default init leaves some maps near 0.5; spread the weights so every step matters."""
    torch.manual_seed(seed)
    expert = AnomalyExpert(cfg)
    with torch.no_grad():
        for p in expert.parameters():
            p.normal_(0, 0.3)
    return expert


@pytest.mark.parametrize("splits", [[3, 1, 5], [1], [2, 2], [4, 1, 1, 3]])
def test_expert_matches_reference_transcription(splits):
    cfg = SMALL
    expert = randomised_expert(cfg)
    final, levels = random_inputs(cfg, splits)
    with torch.no_grad():
        out = expert(final, levels, splits)
        ref = reference_expert(expert.to_official_state_dict(), final, levels, splits)
    for key, value in ref.items():
        assert out[key].shape == value.shape, key
        torch.testing.assert_close(out[key], value, atol=1e-5, rtol=1e-5, msg=key)
    # The test must be able to fail: the scores are not all the same value.
    assert len(splits) == 1 or out.scores.std() > 1e-3


def test_expert_batch_equals_one_image_at_a_time():
    """Vectorisation must not mix images: each image alone gives the same result."""
    cfg, splits = SMALL, [3, 1, 4]
    expert = randomised_expert(cfg)
    final, levels = random_inputs(cfg, splits)
    with torch.no_grad():
        batch = expert(final, levels, splits)
        start = 0
        for b, size in enumerate(splits):
            one = expert(final[start:start + size], [lvl[start:start + size] for lvl in levels], [size])
            torch.testing.assert_close(one.scores[0], batch.scores[b], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(one.anomaly_maps, batch.anomaly_maps[start:start + size])
            start += size


def test_paper_geometry_parameter_count_and_shapes():
    expert = AnomalyExpert(ExpertConfig())
    assert sum(p.numel() for p in expert.parameters()) == 7_086_811  # paper total (docs/architecture.md §3)
    sd = expert.to_official_state_dict()
    assert sd["pooling_layer.0.weight"].shape == (1, 729)
    assert sd["prompt_adaptors.3.weight"].shape == (512, 1024)
    assert sd["q_former.key_proj.weight"].shape == (512, 1152)


def test_paper_geometry_forward_shapes():
    cfg = ExpertConfig()
    expert = AnomalyExpert(cfg)
    splits = [3, 2]
    final, levels = random_inputs(cfg, splits)
    with torch.no_grad():
        out = expert(final, levels, splits)
    assert out.selected_tokens.shape == (5, 4, 1152)
    assert out.global_tokens.shape == (2, 1152)
    assert out.scores.shape == (2,) and bool(((out.scores > 0) & (out.scores < 1)).all())
    assert out.anomaly_maps.shape == (5, 27, 27)
    assert out.crop_significance.shape == (5,)


def test_official_state_dict_round_trip_through_pth(tmp_path):
    cfg = SMALL
    expert = randomised_expert(cfg, seed=3)
    path = tmp_path / "pretrained_expert_test.pth"
    torch.save(expert.to_official_state_dict(), path)
    loaded = AnomalyExpert.from_official_checkpoint(path)
    assert loaded.config == dataclasses.replace(cfg)  # sizes read off the shapes
    final, levels = random_inputs(cfg, [2, 3])
    with torch.no_grad():
        torch.testing.assert_close(loaded(final, levels, [2, 3]).scores, expert(final, levels, [2, 3]).scores)
    # every official key is covered by the map, and nothing else is saved
    assert {k.split(".")[0] for k in torch.load(path, weights_only=True)} == {
        v.split(".")[0] for v in OFFICIAL_KEY_MAP.values()}


def test_official_checkpoint_with_wrapper_and_prefix_loads():
    sd = randomised_expert(SMALL).to_official_state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    loaded = AnomalyExpert.from_official_checkpoint(wrapped)
    torch.testing.assert_close(loaded.to_official_state_dict()["final_predictor.2.bias"], sd["final_predictor.2.bias"])


def test_wrong_checkpoints_give_readable_errors(tmp_path):
    sd = randomised_expert(SMALL).to_official_state_dict()
    missing = {k: v for k, v in sd.items() if not k.startswith("q_former.key_proj")}
    with pytest.raises(CheckpointError, match=r"missing keys \(2\): q_former.key_proj.weight, q_former.key_proj.bias"):
        AnomalyExpert.from_official_checkpoint(missing)
    extra = dict(sd, **{"q_former.value_proj.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): q_former.value_proj.weight"):
        AnomalyExpert.from_official_checkpoint(extra)
    bad_shape = dict(sd, **{"final_predictor.2.weight": torch.zeros(2, SMALL.score_hidden)})
    with pytest.raises(CheckpointError, match=r"final_predictor.2.weight: checkpoint \(2, 12\) vs model \(1, 12\)"):
        AnomalyExpert.from_official_checkpoint(bad_shape)
    with pytest.raises(CheckpointError, match="not an Anomaly-OV expert checkpoint"):
        AnomalyExpert.from_official_checkpoint({"linear.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="not found"):
        AnomalyExpert.from_official_checkpoint(tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_pth_is_loaded_weights_only(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"positive_embedding": _Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        AnomalyExpert.from_official_checkpoint(evil)
    truncated = tmp_path / "truncated.pth"
    torch.save(randomised_expert(SMALL).to_official_state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        AnomalyExpert.from_official_checkpoint(truncated)


def test_bf16_projection_option_stays_close_to_fp32():
    cfg = ExpertConfig(vision_dim=64, grid=9, embed_dim=32, class_dim=32, attention_dim=32, score_hidden=32)
    expert = AnomalyExpert(cfg)
    fast = AnomalyExpert(dataclasses.replace(cfg, projection_dtype="bfloat16"))
    fast.load_state_dict(expert.state_dict())
    final, levels = random_inputs(cfg, [3, 2], scale=0.5)
    with torch.no_grad():
        a, b = expert(final, levels, [3, 2]), fast(final, levels, [3, 2])
    assert (a.scores - b.scores).abs().max() < 1e-2
    assert not torch.equal(a.anomaly_maps, b.anomaly_maps)  # the option really changes the arithmetic


def test_eps_option_guards_zero_maps_and_is_off_by_default():
    assert ExpertConfig().eps == 0.0
    cfg = dataclasses.replace(SMALL, eps=1e-6)
    expert = AnomalyExpert(cfg)
    final, levels = random_inputs(cfg, [2])
    with torch.no_grad():
        out = expert(final, levels, [2])
    assert torch.isfinite(out.scores).all()


def test_expert_runs_fp32_inside_a_bf16_module():
    expert = randomised_expert(SMALL).to(torch.bfloat16)
    final, levels = random_inputs(SMALL, [2, 1])
    with torch.no_grad():
        out = expert(final.bfloat16(), [lvl.bfloat16() for lvl in levels], [2, 1])
    assert out.scores.dtype == torch.float32 and out.anomaly_maps.dtype == torch.float32


def test_bad_split_sizes_are_reported():
    expert = AnomalyExpert(SMALL)
    final, levels = random_inputs(SMALL, [2, 2])
    with pytest.raises(ValueError, match="sum to 3 crops but features hold 4"):
        expert(final, levels, [2, 1])
    with pytest.raises(ValueError, match="expected 4 feature levels"):
        expert(final, levels[:3], [2, 2])
    with pytest.raises(ValueError, match="positive"):
        expert(final, levels, [4, 0])
