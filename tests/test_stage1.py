"""Stage 1 (expert training) on the tiny preset: loss by hand, freezing, feature cache, exact resume."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from adkit.data.records import AnomalySample, DataError
from adkit.train import Stage1Config
from adkit.train.features import FeatureCache, sample_key
from adkit.train.stage1 import balanced_bce, class_weights, epoch_order, expert_inputs, train_stage1


def tiny_samples(categories, n_normal, n_anomalous, seed=0, size=(48, 64)):
    """Small generated images: a flat colour with noise; anomalies carry an inverted square."""
    rng = np.random.default_rng(seed)
    out = []
    for cat in categories:
        base = rng.integers(30, 220, 3)
        for i in range(n_normal + n_anomalous):
            img = np.ones((*size, 3)) * base + rng.normal(0, 12, (*size, 3))
            label = int(i >= n_normal)
            if label:
                y, x = rng.integers(4, size[0] - 14), rng.integers(4, size[1] - 14)
                img[y:y + 10, x:x + 10] = 255 - base
            out.append(AnomalySample(Image.fromarray(np.clip(img, 0, 255).astype("uint8")), label, cat,
                                     "good" if not label else "blob", id=f"{cat}/{seed}/{i}"))
    return out


def write_tiny_folder(root):
    """Two categories (a, b) of :func:`tiny_samples` saved as an MVTec-style folder; returns ``root``."""
    for s in tiny_samples(["a", "b"], 4, 4, seed=2):
        folder = root / s.category / ("good" if s.label == 0 else "blob")
        folder.mkdir(parents=True, exist_ok=True)
        s.load_image().save(folder / f"{s.id.split('/')[-1]}.png")
    return root


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: toy tensors run best on one thread


@pytest.fixture(scope="module")
def data():
    return tiny_samples(["a", "b"], 6, 2, seed=0), tiny_samples(["c"], 3, 3, seed=1)


def quiet(**kw):
    return Stage1Config(**{"batch_size": 4, "micro_batch_size": 2, "progress": False, **kw})


def test_class_weights_and_balanced_bce_by_hand():
    labels = [0] * 6 + [1] * 2  # N = 8: w0 = 8 / (2·6), w1 = 8 / (2·2)
    w = class_weights(labels)
    assert w == {0: 8 / 12, 1: 8 / 4}
    assert sum(w[y] for y in labels) == pytest.approx(len(labels))  # weights average to 1
    logits, y = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0, 1, 1])
    p = torch.sigmoid(logits)
    by_hand = -(w[0] * torch.log(1 - p[0]) + w[1] * torch.log(p[1]) + w[1] * torch.log(p[2])) / 4
    torch.testing.assert_close(balanced_bce(logits, y, w, 4), by_hand)
    with pytest.raises(DataError, match="0 anomalous"):
        class_weights([0, 0, 0])


def test_data_order_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_order(20, 3, 1), epoch_order(20, 3, 1))
    assert not torch.equal(epoch_order(20, 3, 1), epoch_order(20, 3, 2))
    assert sorted(epoch_order(20, 3, 1).tolist()) == list(range(20))


def test_cached_features_give_the_same_expert_outputs(tiny, data, tmp_path):
    samples = data[0][:5]
    final, levels, split = expert_inputs(tiny, samples, None, "cpu")
    with torch.no_grad():
        ref = tiny.expert(final, levels, split)
        full = tiny.features(tiny.processor.images([s.load_image() for s in samples]).pixel_values)
    torch.testing.assert_close(final, full.final)  # the uncached path is model.features exactly
    for dtype, tol in (("float32", 1e-5), ("float16", 2e-2)):
        cache = FeatureCache(tmp_path / "cache", tiny, dtype)
        assert cache.build(samples, batch_size=2) == 5 and cache.build(samples) == 0  # second build: all hits
        c_final, c_levels, c_split = cache.load(samples)
        assert c_split == split and c_final.dtype == torch.float32
        with torch.no_grad():
            out = tiny.expert(c_final, c_levels, c_split)
        for key in ("scores", "anomaly_maps", "selected_tokens", "global_tokens"):
            torch.testing.assert_close(out[key], ref[key], atol=tol, rtol=tol)
        assert out.scores.shape == (5,)
    # different dtype → different preprocessing hash → separate folders
    assert len(list((tmp_path / "cache").iterdir())) == 2
    with pytest.raises(KeyError, match="not in the feature cache"):
        FeatureCache(tmp_path / "cache", tiny, "float32").load(data[1][:1])


def test_recycled_ids_do_not_hit_stale_features(tiny, tmp_path):
    a = tiny_samples(["a"], 1, 0, seed=0)[0]
    b = copy.copy(a)
    b.image = a.load_image().transpose(Image.FLIP_LEFT_RIGHT)  # same id, other pixels
    assert sample_key(a) != sample_key(b)
    cache = FeatureCache(tmp_path, tiny, "float32")
    cache.build([a])
    assert cache.build([b]) == 1


def test_training_moves_only_the_expert_and_logs(tiny, data, tmp_path):
    model = copy.deepcopy(tiny)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train_stage1(model, *data, quiet(), tmp_path)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("expert.") for k in changed)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("expert."))
    # 16 images, global batch 4 → 4 steps per epoch, 2 epochs; T_0 = 2 steps: lr restarts at step 3
    assert res.completed and res.global_step == 8 and len(res.steps) == 8
    lrs = [r["lr"] for r in res.steps]
    assert lrs[0] == pytest.approx(1e-4) and lrs[2] == pytest.approx(1e-4) and lrs[1] < 1e-4
    assert [e["epoch"] for e in res.epochs] == [1, 2] and 0.0 <= res.epochs[-1]["val_auroc"] <= 1.0
    assert set(res.epochs[0]) >= {"val_auroc", "auroc/c"}
    rows = list(csv.DictReader(open(tmp_path / "steps.csv")))
    assert len(rows) == 8 and float(rows[-1]["loss"]) == pytest.approx(res.steps[-1]["loss"])
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"][1]["epoch"] == 2
    assert (tmp_path / "training.png").stat().st_size > 1000
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "expert.safetensors")
    assert set(saved) == {f"expert.{k}" for k in model.expert.state_dict()}
    torch.testing.assert_close(saved["expert.selector.key_proj.weight"], model.expert.selector.key_proj.weight)


def test_resume_mid_epoch_is_bit_identical(tiny, data, tmp_path):
    cfg = quiet(feature_cache=str(tmp_path / "cache"))
    full = copy.deepcopy(tiny)
    train_stage1(full, *data, cfg, tmp_path / "full")
    part = copy.deepcopy(tiny)
    res = train_stage1(part, *data, quiet(feature_cache=cfg.feature_cache, max_steps=3), tmp_path / "part")
    assert not res.completed and res.global_step == 3 and res.checkpoint.name == "step-000003"
    resumed = copy.deepcopy(tiny)  # a fresh model: everything must come from the checkpoint
    res = train_stage1(resumed, *data, quiet(feature_cache=cfg.feature_cache, resume_from="latest"), tmp_path / "part")
    assert res.completed and res.global_step == 8 and len(res.steps) == 8
    for (k, a), b in zip(full.expert.state_dict().items(), resumed.expert.state_dict().values()):
        assert torch.equal(a, b), k
    ref = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert [r["loss"] for r in res.steps] == [r["loss"] for r in ref["steps"]]


def test_bad_inputs_are_clear(tiny, data):
    model = copy.deepcopy(tiny)
    with pytest.raises(DataError, match="fewer than one global batch"):
        train_stage1(model, data[0][:3], [], quiet(), "unused")
    with pytest.raises(ValueError, match="micro-batches"):
        train_stage1(model, *data, quiet(micro_batch_size=3), "unused")
    with pytest.raises(DataError, match="normal and anomalous"):
        train_stage1(model, [s for s in data[0] if s.label == 0], [], quiet(), "unused")


def test_cli_stage1_end_to_end(tmp_path, capsys):
    from adkit.cli import main

    root = write_tiny_folder(tmp_path / "data")
    out = tmp_path / "run"
    code = main(["train", "stage1", "--preset", "tiny", "--data", str(root), "--val-categories", "b", "--out", str(out),
                 "--batch-size", "4", "--micro-batch-size", "2", "--epochs", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "val AUROC" in capsys.readouterr().out and (out / "expert.safetensors").is_file()
    code = main(["train", "stage1", "--preset", "tiny", "--data", str(root), "--val-categories", "zzz", "--out", str(out)])
    assert code == 2 and "zzz" in capsys.readouterr().err
