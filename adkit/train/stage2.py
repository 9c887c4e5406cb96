"""Stage 2: visual instruction tuning with ``transformers.Trainer`` (paper §5.1; docs/architecture.md §4).

The official scripts tune the projector, ``image_newline`` and the whole LLM from LLaVA-OV
weights with the tower and expert frozen: lr 1e-5, cosine, 3 % warmup, weight decay 0,
1 epoch, bf16, DeepSpeed ZeRO-2, gradient checkpointing. LoRA on the LLM (peft, injected in
place so the model stays an :class:`adkit.AnomalyOV`) is our addition for small GPUs and for
shipping small checkpoints. ``AnomalyOV.forward(..., labels)`` returns the loss, so the stock
Trainer does everything: DDP under torchrun/accelerate, DeepSpeed via a JSON config,
checkpoint/resume, token-count loss normalisation across accumulation steps and processes.

Only the trained parts are written, as one safetensors file whose keys are the model's own
parameter names (``mllm.model.multi_modal_projector.*``, ``mllm.model.image_newline``,
``...q_proj.lora_A.default.weight``, ``expert.*`` from stage 1) plus the LoRA settings in its
metadata; :func:`load_trained_parts` puts them back into a fresh model (merging LoRA).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import Trainer, TrainingArguments

from .. import hf
from ..precision import cpu_bf16
from ..processor import AnomalyOVProcessor
from ..weights.parts import load_trained_parts, save_trained_parts  # re-exported: adkit.train.load_trained_parts
from .checkpoints import newest_complete, write_marker
from .collate import Stage2Collator, check_records
from .launch import LLM_MODES, Stage2Config

PARTS_FILE = "trained.safetensors"


@dataclass
class Stage2Result:
    out_dir: Path
    weights_path: Path  # trained parts only (safetensors)
    global_step: int
    log_history: list[dict]
    trainable: dict[str, int]  # parameter name → numel
    world_size: int = 1  # processes the Trainer ran on


# ---------------------------------------------------------------------------- trainable parts


def lora_config(config: Stage2Config):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=[t.strip() for t in config.lora_targets.split(",") if t.strip()], bias="none")


def has_lora(model) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def prepare_trainable(model, config: Stage2Config) -> dict[str, int]:
    """Freeze the tower and expert; make the selected parts trainable (injecting LoRA if asked)."""
    if config.llm not in LLM_MODES:
        raise ValueError(f"llm must be one of {LLM_MODES}, got {config.llm!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    llm = hf.language_model(model.mllm)
    if config.llm == "lora":
        if not has_lora(model):
            from peft import inject_adapter_in_model

            inject_adapter_in_model(lora_config(config), llm)
        for n, p in llm.named_parameters():
            p.requires_grad_("lora_" in n)
    elif config.llm == "full":
        for p in [*llm.parameters(), *model.mllm.lm_head.parameters()]:
            p.requires_grad_(True)
    if config.projector:
        hf.projector(model.mllm).requires_grad_(True)
    if config.image_newline:
        hf.image_newline(model.mllm).requires_grad_(True)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError("stage 2 has nothing to train: enable the projector, image_newline or the LLM")
    bad = [n for n in trainable if n.startswith(("expert.", "mllm.model.vision_tower."))]
    assert not bad, f"tower and expert must stay frozen in stage 2: {bad[:3]}"
    return trainable


# ---------------------------------------------------------------------------- training


class Stage2Trainer(Trainer):
    """The stock Trainer, saving and resuming the trained parts only (not the frozen billions)."""

    lora: dict | None = None
    labelled_logits: bool = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.labelled_logits:  # AnomalyOV.forward: the LM head only where a target follows
            inputs = {**inputs, "labelled_logits_only": True}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _save(self, output_dir=None, state_dict=None):
        output_dir = Path(output_dir or self.args.output_dir)
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if state_dict is not None:  # DeepSpeed hands a gathered state dict
            state_dict = {n: state_dict[n] for n in names if n in state_dict}
            names = list(state_dict)
        save_trained_parts(model, output_dir / PARTS_FILE, names, lora=self.lora, state_dict=state_dict)
        torch.save(self.args, output_dir / "training_args.bin")

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, then its completion marker, written last (adkit/train/checkpoints.py)."""
        super()._save_checkpoint(model, trial)
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        self.accelerator.wait_for_everyone()  # every rank's files (DeepSpeed shards) are on disk
        if self.args.should_save:
            write_marker(Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_trained_parts(model or self.model, Path(resume_from_checkpoint) / PARTS_FILE, merge_lora=False)


def training_arguments(config: Stage2Config, out_dir: Path, world_size: int) -> TrainingArguments:
    per_step = config.micro_batch_size * world_size
    if config.batch_size % per_step:
        raise ValueError(f"global batch {config.batch_size} must split into {world_size} process(es) × "
                         f"micro-batches of {config.micro_batch_size}")
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.batch_size // per_step, learning_rate=config.lr,
        lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "epoch", save_steps=config.save_steps or 500,
        bf16=config.bf16 and (cuda or cpu_bf16()), use_cpu=not cuda, seed=config.seed, data_seed=config.seed,
        report_to=[], remove_unused_columns=False, disable_tqdm=not config.progress,
        deepspeed=config.deepspeed, dataloader_num_workers=0,
    )


def world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def train_stage2(model, records: Sequence[dict], config: Stage2Config | None = None, out_dir=".") -> Stage2Result:
    """Instruction-tune ``model`` in place on LLaVA records; write checkpoints, metrics and
    ``out_dir/trained.safetensors`` (the trained parts)."""
    from .stage1 import TrainLog

    config = config or Stage2Config()
    out_dir = Path(out_dir)
    records = list(records)
    check_records(records, config.image_folder)
    model.use_expert = config.expert  # the expert's tokens are in the sequences only when True
    model.config.single_view = config.single_view  # the processor reads it; the parts file records it
    if config.notes and model.reader is None:
        raise ValueError("notes=True needs a defect reader in the model: load reader.safetensors first "
                         "(adkit train reader; --load FILE)")
    model.config.notes = config.notes  # the collator writes each note; the parts file records it
    trainable = prepare_trainable(model, config)
    processor = model.processor
    if config.label_rule != processor.label_rule:
        processor = AnomalyOVProcessor(model.config, model.tokenizer, expert=model.use_expert,
                                       label_rule=config.label_rule)
    if config.gradient_checkpointing:
        model.mllm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    args = training_arguments(config, out_dir, world_size())
    model.train()
    hf.vision_tower(model.mllm).eval()
    model.expert.eval()
    trainer = Stage2Trainer(model=model, args=args, train_dataset=records,
                            data_collator=Stage2Collator(processor, config.image_folder,
                                                         notes=model.write_notes if config.notes else None))
    trainer.labelled_logits = config.labelled_logits
    trainer.lora = dataclasses.asdict(lora_config(config)) if config.llm == "lora" else None
    if trainer.lora is not None:
        trainer.lora = {k: (sorted(v) if isinstance(v, set) else v) for k, v in trainer.lora.items()
                        if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")}
    resume = config.resume_from
    if resume == "latest":  # the newest *complete* checkpoint-N, not the Trainer's newest folder
        resume = str(newest_complete(out_dir.glob("checkpoint-*"), out_dir))
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out_dir))
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # drop the autocast forward of bf16
    model.eval()
    log = TrainLog(out_dir, enabled=trainer.args.should_save)
    for row in trainer.state.log_history:
        if "loss" in row:
            log.step(step=row["step"], epoch=row.get("epoch"), loss=row["loss"], lr=row.get("learning_rate"))
        elif any(k.startswith("eval_") for k in row):
            log.epoch(**row)
    log.write(title=f"stage 2 · {model.config.name} · llm={config.llm} · global batch {config.batch_size}")
    if trainer.args.should_save:
        (out_dir / "stage2_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
    return Stage2Result(out_dir=out_dir, weights_path=out_dir / PARTS_FILE, global_step=trainer.state.global_step,
                        log_history=list(trainer.state.log_history), trainable=trainable,
                        world_size=trainer.args.world_size)
