"""adkit.zeroshot: the training-free scorers against from-scratch numpy transcriptions, cases with
known answers (an outlier patch), batch-order invariance, chunking, and ``model.detect(method=...)``
on the tiny preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adkit.zeroshot import METHODS, SETTINGS, method_label
from adkit.zeroshot.scores import (
    aggregate_neighbourhood, interval_mean, mutual_map, neighbourhood_mask, rescore, self_similarity_map, top_mean,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- numpy references

def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _half_chord(a, b):
    return np.linalg.norm(_unit(a)[:, None] - _unit(b)[None], axis=-1) / 2  # [n, m]


def np_self_similarity(feats, split, radius=1, k=1):
    """Per patch, one loop iteration at a time: its k nearest patches among the allowed bank."""
    n, p, _ = feats.shape
    g = int(round(p ** 0.5))
    out = np.zeros((n, p))
    start = 0
    for size in split:
        tiles = list(range(start, start + size))
        for t in tiles:
            bank = [t] if t == start else tiles[1:]  # base view alone; crops share one bank
            for q in range(p):
                dists = []
                for b in bank:
                    for r in range(p):
                        near = abs(q // g - r // g) <= radius and abs(q % g - r % g) <= radius
                        if b == t and near:
                            continue
                        dists.append(np.linalg.norm(_unit(feats[t, q]) - _unit(feats[b, r])) / 2)
                out[t, q] = np.mean(sorted(dists)[:k])
        start += size
    return out


def np_aggregate(feats, r):
    n, p, d = feats.shape
    g = int(round(p ** 0.5))
    x = (feats - feats.mean((1, 2), keepdims=True)) / np.sqrt(feats.var((1, 2), keepdims=True) + 1e-5)
    if r > 1:
        grid = x.reshape(n, g, g, d)
        pad = np.pad(grid, ((0, 0), (r // 2, r // 2), (r // 2, r // 2), (0, 0)))
        x = np.stack([pad[:, i:i + g, j:j + g] for i in range(r) for j in range(r)]).mean(0).reshape(n, p, d)
    return _unit(x)


def np_mutual(levels, r_list=(1, 3), frac=0.3):
    b, p, _ = levels[0].shape
    total = np.zeros((b, p))
    for lvl in levels:
        for r in r_list:
            z = np_aggregate(lvl, r)
            for i in range(b):
                per_ref = np.stack([_half_chord(z[i], z[j]).min(1) for j in range(b) if j != i], 1)  # [P, B-1]
                k = max(1, int((b - 1) * frac))
                total[i] += np.sort(per_ref, 1)[:, :k].mean(1)
    return total / (len(levels) * len(r_list))


# ---------------------------------------------------------------------------- tensor functions

def test_self_similarity_matches_numpy_with_crops():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1 + 2 + 1 + 4, 16, 6)).astype(np.float32)  # images with 2, 1 and 4 crops... [8, 4×4, 6]
    split = [3, 1, 4]
    for radius, k in ((1, 1), (0, 2), (1, 3)):
        ours = self_similarity_map(torch.from_numpy(feats), split, radius=radius, k=k).numpy()
        np.testing.assert_allclose(ours, np_self_similarity(feats, split, radius, k), atol=1e-5)


def test_self_similarity_blocks_do_not_change_the_result():
    feats = torch.randn(2 + 3 + 3 + 1, 25, 8)
    split = [3, 3, 2, 1]
    full = self_similarity_map(feats, split)
    np.testing.assert_allclose(self_similarity_map(feats, split, block=1).numpy(), full.numpy(), atol=1e-6)


def test_self_similarity_under_bf16_autocast_stays_fp32():
    """Stage 2's bf16 autocast makes the distance matmuls bf16; the map is still written (fp32)."""
    feats = torch.randn(1 + 2, 16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = self_similarity_map(feats, [1, 2])
    assert mixed.dtype == torch.float32
    np.testing.assert_allclose(mixed.numpy(), self_similarity_map(feats, [1, 2]).numpy(), atol=2e-2)


def test_an_outlier_patch_peaks_the_self_map_and_raises_the_score():
    torch.manual_seed(0)
    base = torch.randn(1, 8) + 4.0  # every patch ≈ the same direction: a uniform surface
    feats = base.repeat(1, 64, 1) + 0.05 * torch.randn(1, 64, 8)
    clean = self_similarity_map(feats, [1])
    bad = feats.clone()
    bad[0, 27] = -base[0]  # one patch points elsewhere
    dirty = self_similarity_map(bad, [1])
    assert int(dirty[0].argmax()) == 27
    assert float(top_mean(dirty)) > 3 * float(top_mean(clean))


def test_neighbourhood_mask():
    m = neighbourhood_mask(3, 1)
    assert m.shape == (9, 9) and bool(m.diagonal().all())
    assert bool(m[4].all())  # the centre touches every cell of a 3×3 grid
    assert m[0].nonzero().flatten().tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="excludes the whole"):
        self_similarity_map(torch.randn(1, 9, 4), [1], radius=2)


def test_aggregation_matches_numpy_with_zero_padding():
    feats = np.random.default_rng(1).normal(size=(2, 25, 7)).astype(np.float32)
    for r in (1, 3, 5):
        np.testing.assert_allclose(aggregate_neighbourhood(torch.from_numpy(feats), r).numpy(), np_aggregate(feats, r),
                                   atol=1e-5)


def test_mutual_matches_numpy():
    rng = np.random.default_rng(2)
    levels = [rng.normal(size=(5, 16, 6)).astype(np.float32) for _ in range(2)]
    ours = mutual_map([torch.from_numpy(x) for x in levels], r_list=(1, 3)).numpy()
    np.testing.assert_allclose(ours, np_mutual(levels), atol=1e-5)


def test_mutual_is_invariant_to_batch_order_and_to_chunking():
    torch.manual_seed(3)
    levels = [torch.randn(7, 16, 5) for _ in range(2)]
    full = mutual_map(levels)
    perm = torch.randperm(7)
    np.testing.assert_allclose(mutual_map([x[perm] for x in levels]).numpy(), full[perm].numpy(), atol=1e-6)
    # blocks of one query × one reference image: the smallest possible pieces, same result
    np.testing.assert_allclose(mutual_map(levels, block=16 * 16).numpy(), full.numpy(), atol=1e-6)
    # scoring only the first images (the rest are references) gives those rows of the full result
    np.testing.assert_allclose(mutual_map(levels, num_queries=2, block=16 * 16 * 3).numpy(), full[:2].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="num_queries"):
        mutual_map(levels, num_queries=8)


def test_mutual_finds_the_image_with_a_foreign_patch():
    torch.manual_seed(4)
    common = torch.randn(16, 8)
    batch = common[None].repeat(6, 1, 1) + 0.05 * torch.randn(6, 16, 8)  # six views of the same surface
    batch[2, 5] = torch.randn(8) * 3  # image 2 holds one patch no other image has
    maps = mutual_map([batch], r_list=(1,))
    assert int(maps.max(1).values.argmax()) == 2 and int(maps[2].argmax()) == 5
    with pytest.raises(ValueError, match="at least 2 images"):
        mutual_map([batch[:1]])


def test_interval_mean_and_top_mean():
    v = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 9.0, 8.0, 7.0, 6.0]])
    assert float(interval_mean(v, 0.0, 0.3)) == pytest.approx(1.0)  # mean of 0, 1, 2
    assert float(interval_mean(v, 0.1, 0.3)) == pytest.approx(1.5)  # ranks 1..2: 1, 2
    assert float(interval_mean(v, 0.0, 0.01)) == 0.0  # at least one value
    assert float(top_mean(v, 0.2)) == pytest.approx(8.5)
    assert float(top_mean(v, 0.0)) == 9.0


def test_rescore_matches_numpy():
    rng = np.random.default_rng(5)
    scores, feats = rng.random(6), rng.normal(size=(6, 4))
    ours = rescore(torch.tensor(scores), torch.tensor(feats), (1, 2, 3)).numpy()
    s = (scores - scores.min()) / (scores.max() - scores.min())
    f = _unit(feats)
    sim = f @ f.T
    ref = np.zeros(6)
    for k in (1, 2, 3):
        for i in range(6):
            top = np.argsort(-sim[i])[:k]
            ref[i] += (sim[i, top] * s[top]).sum() / sim[i, top].sum()
    np.testing.assert_allclose(ours, ref / 3, atol=1e-9)
    np.testing.assert_allclose(rescore(torch.tensor(scores), torch.tensor(feats), (1,)).numpy(), s, atol=1e-12)


def test_method_labels_name_the_setting():
    assert set(METHODS) == set(SETTINGS)
    assert "transductive" in method_label("mutual") and "inductive" in method_label("self")
    with pytest.raises(ValueError, match="unknown detection method"):
        method_label("magic")


# ---------------------------------------------------------------------------- model.detect(method=...)

@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(6)
    return [Image.fromarray(rng.integers(0, 256, (70 + 10 * i, 90, 3), dtype=np.uint8)) for i in range(4)]


@pytest.mark.parametrize("method", METHODS)
def test_detect_methods_return_detections_at_image_size(tiny, images, method):
    dets = tiny.detect(images, method=method)
    assert [d.anomaly_map.shape for d in dets] == [(im.height, im.width) for im in images]
    for d in dets:
        assert d.method == method and 0.0 <= d.score <= 1.0 and np.isfinite(d.anomaly_map).all()
        assert d.is_anomalous == (d.score >= d.threshold)
    if method == "mutual":
        assert all(d.grid_shape == (0, 0) and d.crop_map is None for d in dets)
    else:
        assert all(d.crop_map is not None for d in dets)


def test_self_detection_equals_the_tensor_function(tiny, images):
    """The score is the top 1 % mean of the image's patch distances over all its tiles."""
    batch = tiny.processor.images(images)
    split = batch.split_sizes.tolist()
    with torch.no_grad():
        feats = tiny.features(batch.pixel_values, extra=tiny.config.self_levels)
    d = self_similarity_map(feats.at(tiny.config.self_levels[0]), split)
    expected = [float(top_mean(part.reshape(1, -1))) for part in d.split(split)]
    got = [det.score for det in tiny.detect(images, method="self")]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_mutual_detection_uses_reference_images(tiny, images):
    """Scoring image 0 against references = scoring all together and keeping image 0."""
    alone = tiny.detect(images[:1], method="mutual", reference=images[1:])[0]
    together = tiny.detect(images, method="mutual")[0]
    assert alone.score == pytest.approx(together.score, abs=1e-6)
    np.testing.assert_allclose(alone.anomaly_map, together.anomaly_map, atol=1e-5)
    with pytest.raises(ValueError, match="at least two images"):
        tiny.detect(images[:1], method="mutual")
    with pytest.raises(ValueError, match="only used by method='mutual'"):
        tiny.detect(images[:1], method="self", reference=images[1:])
    with pytest.raises(ValueError, match="unknown detection method"):
        tiny.detect(images[:1], method="knn")


def test_a_larger_base_view_for_the_training_free_methods(tiny, images):
    big = tiny.detect(images[:2], method="self", image_size=112)  # 14×14 patches instead of 7×7 (SigLIP interpolates)
    assert big[0].grid_shape == (0, 0) and big[0].anomaly_map.shape == (images[0].height, images[0].width)
    assert big[0].score != tiny.detect(images[:1], method="self")[0].score
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny.detect(images[:1], method="self", image_size=100)
    with pytest.raises(ValueError, match="training-free"):
        tiny.detect(images[:1], method="expert", image_size=112)
