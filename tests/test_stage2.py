"""Stage 2 (instruction tuning) on the tiny preset: collator and label mask, trainable parts,
Trainer with LoRA, trained-parts round trip, resume, CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from adkit.data.records import DataError
from adkit.processor import AnomalyOVProcessor
from adkit.train import Stage2Config
from adkit.train.collate import Stage2Collator, check_records
from adkit.weights.official import CheckpointError
from adkit.train.stage2 import load_trained_parts, prepare_trainable, train_stage2


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: toy tensors run best on one thread


def record(i, image, answer="Yes, a scratch."):
    return {"id": f"r{i}", "image": image,
            "conversations": [{"from": "human", "value": "<image>\nIs there any defect?"}, {"from": "gpt", "value": answer}]}


@pytest.fixture(scope="module")
def records(photo):
    return [record(i, photo.resize((40 + 10 * i, 50)), "Yes, a scratch." if i % 2 else "No.") for i in range(4)]


def test_collator_batches_and_the_label_mask_by_hand(tiny, records):
    batch = Stage2Collator(tiny.processor)(records[:2])
    ref = tiny.processor([[{"from": "human", "value": "<image>\nIs there any defect?"},
                           {"from": "gpt", "value": r["conversations"][1]["value"]}] for r in records[:2]],
                         [[r["image"]] for r in records[:2]])
    for k in ref:
        assert torch.equal(batch[k], ref[k]), k
    tok, proc = tiny.tokenizer, tiny.processor
    # by hand, row 0 (answer "No.", shorter → right padding): official rule (docs/architecture.md §2.5)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    n = int(batch["attention_mask"][0].sum())
    assert n < len(ids)
    answer = tok.encode("<|im_start|>assistant\nNo.<|im_end|>\n", add_special_tokens=False)
    assert ids[n - len(answer):n] == answer and labels[n - len(answer):n] == answer  # fully supervised
    keep = {proc.newline_id, proc.im_start_id, proc.im_end_id}
    expected = [t if t in keep else -100 for t in ids[:n - len(answer)]]  # system/user: only the 3 ids
    expected = [-100 if t == proc.image_token_id else e for t, e in zip(ids, expected)]
    assert labels[:n - len(answer)] == expected
    assert set(labels[n:]) <= {-100} and set(ids[n:]) <= {proc.pad_token_id}
    # assistant_only: only the answer and its <|im_end|>
    strict = Stage2Collator(AnomalyOVProcessor(tiny.config, tok, label_rule="assistant_only"))(records[1:2])
    learned = [t for t in strict["labels"][0].tolist() if t != -100]
    assert learned == tok.encode("Yes, a scratch.<|im_end|>", add_special_tokens=False)


def test_bad_records_name_the_record(tmp_path, photo):
    with pytest.raises(DataError, match=r"record 'x'.*image file not found.*nope.png"):
        check_records([{"id": "x", "image": "nope.png", "conversations": record(0, None)["conversations"]}], tmp_path)
    with pytest.raises(DataError, match=r"record 'r0'.*2 <image> tag\(s\).*1 image"):
        bad = record(0, photo)
        bad["conversations"][0]["value"] = "<image><image> what?"
        check_records([bad])
    with pytest.raises(DataError, match="no assistant"):
        check_records([{"id": "y", "conversations": [{"from": "human", "value": "hi"}]}])
    with pytest.raises(DataError, match="turn 1"):
        check_records([{"id": "z", "conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]}])


def test_trainable_parts(tiny):
    model = copy.deepcopy(tiny)
    lora = prepare_trainable(model, Stage2Config(llm="lora", lora_r=4))
    assert any(".q_proj.lora_A." in n for n in lora) and "mllm.model.image_newline" in lora
    assert all("lora_" in n or n.startswith(("mllm.model.multi_modal_projector.", "mllm.model.image_newline"))
               for n in lora)
    other = copy.deepcopy(tiny)
    full = prepare_trainable(other, Stage2Config(llm="full", projector=False, image_newline=False))
    assert all(n.startswith(("mllm.model.language_model.", "mllm.lm_head.")) for n in full)
    assert "mllm.model.language_model.embed_tokens.weight" in full
    with pytest.raises(ValueError, match="nothing to train"):
        prepare_trainable(other, Stage2Config(llm="frozen", projector=False, image_newline=False))


def test_lora_training_lowers_the_loss_and_round_trips(tiny, records, tmp_path):
    model = copy.deepcopy(tiny)
    batch = Stage2Collator(model.processor)(records)
    with torch.no_grad():
        before = float(model(**batch).loss)
    cfg = Stage2Config(llm="lora", lora_r=4, lr=2e-2, warmup_ratio=0.0, batch_size=2, micro_batch_size=1, max_steps=2,
                       progress=False)  # 2 micro-batches accumulated per step
    res = train_stage2(model, records, cfg, tmp_path)
    with torch.no_grad():
        out = model(**batch)
    trained_logits, after = out.logits[..., :4096], float(out.loss)  # a vocabulary slice keeps the check cheap
    assert after < before and res.global_step == 2
    assert [r["step"] for r in res.log_history if "loss" in r] == [1, 2]
    assert (tmp_path / "training.png").is_file() and (tmp_path / "steps.csv").is_file()
    # the file holds exactly the trained parts, and loads into a fresh model (LoRA merged)
    from safetensors import safe_open

    with safe_open(str(res.weights_path), "pt") as fh:
        keys, meta = set(fh.keys()), fh.metadata()
    assert keys == set(res.trainable) and json.loads(meta["lora"])["r"] == 4
    assert res.weights_path.stat().st_size < 200_000
    fresh = copy.deepcopy(tiny)  # the untouched base weights
    load_trained_parts(fresh, res.weights_path)
    assert not any("lora" in n for n, _ in fresh.named_parameters())  # merged: a plain AnomalyOV again
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits[..., :4096], trained_logits, atol=2e-5, rtol=1e-4)
    assert set(fresh.state_dict()) == set(tiny.state_dict())  # so save_pretrained/from_pretrained work as before
    from safetensors.torch import save_file

    save_file({"expert.extra": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): expert.extra"):
        load_trained_parts(fresh, tmp_path / "bad.safetensors")


def test_trainer_resume_matches_an_uninterrupted_run(tiny, records, tmp_path):
    cfg = dict(llm="frozen", lr=5e-2, batch_size=1, micro_batch_size=1, max_steps=2, save_steps=1, progress=False)
    full = copy.deepcopy(tiny)
    train_stage2(full, records[:2], Stage2Config(**cfg), tmp_path / "full")
    assert (tmp_path / "full" / "checkpoint-1" / "trained.safetensors").is_file()
    resumed = copy.deepcopy(tiny)  # fresh weights: the projector/newline must come from checkpoint-1
    res = train_stage2(resumed, records[:2], Stage2Config(**{**cfg, "resume_from": str(tmp_path / "full" / "checkpoint-1")}),
                       tmp_path / "resumed")
    assert res.global_step == 2
    for name, p in full.named_parameters():
        if name.startswith("mllm.model.multi_modal_projector") or name == "mllm.model.image_newline":
            torch.testing.assert_close(dict(resumed.named_parameters())[name], p, atol=1e-6, rtol=1e-5)
    assert not torch.equal(dict(resumed.named_parameters())["mllm.model.image_newline"],
                           dict(tiny.named_parameters())["mllm.model.image_newline"])


def test_cli_stage2(tmp_path, photo, capsys):
    from adkit.cli import main

    photo.save(tmp_path / "p.png")
    data = tmp_path / "train.json"
    data.write_text(json.dumps([record(i, "p.png") for i in range(2)]))
    out = tmp_path / "run"
    code = main(["train", "stage2", "--preset", "tiny", "--data", str(data), "--out", str(out), "--llm", "lora",
                 "--batch-size", "2", "--micro-batch-size", "1", "--max-steps", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "stage 2: 1 steps" in capsys.readouterr().out and (out / "trained.safetensors").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([record(0, "missing.png")]))
    assert main(["train", "stage2", "--preset", "tiny", "--data", str(bad), "--out", str(out)]) == 2
    assert "missing.png" in capsys.readouterr().err
