"""Run configurations and the scale-out entry point (docs/architecture.md §4 "Scale-out").

:class:`Stage1Config` and :class:`Stage2Config` hold every knob of a run (light dataclasses:
the CLI builds its flags from them without importing torch). No home-made engine: This module is ``adkit train ...`` under a launcher:

    torchrun --nproc_per_node 8 -m adkit.train.launch stage1 --preset paper-0.5b ...
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m adkit.train.launch stage1 ...
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml -m adkit.train.launch stage2 ...

Stage 1 runs under ``accelerate.Accelerator`` (DDP), stage 2 under ``transformers.Trainer``
(DDP, or DeepSpeed through ``--deepspeed configs/deepspeed/zero2.json``); both read the
launcher's environment (RANK, WORLD_SIZE, ...) and default to one process on one node.

:func:`command_line` turns a config object into the exact command, so a notebook's config
and the cluster run cannot drift apart (``Stage1Config.launch_command`` uses it).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass, field

from .. import validate

LAUNCHERS = ("torchrun", "accelerate", "python")
DEEPSPEED = {"zero2": "configs/deepspeed/zero2.json", "zero3": "configs/deepspeed/zero3.json"}
LLM_MODES = ("full", "lora", "frozen")
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # Qwen2 and Llama names


@dataclass
class Stage1Config:
    """Stage-1 hyper-parameters (docs/architecture.md §4 defaults). ``batch_size`` is the global batch."""

    epochs: int = 2
    batch_size: int = 128  # global: micro_batch_size × accumulation × processes
    micro_batch_size: int = 16  # images per forward per process
    lr: float = 1e-4
    weight_decay: float = 0.01  # torch's AdamW default (the paper does not state one)
    restart_fraction: float = 0.5  # CosineAnnealingWarmRestarts T_0 = this × steps per epoch
    seed: int = 0
    feature_cache: str | None = field(default=None, metadata={"type": str})  # folder; None = run the tower
    cache_dtype: str = "float16"
    max_steps: int | None = field(default=None, metadata={"type": int})  # stop (and checkpoint) early
    save_steps: int | None = field(default=None, metadata={"type": int})  # also checkpoint every N steps
    resume_from: str | None = field(default=None, metadata={"type": str})  # checkpoint dir or "latest"
    progress: bool = True
    prior_lr_scale: float = 100.0  # the prior's four O(1) gains/biases learn at lr × this (prior variant)

    def __post_init__(self):  # refuse values that mean nothing (adkit/validate.py), API and CLI alike
        for name in ("epochs", "batch_size", "micro_batch_size"):
            validate.count(getattr(self, name), name)
        for name in ("max_steps", "save_steps"):
            validate.optional_count(getattr(self, name), name)
        for name in ("lr", "restart_fraction", "prior_lr_scale"):
            validate.positive(getattr(self, name), name)
        validate.non_negative(self.weight_decay, "weight_decay")

    def launch_command(self, nproc: int = 8, nnodes: int = 1, launcher: str = "torchrun", **args) -> str:
        """The exact multi-process command for this config, e.g. ``nproc=8, preset="paper-0.5b",
        data="synthetic", out="runs/stage1"`` (see :mod:`adkit.train.launch`)."""
        return command_line("stage1", self, nproc=nproc, nnodes=nnodes, launcher=launcher, **args)


@dataclass
class Stage2Config:
    """Stage-2 hyper-parameters (docs/architecture.md §4 defaults). ``batch_size`` is the global batch."""

    epochs: float = 1.0
    batch_size: int = 16  # global: micro_batch_size × accumulation × processes
    micro_batch_size: int = 1
    lr: float = 1e-5
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    llm: str = "full"  # "full" | "lora" | "frozen"
    expert: bool = True  # False: train and run without the anomaly expert (the paper's ablation, Table 5)
    projector: bool = True
    image_newline: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = LORA_TARGETS
    label_rule: str = "official"  # or "assistant_only" (docs/architecture.md §2.5)
    image_folder: str | None = field(default=None, metadata={"type": str})  # LLaVA "image" paths are relative to it
    max_steps: int | None = field(default=None, metadata={"type": int})
    save_steps: int | None = field(default=None, metadata={"type": int})
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    bf16: bool = True  # mixed precision on CUDA and on CPUs with native bf16 (avx512_bf16 / AMX)
    single_view: bool = False  # each image as one base view, no anyres crops (recorded in the parts file)
    notes: bool = False  # "+ notes": the expert's note line after each image (adkit/notes.py; needs a --load reader)
    labelled_logits: bool = True  # LM head only where the next token is a target (same loss, less work)
    deepspeed: str | None = field(default=None, metadata={"type": str})  # configs/deepspeed/zero2.json
    seed: int = 0
    resume_from: str | None = field(default=None, metadata={"type": str})  # checkpoint dir or "latest"
    progress: bool = True

    def __post_init__(self):  # refuse values that mean nothing (adkit/validate.py), API and CLI alike
        for name in ("batch_size", "micro_batch_size", "lora_r", "logging_steps"):
            validate.count(getattr(self, name), name)
        for name in ("max_steps", "save_steps"):
            validate.optional_count(getattr(self, name), name)
        for name in ("epochs", "lr", "lora_alpha"):
            validate.positive(getattr(self, name), name)
        validate.probability(self.warmup_ratio, "warmup_ratio")
        validate.non_negative(self.weight_decay, "weight_decay")
        if validate.probability(self.lora_dropout, "lora_dropout") == 1.0:
            raise validate.ValidationError("lora_dropout must be below 1 (1 drops every input), got 1.0")

    def launch_command(self, nproc: int = 8, nnodes: int = 1, launcher: str = "torchrun",
                       deepspeed: str | None = None, **args) -> str:
        """The exact multi-process command for this config (see :mod:`adkit.train.launch`)."""
        return command_line("stage2", self, nproc=nproc, nnodes=nnodes, launcher=launcher,
                            deepspeed=deepspeed, **args)


def flag(field_name: str) -> str:
    """Config field → command-line flag: ``micro_batch_size`` → ``--micro-batch-size``."""
    return "--" + field_name.replace("_", "-")


def config_argv(config) -> list[str]:
    """The flags that rebuild ``config`` from its class defaults (fields that differ only)."""
    defaults = type(config)()
    argv = []
    for f in dataclasses.fields(config):
        if f.metadata.get("cli") is False:
            continue
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        if value == default:
            continue
        if isinstance(value, bool):
            argv.append(flag(f.name) if value else "--no-" + flag(f.name)[2:])
        elif value is None:
            raise ValueError(f"{f.name}=None cannot be written as a flag (its default is {default!r})")
        else:
            argv += [flag(f.name), str(value)]
    return argv


def command_line(stage: str, config, *, nproc: int = 1, nnodes: int = 1, launcher: str = "torchrun",
                 deepspeed: str | None = None, **args) -> str:
    """The shell command running ``stage`` with ``config`` on ``nnodes`` × ``nproc`` processes.

    ``args`` are the run's other flags (``preset="paper-0.5b", data="...", out="runs/x"``);
    ``deepspeed`` is ``"zero2"``/``"zero3"`` or a JSON path (stage 2 only).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if deepspeed is not None and stage != "stage2":
        raise ValueError("DeepSpeed is for stage 2 (the LLM); stage 1 trains a ~7M-parameter expert with DDP")
    if launcher == "torchrun":
        head = ["torchrun", "--nproc_per_node", str(nproc)]
        if nnodes > 1:
            head += ["--nnodes", str(nnodes), "--node_rank", "$NODE_RANK", "--rdzv_backend", "c10d",
                     "--rdzv_endpoint", "$MASTER_ADDR:29500"]
        head += ["-m", "adkit.train.launch"]
    elif launcher == "accelerate":
        yaml = ("configs/accelerate/deepspeed_zero2.yaml" if deepspeed == "zero2" else
                "configs/accelerate/deepspeed_zero3.yaml" if deepspeed == "zero3" else
                "configs/accelerate/single_gpu.yaml" if nproc * nnodes == 1 else "configs/accelerate/multi_gpu.yaml")
        head = ["accelerate", "launch", "--config_file", yaml, "--num_processes", str(nproc * nnodes)]
        if nnodes > 1:
            head += ["--num_machines", str(nnodes), "--machine_rank", "$NODE_RANK", "--main_process_ip", "$MASTER_ADDR"]
        head += ["-m", "adkit.train.launch"]
    else:
        if nproc * nnodes != 1:
            raise ValueError("launcher 'python' runs one process; use torchrun or accelerate for nproc > 1")
        head = ["python", "-m", "adkit.train.launch"]
    tail = []
    for key, value in args.items():
        if value is not None:
            tail += [flag(key), str(value)]
    if deepspeed is not None and launcher != "accelerate" and not getattr(config, "deepspeed", None):  # accelerate's yaml names the JSON itself
        tail += ["--deepspeed", DEEPSPEED.get(deepspeed, deepspeed)]
    words = head + [stage] + tail + config_argv(config)
    return " ".join(w if w.startswith("$") else shlex.quote(w) for w in words)


def main(argv=None) -> int:
    """``python -m adkit.train.launch stage1|stage2 ...`` ≡ ``adkit train stage1|stage2 ...``."""
    from ..cli import main as adkit_main

    return adkit_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
