"""AnomalyOV end to end on the tiny preset: parity with transformers, training, generation, I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adkit import AnomalyOV, get_preset, hf
from adkit.weights.official import CheckpointError


def conversation(question="Is there any defect?", answer="Yes, a scratch."):
    return [{"role": "user", "content": "<image>\n" + question}, {"role": "assistant", "content": answer}]


def hf_forward(model, batch, batch_num_images=None):
    kw = {} if batch_num_images is None else {"batch_num_images": batch_num_images}
    return model.mllm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"], **kw).logits


def test_expert_off_equals_transformers_llava_onevision(tiny, photo):
    """Without the expert, our tower→projector→packing→LLM path is transformers' own forward."""
    tiny.use_expert = False
    try:
        wide, tall = photo, photo.resize((40, 130))
        batch = tiny.processor([conversation(), conversation("Describe it.", "A part.")], [[wide], [tall]])
        with torch.no_grad():
            ours = tiny(**batch).logits
            ref = hf_forward(tiny, batch)
        assert ours.shape == ref.shape
        mask = batch["attention_mask"].bool()
        torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)
    finally:
        tiny.use_expert = True


def test_expert_off_multi_image_equals_transformers(tiny, photo):
    tiny.use_expert = False
    try:
        conv = [{"role": "user", "content": "<image>\n<image>\nCompare."}]
        batch = tiny.processor([conv], [[photo, photo.rotate(90, expand=True)]])
        assert batch["single_view"].all() and batch["split_sizes"].tolist() == [1, 1]
        with torch.no_grad():
            ours = tiny(**batch).logits
            ref = hf_forward(tiny, batch, batch_num_images=torch.tensor([2]))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    finally:
        tiny.use_expert = True


def test_forward_with_expert_gives_loss_and_trains_the_right_parts(tiny, photo):
    batch = tiny.processor([conversation()], [[photo]])
    out = tiny(**batch)
    assert out.loss is not None and torch.isfinite(out.loss)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert out.anomaly_scores.shape == (1,)
    out.loss.backward()
    proj = hf.projector(tiny.mllm)
    assert proj.linear_1.weight.grad is not None and proj.linear_1.weight.grad.abs().sum() > 0
    # the expert's tokens reach the loss through the projector, so the selector gets gradient
    assert tiny.expert.selector.key_proj.weight.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_image_block_is_masked_in_labels_and_placeholders_counted(tiny, photo):
    batch = tiny.processor([conversation()], [[photo]])
    lay = tiny.processor.layout(photo.height, photo.width)
    placeholders = batch["input_ids"] == tiny.processor.image_token_id
    assert int(placeholders.sum()) == lay.total
    assert bool((batch["labels"][placeholders] == -100).all())


def test_hint_phrase_follows_the_score(tiny, photo):
    """Force the score to each bucket through the score head's bias; the hint tokens follow."""
    bias = tiny.expert.selector.score_mlp[2].bias
    old = bias.detach().clone()
    batch = tiny.processor([conversation()], [[photo]])
    lay = tiny.processor.layout(photo.height, photo.width)
    start = lay.visual_tokens
    embed = hf.embed_tokens(tiny.mllm)
    try:
        for level, logit in enumerate([-20.0, 0.0, 20.0]):
            with torch.no_grad():
                bias.fill_(logit - 0.0)
                blocks, out = tiny.image_blocks(batch["pixel_values"], batch["image_sizes"])
            expected = embed(torch.tensor(tiny.processor.hint_ids[level]))
            score = float(out.scores[0])
            assert (score < 0.3, 0.3 <= score < 0.7, score >= 0.7)[level], score
            torch.testing.assert_close(blocks[0][start:start + lay.hint_tokens], expected)
    finally:
        with torch.no_grad():
            bias.copy_(old)


def test_generate_and_chat(tiny, photo):
    answer = tiny.chat(photo, "Are there any defects?", max_new_tokens=4)
    assert isinstance(answer, str)
    batch = tiny.processor([conversation()[:1], [{"role": "user", "content": "<image>\nA much longer question here?"}]],
                           [[photo], [photo]], add_generation_prompt=True)
    ids = tiny.generate(**batch, max_new_tokens=3, min_new_tokens=3)
    assert ids.shape == (2, 3)
    # greedy decoding of a right-padded batch equals decoding each row alone
    single = tiny.processor([conversation()[:1]], [[photo]], add_generation_prompt=True)
    torch.testing.assert_close(tiny.generate(**single, max_new_tokens=3, min_new_tokens=3)[0], ids[0])


def test_detect_returns_maps_at_image_resolution(tiny, photo):
    res = tiny.detect([photo, photo.resize((60, 60))])
    assert len(res) == 2
    assert res[0].anomaly_map.shape == (photo.height, photo.width)
    assert res[1].anomaly_map.shape == (60, 60)
    assert 0.0 < res[0].score < 1.0
    assert res[0].grid_shape == tiny.processor.layout(photo.height, photo.width).grid_shape
    np.testing.assert_allclose(res[0].anomaly_map, (res[0].base_map + res[0].crop_map) / 2, rtol=1e-6)
    # detect agrees with the full forward's score for the same image
    batch = tiny.processor([conversation()], [[photo]])
    with torch.no_grad():
        assert abs(float(tiny(**batch).anomaly_scores[0]) - res[0].score) < 1e-5


def test_detect_accepts_odd_images(tiny, tmp_path):
    gray16 = tmp_path / "gray16.png"
    Image.fromarray((np.arange(64 * 80).reshape(64, 80) * 12).astype(np.uint16)).save(gray16)
    rgba = Image.new("RGBA", (33, 21), (255, 0, 0, 128))
    res = tiny.detect([str(gray16), rgba, Image.new("L", (1, 1))])
    assert [r.anomaly_map.shape for r in res] == [(64, 80), (21, 33), (1, 1)]


def test_save_and_load_round_trip(tiny, photo, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    loaded = AnomalyOV.from_pretrained(tmp_path / "ckpt")
    batch = tiny.processor([conversation()], [[photo]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, tiny(**batch).logits)


def test_loading_a_wrong_checkpoint_is_reported(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file, save_file

    sd = load_file(tmp_path / "ckpt" / "model.safetensors")
    sd.pop("expert.selector.key_proj.bias")
    sd["expert.extra"] = torch.zeros(1)
    save_file(sd, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"(?s)missing keys.*expert.selector.key_proj.bias.*unexpected keys.*expert.extra"):
        AnomalyOV.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="adkit_config.json is missing"):
        AnomalyOV.from_pretrained(tmp_path)


def test_placeholder_mismatch_is_a_clear_error(tiny, photo):
    batch = tiny.processor([conversation()], [[photo]])
    tiny.use_expert = False
    try:
        with pytest.raises(ValueError, match="placeholders"):
            tiny(**batch)
    finally:
        tiny.use_expert = True


def test_paper_preset_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("ADKIT_LLAVA_PATH", raising=False)
    monkeypatch.delenv("ADKIT_EXPERT_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)pretrained_expert_05b.pth.*ADKIT_EXPERT_PATH"):
        AnomalyOV.from_preset("paper-0.5b")
    expert = tmp_path / "pretrained_expert_05b.pth"
    from adkit import AnomalyExpert, ExpertConfig

    torch.save(AnomalyExpert(ExpertConfig()).to_official_state_dict(), expert)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"(?s)llava-onevision-qwen2-0.5b-ov-hf.*ADKIT_LLAVA_PATH"):
        AnomalyOV.from_preset("paper-0.5b", expert_path=expert, model_path=str(tmp_path / "no-such-dir"))


def test_paper_preset_loads_a_local_skeleton(tmp_path):
    """A llava-hf folder at paper geometry (random weights, 1-layer LLM) + an official .pth load."""
    from adkit import AnomalyExpert, ExpertConfig

    cfg = get_preset("paper-0.5b")
    small = cfg.replace(vision=cfg.vision.__class__(**{**cfg.vision.to_dict(), "num_hidden_layers": 26}),
                        text=cfg.text.__class__(**{**cfg.text.to_dict(), "num_hidden_layers": 1, "layer_types": None}))
    torch.manual_seed(0)
    mllm = hf.build_mllm(small, 151646)
    mllm.save_pretrained(tmp_path / "llava")
    expert_file = tmp_path / "expert.pth"
    torch.save(AnomalyExpert(ExpertConfig()).to_official_state_dict(), expert_file)
    model = AnomalyOV.from_preset("paper-0.5b", model_path=str(tmp_path / "llava"), expert_path=str(expert_file))
    assert model.expert.config == ExpertConfig()
    assert model.mllm.config.text_config.num_hidden_layers == 1
    torch.testing.assert_close(hf.image_newline(model.mllm), hf.image_newline(mllm))


def test_transformers_trainer_runs_and_lowers_the_loss(tiny, photo, tmp_path):
    """forward(..., labels=...) is all Trainer needs: a few steps on one example lower its loss."""
    import copy

    from transformers import Trainer, TrainingArguments

    model = copy.deepcopy(tiny).train()
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("mllm.model.multi_modal_projector")
    batch = model.processor([conversation()], [[photo]])
    example = {k: v[0] for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}

    def collate(rows):
        out = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        return dict(out, **{k: batch[k] for k in ("pixel_values", "image_sizes", "split_sizes", "single_view")})

    with torch.no_grad():
        before = float(model(**batch).loss)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, learning_rate=5e-2, per_device_train_batch_size=1,
                             report_to=[], save_strategy="no", logging_steps=1, use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=[example], data_collator=collate).train()
    with torch.no_grad():
        after = float(model.eval()(**batch).loss)
    assert after < before


def test_chat_leaves_the_callers_history_alone(tiny, photo):
    history = [{"role": "user", "content": "Is it broken?"}, {"role": "assistant", "content": "No."}]
    snapshot = [dict(t) for t in history]
    tiny.chat(photo, "Why?", history=history, max_new_tokens=2)
    assert history == snapshot


def test_untrained_parts_are_reported(tiny, tmp_path):
    assert "expert" in tiny.untrained and "language_model" in tiny.untrained
    tiny.save_pretrained(tmp_path / "ckpt")
    assert AnomalyOV.from_pretrained(tmp_path / "ckpt").untrained == ()
