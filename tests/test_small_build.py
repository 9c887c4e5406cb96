"""The cheap ``small`` build (adkit/weights/presets.py, ``hf.mllm_from_weights``): the LLaVA is
assembled on the meta device from the verified cache folders instead of being random-initialised
and overwritten. Checked against the former construction, kept as
``presets._load_small_preset_reference`` (standalone DINOv2 and SmolLM2 models, a random LLaVA,
weights copied in, every LoRA delta built before the merge): the same tensors bit for bit, the
same scores and the same greedy answer. Speed is in benchmarks/bench_build.py, not here."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

from adkit import AnomalyOV, cache, hf
from adkit.config import get_preset
from adkit.weights import dinov2, presets, smollm2

RANDOM = ("expert.", "mllm.model.multi_modal_projector.", "mllm.model.image_newline")


def _build(fn, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # trained=False: the untrained note
        return fn(AnomalyOV, get_preset("small"), **kw)


@pytest.fixture(scope="module")
def pair():
    """(new build, former build) of the default ``from_preset("small")``: trained parts loaded.

    The in-process memos are cleared first, so the former build reads the tower and the LLM from
    the cache folders as it does in a fresh process, not a model an earlier test converted from
    the packaged files in this one (whose config carries no cache path)."""
    for memo in (smollm2._cached, smollm2._cached_tokenizer, dinov2._cached):
        memo.cache_clear()
    return AnomalyOV.from_preset("small"), _build(presets._load_small_preset_reference)


def _tensors(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, persistent or not, by name (tied ones under each name)."""
    out = dict(model.state_dict())
    out.update(model.named_buffers(remove_duplicate=False))
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.device == b.device and a.shape == b.shape and torch.equal(a, b)


def test_every_tensor_is_bit_identical_to_the_former_build(pair):
    new, old = pair
    ours, ref = _tensors(new), _tensors(old)
    assert set(ours) == set(ref)
    assert "mllm.model.language_model.rotary_emb.inv_freq" in ours  # non-persistent buffers count too
    differ = [k for k in ref if not _same(ours[k], ref[k])]
    assert differ == [], differ[:10]
    assert not any(t.is_meta for t in ours.values())
    assert new.mllm.lm_head.weight is hf.embed_tokens(new.mllm).weight  # still tied, as before
    assert [n for n, p in new.named_parameters() if p.requires_grad] == \
        [n for n, p in old.named_parameters() if p.requires_grad]
    assert new.mllm.config.to_dict() == old.mllm.config.to_dict()
    assert new.config == old.config and new.untrained == old.untrained == ()
    assert new.calibration == old.calibration and not new.training


def test_same_scores_maps_and_greedy_answer(pair, photo):
    new, old = pair
    for method in ("expert", "self"):
        a, b = new.detect(photo, method=method)[0], old.detect(photo, method=method)[0]
        assert a.score == b.score and (a.anomaly_map == b.anomaly_map).all(), method
    question = "Is there any defect in the object? Answer in one sentence."
    assert new.chat(photo, question, max_new_tokens=12) == old.chat(photo, question, max_new_tokens=12)


def test_the_merge_is_the_held_delta_merge_layer_by_layer(pair):
    """Merged LoRA weights equal W0 + (α/r)·B·A with the deltas built the former way."""
    import json

    from safetensors import safe_open

    from adkit.weights.parts import lora_deltas

    new, _ = pair
    with safe_open(str(presets.SMALL_WEIGHTS / "trained.safetensors"), "pt") as fh:
        parts, meta = {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()
    deltas = lora_deltas(parts, json.loads(meta["lora"]))
    _, decoder = smollm2.smollm2_weights()
    own = new.state_dict()
    prefix = "mllm.model.language_model."
    assert deltas and all(k.startswith(prefix) for k in deltas)
    wrong = [k for k, d in deltas.items() if not torch.equal(own[k], decoder[k[len(prefix):]] + d)]
    assert wrong == []


def test_untrained_build_keeps_the_weights_and_initialises_the_rest():
    """trained=False: tower and LLM bit-identical; the random parts follow the same recipe from
    the seed (their values come from another point of the seeded stream than before)."""
    model = _build(presets.load_small_preset, trained=False)
    new, again, other = (_tensors(m) for m in (model, *(_build(presets.load_small_preset, trained=False, seed=s)
                                                         for s in (0, 1))))
    old = _build(presets._load_small_preset_reference, trained=False)
    ref = _tensors(old)
    assert set(new) == set(ref)
    fixed = [k for k in ref if not k.startswith(RANDOM)]
    assert [k for k in fixed if not _same(new[k], ref[k])] == []
    assert all(_same(again[k], new[k]) for k in new)  # seeded: the same seed, the same model
    random = [k for k in ref if k.startswith(RANDOM)]
    drawn = [k for k in random if not torch.equal(other[k], new[k])]  # what the seed changes
    assert "mllm.model.multi_modal_projector.linear_1.weight" in drawn and "mllm.model.image_newline" in drawn
    for k in random:
        a, b = new[k], ref[k]
        assert a.dtype == b.dtype and a.shape == b.shape and torch.isfinite(a).all(), k
        if k not in drawn:
            assert torch.equal(a, b), k  # deterministic inits (zero biases, unit gains) exactly as before
        elif b.numel() >= 100:  # the same init distribution (values from another point of the stream)
            assert abs(float(a.std()) / float(b.std()) - 1) < 0.2, k
            assert abs(float(a.mean()) - float(b.mean())) < 0.3 * float(b.std()), k
    assert model.untrained == old.untrained == presets.UNTRAINED


def test_mllm_from_weights_is_strict_and_says_what_is_wrong():
    config = get_preset("small")
    vision, tower = dinov2.dinov2_small_weights(224)
    text, decoder = smollm2.smollm2_weights()
    config = config.replace(vision=vision, text=text)
    weights = {**{f"model.vision_tower.{k}": v for k, v in tower.items()},
               **{f"model.language_model.{k}": v for k, v in decoder.items()}}
    gone = "model.language_model.layers.3.mlp.up_proj.weight"
    broken = {k: v for k, v in weights.items() if k != gone}
    broken["model.vision_tower.encoder.layer.0.attention.attention.query.weight"] = tower["embeddings.cls_token"]
    broken["model.vision_tower.embeddings.cls_token"] = torch.zeros(1, 1, 7)
    with pytest.raises(ValueError) as err:
        hf.mllm_from_weights(config, 49152, broken, fresh=("model.multi_modal_projector.", "model.image_newline"))
    msg = str(err.value)
    assert gone in msg and "attention.attention.query.weight" in msg
    assert "model.vision_tower.embeddings.cls_token (1, 1, 7) vs (1, 1, 384)" in msg
    with pytest.raises(ValueError, match=r"missing keys \(5\): model\.image_newline, model\.multi_modal_projector"):
        hf.mllm_from_weights(config, 49152, weights)  # nothing may be initialised unless allowed


def test_weights_come_only_from_a_verified_cache(tmp_path, capfd):
    """The manifest check stays: a changed byte is never loaded. DINOv2 is rebuilt (one line
    naming the file); for SmolLM2 the verified loader refuses the folder (no 15 s rebuild here)."""
    source = cache.cache_folder("dinov2-vits14-224")
    config, good = dinov2.dinov2_small_weights(224)
    folder = tmp_path / "dinov2-vits14-224"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".adkit-verified*"))
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size - 1000)  # inside the last tensor
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    dinov2._cached.cache_clear()
    _, rebuilt = dinov2.dinov2_small_weights(224, cache_dir=tmp_path)
    err = capfd.readouterr().err
    assert "model.safetensors does not match its sha256" in err and "converting DINOv2" in err
    assert set(rebuilt) == set(good) and all(torch.equal(rebuilt[k], good[k]) for k in good)

    smol = tmp_path / "smollm2-135m-instruct"
    smol.mkdir()
    real = smollm2.cache_folder()
    for f in real.iterdir():
        if not f.name.startswith(".adkit-verified"):
            if f.name == "model.safetensors":
                os.link(f, smol / f.name)  # read only here: a link, not a 540 MB copy
            else:
                shutil.copy2(f, smol / f.name)
    assert cache.load_verified(smol, smollm2._load_weights) is not None
    config_file = smol / "config.json"
    config_file.write_text(config_file.read_text().replace('"hidden_size": 576', '"hidden_size": 577'))
    assert cache.load_verified(smol, smollm2._load_weights) is None
