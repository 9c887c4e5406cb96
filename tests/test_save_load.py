"""Hugging Face-style folders: save_pretrained / from_pretrained (sharding, dtype, device, strict
keys with tied embeddings, tokenizer, generation config, calibration, card) and the peft export."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from adkit import AnomalyOV, hf
from adkit.calibration import Calibration, MethodCalibration
from adkit.weights.official import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


def shards(folder):
    return sorted(folder.glob("model-*-of-*.safetensors"))


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "ckpt"
    tiny.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sharded(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "sharded"
    tiny.save_pretrained(folder, max_shard_size="100KB")
    return folder


# ---------------------------------------------------------------------------- round trips


def test_single_file_round_trip_is_exact(tiny, saved, photo):
    assert (saved / "model.safetensors").is_file() and not shards(saved)
    keys = set(load_file(saved / "model.safetensors"))
    assert len(keys) == len(tiny.state_dict()) - 1  # the tied embeddings are stored once
    loaded = AnomalyOV.from_pretrained(saved)
    assert_same_state(loaded, tiny)
    assert loaded.mllm.lm_head.weight is loaded.mllm.get_input_embeddings().weight  # still tied
    assert loaded.detect(photo)[0].score == tiny.detect(photo)[0].score
    assert loaded.untrained == ()


def test_sharded_round_trip_is_exact(tiny, sharded, photo):
    files = shards(sharded)
    assert len(files) >= 3 and not (sharded / "model.safetensors").exists()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f.name for f in files]
    loaded = AnomalyOV.from_pretrained(sharded)
    assert_same_state(loaded, tiny)
    assert [d.score for d in loaded.detect([photo, photo.rotate(90)])] == \
        [d.score for d in tiny.detect([photo, photo.rotate(90)])]


def test_saving_again_replaces_the_old_shards(tiny, tmp_path):
    tiny.save_pretrained(tmp_path, max_shard_size="100KB")
    assert shards(tmp_path)
    tiny.save_pretrained(tmp_path)  # one file now: a stale index would point at stale shards
    assert not shards(tmp_path) and not (tmp_path / "model.safetensors.index.json").exists()
    assert_same_state(AnomalyOV.from_pretrained(tmp_path), tiny)


def test_folder_holds_tokenizer_generation_config_and_card(tiny, saved):
    from huggingface_hub import ModelCard
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    assert json.loads((saved / "adkit_config.json").read_text())["name"] == "tiny"
    tok = PreTrainedTokenizerFast.from_pretrained(str(saved))
    text = "<|im_start|>user\n<image>\nIs there any defect?<|im_end|>\n"
    assert tok.encode(text, add_special_tokens=False) == tiny.tokenizer.encode(text, add_special_tokens=False)
    gen = GenerationConfig.from_pretrained(str(saved))
    assert (gen.do_sample, gen.eos_token_id, gen.pad_token_id) == (False, tiny.processor.im_end_id,
                                                                   tiny.processor.pad_token_id)
    assert gen.repetition_penalty == tiny.config.generation["repetition_penalty"]
    assert gen.no_repeat_ngram_size == tiny.config.generation["no_repeat_ngram_size"]
    text = (saved / "README.md").read_text()
    assert text.startswith("---\n")
    card = ModelCard.load(saved / "README.md")
    assert card.data.library_name == "adkit" and card.data.pipeline_tag == "image-text-to-text"
    assert "anomaly-detection" in card.data.tags and card.data.license == "apache-2.0"
    assert "Not trained" in card.text  # tiny is random: the card says so


def test_reload_uses_the_saved_tokenizer(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 123  # visible only if the folder's files are what gets loaded
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert AnomalyOV.from_pretrained(tmp_path).tokenizer.model_max_length == 123


def test_calibration_travels_with_the_folder(tiny, tmp_path, photo):
    model = copy.deepcopy(tiny)
    model.calibration = Calibration({"expert": MethodCalibration(0.37, 0.4, 0.05)}, True, "test thresholds")
    model.save_pretrained(tmp_path)
    loaded = AnomalyOV.from_pretrained(tmp_path)
    det = loaded.detect(photo)[0]
    assert (det.threshold, det.calibrated) == (0.37, True)
    assert loaded.calibration.get("expert") == MethodCalibration(0.37, 0.4, 0.05)
    assert "calibrated (test thresholds)" in (tmp_path / "README.md").read_text()
    tiny.save_pretrained(tmp_path)  # uncalibrated now: the old thresholds must not come back
    assert not (tmp_path / "calibration.json").exists()
    assert AnomalyOV.from_pretrained(tmp_path).detect(photo)[0].threshold == 0.5


def test_an_old_style_folder_still_loads(tiny, tmp_path, photo):
    """Before the tokenizer, generation config and card were saved: config + model.safetensors."""
    from adkit.weights.io import config_to_dict

    (tmp_path / "adkit_config.json").write_text(json.dumps(config_to_dict(tiny.config), default=list))
    save_model(tiny, str(tmp_path / "model.safetensors"))
    loaded = AnomalyOV.from_pretrained(tmp_path)
    assert_same_state(loaded, tiny)
    assert loaded.detect(photo)[0].score == tiny.detect(photo)[0].score
    assert loaded.processor.image_token_id == tiny.processor.image_token_id


# ---------------------------------------------------------------------------- dtype and device


def test_dtype_casts_and_keeps_rope_frequencies_fp32(tiny, saved, photo):
    bf16 = AnomalyOV.from_pretrained(saved, dtype="bfloat16")
    state = tiny.state_dict()
    for k, v in bf16.state_dict().items():
        assert torch.equal(v, state[k].to(torch.bfloat16) if state[k].is_floating_point() else state[k]), k
    assert hf.language_model(bf16.mllm).rotary_emb.inv_freq.dtype == torch.float32  # as transformers does
    assert bf16.mllm.lm_head.weight is bf16.mllm.get_input_embeddings().weight
    assert abs(bf16.detect(photo)[0].score - tiny.detect(photo)[0].score) < 2e-2
    assert isinstance(bf16.chat(photo, "Is there a defect?", max_new_tokens=3), str)


def test_dtype_auto_restores_what_was_saved(tiny, tmp_path):
    model = copy.deepcopy(tiny)
    model.mllm.to(torch.bfloat16)  # an MLLM in bf16 beside an fp32 expert
    model.save_pretrained(tmp_path)
    auto = AnomalyOV.from_pretrained(tmp_path, dtype="auto")
    assert auto.mllm.lm_head.weight.dtype == torch.bfloat16 and auto.expert.ltfm.normal_seed.dtype == torch.float32
    assert_same_state(auto, model)
    assert AnomalyOV.from_pretrained(tmp_path).mllm.lm_head.weight.dtype == torch.float32  # default: fp32


@pytest.mark.parametrize("bad", ["int8", "fp8", torch.int64, 16])
def test_a_bad_dtype_is_a_clear_error(saved, bad):
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        AnomalyOV.from_pretrained(saved, dtype=bad)


def test_device_map(saved):
    with pytest.raises(ValueError, match="per-module device maps are not supported"):
        AnomalyOV.from_pretrained(saved, device_map={"": 0})
    with pytest.raises(ValueError, match="device_map must be"):
        AnomalyOV.from_pretrained(saved, device_map="balanced")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            AnomalyOV.from_pretrained(saved, device_map="cuda")
    for where in ("cpu", torch.device("cpu"), "auto"):
        model = AnomalyOV.from_pretrained(saved, device_map=where)
        expected = "cuda" if where == "auto" and torch.cuda.is_available() else "cpu"
        assert {p.device.type for p in model.parameters()} == {expected}


# ---------------------------------------------------------------------------- broken folders


def test_a_shard_missing_a_key_and_holding_a_stray_one_is_reported(tiny, tmp_path):
    tiny.save_pretrained(tmp_path, max_shard_size="100KB")
    where = next(f for f in shards(tmp_path) if "expert.selector.key_proj.bias" in load_file(f))
    sd = load_file(where)
    sd.pop("expert.selector.key_proj.bias")
    sd["expert.extra"] = torch.zeros(1)
    save_file(sd, where, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"(?s)missing keys \(1\): expert.selector.key_proj.bias.*"
                                              r"unexpected keys \(1\): expert.extra"):
        AnomalyOV.from_pretrained(tmp_path)


def test_tied_keys_are_excused_only_when_their_twin_was_loaded(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    stored = "mllm.lm_head.weight" if "mllm.lm_head.weight" in sd else "mllm.model.language_model.embed_tokens.weight"
    sd.pop(stored)  # now neither twin is in the file
    save_file(sd, tmp_path / "model.safetensors")
    both = r"missing keys \(2\): mllm.lm_head.weight, mllm.model.language_model.embed_tokens.weight"
    with pytest.raises(CheckpointError, match=both):
        AnomalyOV.from_pretrained(tmp_path)


def test_a_shape_mismatch_is_reported(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["expert.selector.key_proj.bias"] = torch.zeros(3)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="expert.selector.key_proj.bias"):
        AnomalyOV.from_pretrained(tmp_path)


def test_broken_files_are_named(tiny, tmp_path):
    tiny.save_pretrained(tmp_path, max_shard_size="100KB")
    index = tmp_path / "model.safetensors.index.json"
    good = index.read_text()
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: invalid JSON"):
        AnomalyOV.from_pretrained(tmp_path)
    index.write_text(json.dumps({"weight_map": {"expert.extra": "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="not safetensors shards of this folder"):
        AnomalyOV.from_pretrained(tmp_path)
    index.write_text(good)
    gone = shards(tmp_path)[-1]
    gone.rename(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match=f"shard files that are missing: {gone.name}"):
        AnomalyOV.from_pretrained(tmp_path)
    (tmp_path / "elsewhere").rename(gone)
    (tmp_path / "calibration.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match="calibration.json"):
        AnomalyOV.from_pretrained(tmp_path)
    (tmp_path / "calibration.json").unlink()
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        AnomalyOV.from_pretrained(tmp_path)
    (tmp_path / "adkit_config.json").write_text("{")
    with pytest.raises(CheckpointError, match="adkit_config.json: invalid JSON"):
        AnomalyOV.from_pretrained(tmp_path)
    for f in [*shards(tmp_path), index]:
        f.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        AnomalyOV.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- LoRA: peft export


@pytest.fixture(scope="module")
def lora_model(tiny):
    """A tiny model with stage 2's LoRA (random non-zero lora_B, so it changes the logits) and the
    base MLLM it was injected into, untouched."""
    from adkit.train.launch import Stage2Config
    from adkit.train.stage2 import prepare_trainable

    model = copy.deepcopy(tiny)
    base = copy.deepcopy(model.mllm)
    prepare_trainable(model, Stage2Config(llm="lora"))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model, base


def plain_causal_lm(model, base_mllm):
    """The LLM alone, as one would load it from the Hub: decoder + head with the base weights."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_config(model.config.text)
    lm.model.load_state_dict(hf.language_model(base_mllm).state_dict())
    lm.lm_head.load_state_dict(base_mllm.lm_head.state_dict())
    lm.tie_weights()
    return lm.eval()


@pytest.mark.parametrize("source", ["model", "parts file"])
def test_peft_adapter_on_the_plain_llm_gives_the_kit_logits(lora_model, tmp_path, source):
    from peft import PeftModel

    from adkit.train.launch import Stage2Config
    from adkit.weights.parts import export_peft_adapter, save_trained_parts

    model, base = lora_model
    if source == "parts file":
        cfg = Stage2Config()
        lora = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout, "bias": "none",
                "target_modules": cfg.lora_targets.split(",")}
        src = save_trained_parts(model, tmp_path / "trained.safetensors", lora=lora)  # + projector, newline
    else:
        src = model
    out = export_peft_adapter(src, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    keys = list(load_file(out / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.model.layers.") and ".lora_" in k for k in keys)
    ids = torch.randint(0, 2000, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.mllm(input_ids=ids).logits
        lm = plain_causal_lm(model, base)
        plain = lm(input_ids=ids).logits
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # peft warns about keys it could not place
            peft_model = PeftModel.from_pretrained(lm, out).eval()
        theirs = peft_model(input_ids=ids).logits
    assert (plain - ours).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_peft_adapter_on_the_llava_model_leaves_the_tower_alone(lora_model, tmp_path):
    from peft import PeftModel

    from adkit.weights.parts import export_peft_adapter

    model, base = lora_model
    out = export_peft_adapter(model, tmp_path, base="mllm")
    ids = torch.randint(0, 2000, (1, 9), generator=torch.Generator().manual_seed(1))
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), out).eval()
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and not any("vision_tower" in n for n in lora_names)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, model.mllm(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


def test_peft_export_needs_lora(tiny, lora_model, tmp_path):
    from adkit.weights.parts import export_peft_adapter, save_trained_parts

    with pytest.raises(ValueError, match="no \\(single\\) unmerged LoRA"):
        export_peft_adapter(tiny, tmp_path / "a")
    no_lora = save_trained_parts(tiny, tmp_path / "expert.safetensors", names=["expert.ltfm.normal_seed"])
    with pytest.raises(CheckpointError, match="holds no LoRA settings"):
        export_peft_adapter(no_lora, tmp_path / "b")
    with pytest.raises(ValueError, match="base must be one of"):
        export_peft_adapter(lora_model[0], tmp_path / "c", base="vision")
    with pytest.raises(ValueError, match="unmerged LoRA layers"):  # a folder a fresh model could not load
        lora_model[0].save_pretrained(tmp_path / "d")


# ---------------------------------------------------------------------------- small in bf16


def test_small_round_trips_in_bf16(tmp_path, photo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fp32 = AnomalyOV.from_preset("small")
    fp32.save_pretrained(tmp_path)
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == ["facebook/dinov2-small", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert "Not trained" not in card.text and "thresholds are calibrated" in card.text
    bf16 = AnomalyOV.from_pretrained(tmp_path, dtype=torch.bfloat16)
    ref = dict(fp32.named_parameters())
    for name, p in bf16.named_parameters():
        assert p.dtype == torch.bfloat16 and torch.equal(p, ref[name].to(torch.bfloat16)), name
    got, want = bf16.detect(photo)[0], fp32.detect(photo)[0]
    assert abs(got.score - want.score) < 2e-2
    assert (got.threshold, got.calibrated) == (want.threshold, want.calibrated) and want.calibrated
    answer = bf16.chat(photo, "Is there any defect?", max_new_tokens=4)
    assert isinstance(answer, str) and answer
