"""Stage 2's speed levers change the cost, not the meaning: the LM head only at target
positions gives transformers' loss and gradients; bf16 autocast leaves the tower and the
expert in fp32; single view lays every image out as one base view, and the trained parts
carry that choice to inference (tiny preset)."""

from __future__ import annotations

import copy

import pytest
import torch

from adkit.train import Stage2Config
from adkit.train.collate import Stage2Collator
from adkit.train.stage2 import load_trained_parts, prepare_trainable, train_stage2

pytestmark = pytest.mark.usefixtures("one_thread")


def conv(answer):
    return [{"from": "human", "value": "<image>\nIs there any defect?"}, {"from": "gpt", "value": answer},
            {"from": "human", "value": "Where is it?"}, {"from": "gpt", "value": f"{answer} At the top left."}]


@pytest.fixture(scope="module")
def batch(tiny, photo):
    records = [{"id": str(i), "image": photo.resize((60 + 30 * i, 70)), "conversations": conv(a)}
               for i, a in enumerate(["Yes, a scratch across the surface.", "No."])]
    return Stage2Collator(tiny.processor)(records)


@pytest.fixture()
def lora_model(tiny):
    model = copy.deepcopy(tiny)
    prepare_trainable(model, Stage2Config(llm="lora"))
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)  # LoRA B starts at zero; make the adapters matter
    return model


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("items", [None, 37])
def test_labelled_logits_give_transformers_loss_and_gradients(lora_model, batch, items):
    extra = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    full = lora_model(**batch, **extra)
    full.loss.backward()
    g_full = grads(lora_model)
    lora_model.zero_grad()
    sparse = lora_model(**batch, **extra, labelled_logits_only=True)
    sparse.loss.backward()
    g_sparse = grads(lora_model)
    torch.testing.assert_close(sparse.loss, full.loss, rtol=1e-5, atol=1e-6)
    assert g_full.keys() == g_sparse.keys() and len(g_full) > 0
    for n in g_full:
        torch.testing.assert_close(g_sparse[n], g_full[n], rtol=1e-4, atol=1e-7, msg=n)
    # only the positions followed by a target got logits
    targets = batch["labels"][:, 1:] != -100
    assert sparse.logits.shape[1] == int(targets.any(0).sum()) < full.logits.shape[1]


def test_autocast_keeps_tower_and_expert_in_fp32(tiny, batch):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        blocks, out = tiny.image_blocks(batch["pixel_values"], batch["image_sizes"], batch["split_sizes"])
    assert out.scores.dtype == torch.float32 and out.selected_tokens.dtype == torch.float32
    with torch.no_grad():
        _, plain = tiny.image_blocks(batch["pixel_values"], batch["image_sizes"], batch["split_sizes"])
    torch.testing.assert_close(out.scores, plain.scores)  # autocast did not touch the expert
    assert blocks[0].dtype == torch.bfloat16  # the projector did run in bf16


def test_single_view_is_one_base_view_and_travels_with_the_parts(tiny, photo, tmp_path):
    wide = photo.resize((400, 150))
    record = {"id": "w", "image": wide, "conversations": conv("Yes, a dent.")}
    model = copy.deepcopy(tiny)
    anyres = Stage2Collator(model.processor)([record])
    model.config.single_view = True
    single = Stage2Collator(model.processor)([record])
    model.config.single_view = False
    assert single["pixel_values"].shape[0] == 1 < anyres["pixel_values"].shape[0]
    h, w = single["image_sizes"][0].tolist()
    assert int((single["input_ids"] == model.processor.image_token_id).sum()) == \
        model.processor.layout(h, w, single_view=True).total
    cfg = Stage2Config(llm="lora", batch_size=1, max_steps=1, progress=False, save_steps=10**9, single_view=True)
    res = train_stage2(model, [record], cfg, tmp_path / "s2")
    fresh = copy.deepcopy(tiny)
    assert fresh.config.single_view is False
    load_trained_parts(fresh, res.weights_path)
    assert fresh.config.single_view is True  # chat now lays images out as the LLM parts learned them
    ids = fresh.processor([[{"role": "user", "content": "<image>\nhi"}]], [[wide]], add_generation_prompt=True)
    assert ids["pixel_values"].shape[0] == 1
