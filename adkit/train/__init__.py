"""Training of Anomaly-OV (paper §3.5, §5.1; docs/architecture.md §4): stage 1 (the expert) and stage 2
(visual instruction tuning), on one process or many, with no home-made engine.

    stage1.py   train_stage1: frozen tower, balanced BCE, AdamW + warm restarts, exact resume,
                accelerate DDP; features.py caches the frozen tower's features on disk
    stage2.py   train_stage2: transformers.Trainer on LLaVA JSON (collate.py), full LLM or LoRA,
                trained parts saved as one safetensors file (load_trained_parts)
    launch.py   Stage1Config / Stage2Config, the command line of a run, and the entry point
                ``python -m adkit.train.launch`` (≡ ``adkit train``) for torchrun / accelerate

Scale-out commands for the paper presets (one node of 8 GPUs; run from the repository root,
where ``configs/`` lives; ``--nnodes``/``--num_machines`` for more nodes):

Stage 1, paper-0.5b (global batch 128 = 8 GPUs × 16 images, 2 epochs, lr 1e-4)::

    torchrun --nproc_per_node 8 -m adkit.train.launch stage1 --preset paper-0.5b \\
        --model-path $ADKIT_LLAVA_PATH --data DIR --val-categories A,B --out runs/stage1-05b \\
        --micro-batch-size 16 --feature-cache runs/features
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 8 \\
        -m adkit.train.launch stage1 ...  (same flags)

Stage 2, paper-0.5b (global batch 16 as the official script, ZeRO-2, bf16, lr 1e-5)::

    torchrun --nproc_per_node 8 -m adkit.train.launch stage2 --preset paper-0.5b \\
        --model-path $ADKIT_LLAVA_PATH --expert-path $ADKIT_EXPERT_PATH --data anomaly_instruct.json \\
        --image-folder DIR --out runs/stage2-05b --micro-batch-size 2 --gradient-checkpointing \\
        --deepspeed configs/deepspeed/zero2.json
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 8 \\
        -m adkit.train.launch stage2 ...  (same flags without --deepspeed)

Stage 2, paper-7b: as above with ``--preset paper-7b --batch-size 32 --micro-batch-size 1`` and
``configs/deepspeed/zero3.json`` (or ``deepspeed_zero3.yaml``) when ZeRO-2 does not fit.
``Stage1Config(...).launch_command(nproc=8, preset=..., data=..., out=...)`` and
``Stage2Config(...).launch_command(nproc=8, deepspeed="zero2", ...)`` print these for any config.
"""

from __future__ import annotations

from .launch import Stage1Config, Stage2Config

__all__ = ["Stage1Config", "Stage2Config", "train_stage1", "train_stage2", "load_trained_parts",
           "save_trained_parts", "FeatureCache", "Stage2Collator"]

_LAZY = {"train_stage1": "stage1", "Stage1Result": "stage1", "train_stage2": "stage2", "Stage2Result": "stage2",
         "load_trained_parts": "stage2", "save_trained_parts": "stage2", "FeatureCache": "features",
         "Stage2Collator": "collate"}


def __getattr__(name):  # heavy modules (torch, transformers) load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
