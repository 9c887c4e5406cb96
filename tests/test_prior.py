"""The "Anomaly-OV + prior" expert (adkit/expert/prior.py) and verdict calibration (adkit/calibration.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adkit import AnomalyExpert
from adkit.calibration import Calibration, MethodCalibration, fit_method
from adkit.config import get_preset
from adkit.expert import split_index
from adkit.zeroshot.scores import self_similarity_map, top_mean

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(n_tiles=7, p=49, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_tiles, p, d, generator=g), [torch.randn(n_tiles, p, d, generator=g) for _ in range(4)]


def test_prior_level_is_derived_from_the_preset():
    small = get_preset("small")
    assert small.expert_prior and small.feature_levels[small.expert_config().prior_level] == small.self_levels[0]
    assert get_preset("paper-0.5b").expert_config().prior_level is None  # the official expert
    with pytest.raises(ValueError, match="not one of the expert's feature levels"):
        get_preset("tiny").replace(expert_prior=True, self_levels=(5,)).expert_config()


def test_prior_expert_equals_its_definition():
    """map = mean of the L level maps and sigmoid(gain·(d − μ)/σ + bias); logit = MLP + prior term."""
    torch.manual_seed(0)
    config = get_preset("tiny").replace(expert_prior=True).expert_config()
    expert = AnomalyExpert(config).eval()
    final, levels = _inputs()
    split = [1, 2, 4]
    expert.prior.set_statistics(torch.rand(100) * 0.3, torch.rand(10) * 0.5)
    with torch.no_grad():
        expert.prior.map_gain.fill_(1.7)
        expert.prior.score_bias.fill_(-0.4)
        out = expert(final, levels, split)
        d = self_similarity_map(levels[config.prior_level], split)  # [N, P]
        mu_d, sd_d, mu_t, sd_t = expert.prior.statistics
        prior_map = torch.sigmoid(1.7 * (d - mu_d) / sd_d - 2.0).reshape(-1, 7, 7)
        np.testing.assert_allclose(out.prior_map.numpy(), prior_map.numpy(), atol=1e-6)
        fused = (out.level_maps.sum(1) + prior_map) / 5
        np.testing.assert_allclose(out.anomaly_maps.numpy(), fused.numpy(), atol=1e-6)
        # the selector sees the fused map: its score path equals the official selector on that map
        _, image_index = split_index(split)
        sel = expert.selector(final, fused, fused.mean((1, 2)), image_index, 3)
        t = torch.stack([top_mean(part.reshape(1, -1))[0] for part in d.split(split)])
        logits = sel["logits"] + 1.0 * (t - mu_t) / sd_t - 0.4
        np.testing.assert_allclose(out.logits.numpy(), logits.numpy(), atol=1e-5)
        np.testing.assert_allclose(out.scores.numpy(), logits.sigmoid().numpy(), atol=1e-6)


def test_prior_statistics_travel_with_the_weights_and_have_no_official_name(tmp_path):
    config = get_preset("tiny").replace(expert_prior=True).expert_config()
    expert = AnomalyExpert(config)
    expert.prior.set_statistics(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.4, 0.6]))
    state = expert.state_dict()
    assert "prior.statistics" in state and "prior.score_gain" in state
    twin = AnomalyExpert(config)
    twin.load_state_dict(state, strict=True)
    assert torch.equal(twin.prior.statistics, expert.prior.statistics)
    with pytest.raises(KeyError, match="no official name"):
        expert.to_official_state_dict()


def test_stage1_sets_the_statistics_and_learns_the_prior_faster(tiny):
    from adkit.train.launch import Stage1Config
    from adkit.train.stage1 import optimizer_groups, prior_statistics

    model = type(tiny).from_config(tiny.config.replace(expert_prior=True))
    rng = np.random.default_rng(0)
    from adkit.data import AnomalySample

    samples = [AnomalySample(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8), i % 2, "x", id=f"s{i}") for i in range(4)]
    prior_statistics(model, samples)
    mu_d, sd_d, mu_t, sd_t = model.expert.prior.statistics.tolist()
    assert 0 < mu_d < mu_t < 1 and sd_d > 0 and sd_t > 0  # image statistic = top patches > the mean patch
    groups = optimizer_groups(model, Stage1Config(lr=1e-4, prior_lr_scale=50))
    assert groups[1]["lr"] == pytest.approx(5e-3) and len(groups[1]["params"]) == 4
    assert sum(len(g["params"]) for g in groups) == len(list(model.expert.parameters()))


# ---------------------------------------------------------------------------- calibration

def test_fit_method_threshold_maximises_balanced_accuracy_and_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60), np.ones(25)]
    s = np.r_[rng.normal(0.3, 0.08, 60), rng.normal(0.5, 0.1, 25)]
    cal = fit_method(y, s)
    candidates = np.unique(s)
    j = [(s[y == 1] >= t).mean() - (s[y == 0] >= t).mean() for t in candidates]
    best = (s[y == 1] >= cal.threshold).mean() - (s[y == 0] >= cal.threshold).mean()
    assert best == pytest.approx(max(j))
    assert cal.threshold not in s  # midway between two scores, never on a sample
    lr = LogisticRegression(class_weight="balanced", C=1e6, tol=1e-12, max_iter=10_000).fit(s[:, None], y)
    centre = -lr.intercept_[0] / lr.coef_[0, 0]
    assert cal.centre == pytest.approx(centre, rel=1e-3)
    assert cal.scale == pytest.approx(1 / lr.coef_[0, 0], rel=1e-3)
    assert cal.probability(cal.centre) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="normal and anomalous"):
        fit_method(np.zeros(5), np.arange(5.0))


def test_calibration_file_round_trip_and_bad_files(tmp_path):
    cal = Calibration({"expert": MethodCalibration(0.61, 0.6, 0.05), "self": MethodCalibration(0.3, 0.31, 0.02)},
                      True, "unit test")
    path = cal.save(tmp_path / "cal.json")
    back = Calibration.load(path)
    assert back == cal and back.threshold("self") == 0.3
    assert back.threshold("mutual") == 0.5  # a method without a calibration keeps the default
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"methods": {}}))
    with pytest.raises(ValueError, match="not an adkit calibration"):
        Calibration.load(tmp_path / "other.json")
    (tmp_path / "nan.json").write_text(json.dumps({"format": "adkit-calibration", "methods": {
        "expert": {"threshold": 0.5, "centre": 0.5, "scale": 0}}}))
    with pytest.raises(ValueError, match="scale <= 0"):
        Calibration.load(tmp_path / "nan.json")
    with pytest.raises(FileNotFoundError, match="calibration file not found"):
        Calibration.load(tmp_path / "missing.json")


def test_detections_carry_the_models_calibrated_threshold(tiny, photo):
    saved = tiny.calibration
    try:
        tiny.calibration = Calibration({"self": MethodCalibration(0.123, 0.1, 0.05)}, True, "test")
        det = tiny.detect(photo, method="self")[0]
        assert det.threshold == 0.123 and det.calibrated and det.is_anomalous == (det.score >= 0.123)
        other = tiny.detect(photo, method="mutual", reference=[photo.rotate(90)])[0]
        assert other.threshold == 0.5 and not other.calibrated  # no threshold chosen for mutual
    finally:
        tiny.calibration = saved
    assert not tiny.detect(photo)[0].calibrated


def test_calibrate_fits_every_method_on_validation_samples(tiny):
    from adkit.data import AnomalySample
    from adkit.eval.calibrate import calibrate

    rng = np.random.default_rng(1)
    samples = [AnomalySample(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8), i % 2, "c", id=f"v{i}")
               for i in range(6)]
    cal = calibrate(tiny, samples, progress=False)
    assert set(cal.methods) == {"expert", "self", "mutual", "expert+self"} and cal.calibrated
    assert "6 validation images" in cal.source
    assert not tiny.calibration.calibrated  # the model's own calibration is left alone


def test_a_parts_file_without_the_prior_does_not_load_into_a_prior_expert(tiny, tmp_path):
    """An official-layout expert file into a "+ prior" expert: refused by name, nothing left random."""
    from adkit.weights.official import CheckpointError
    from adkit.weights.parts import load_trained_parts, save_trained_parts

    names = [n for n, _ in tiny.named_parameters() if n.startswith("expert.")]
    path = save_trained_parts(tiny, tmp_path / "expert.safetensors", names=names)
    prior_model = type(tiny).from_config(tiny.config.replace(expert_prior=True))
    with pytest.raises(CheckpointError, match=r"holds the expert but not all of it.*expert.prior.map_bias"):
        load_trained_parts(prior_model, path)
    load_trained_parts(type(tiny).from_config(tiny.config), path)  # the same file fits its own kind


def test_saved_expert_parts_carry_the_prior_statistics(tiny, tmp_path):
    from adkit.weights.parts import load_trained_parts, save_trained_parts

    model = type(tiny).from_config(tiny.config.replace(expert_prior=True))
    model.expert.prior.set_statistics(torch.tensor([0.2, 0.4]), torch.tensor([0.5, 0.7]))
    names = [n for n, _ in model.named_parameters() if n.startswith("expert.")]
    path = save_trained_parts(model, tmp_path / "e.safetensors", names=names)
    twin = type(tiny).from_config(tiny.config.replace(expert_prior=True), seed=1)
    load_trained_parts(twin, path)
    assert torch.equal(twin.expert.prior.statistics, model.expert.prior.statistics)


def test_prior_relative_reads_the_global_token_minus_the_image_mean():
    from adkit.expert.ltfm import mlp2

    torch.manual_seed(1)
    tiny = get_preset("tiny")
    config = tiny.replace(expert_prior=True, expert_dims={**tiny.expert_dims, "prior_relative": True}).expert_config()
    expert = AnomalyExpert(config).eval()
    final, levels = _inputs(seed=2)
    split = [3, 4]
    with torch.no_grad():
        out = expert(final, levels, split)
        mean = torch.stack([final[:3].mean((0, 1)), final[3:].mean((0, 1))])  # every patch of every tile, per image
        prior = expert.prior(levels, split, *split_index(split)[1:], 2)
        expected = mlp2(out.global_tokens - mean, expert.selector.score_mlp).squeeze(-1) + prior["logit"]
        np.testing.assert_allclose(out.logits.numpy(), expected.numpy(), atol=1e-5)
