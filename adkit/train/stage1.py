"""Stage 1: train the anomaly expert on a frozen tower (paper §3.5 / §5.1; docs/architecture.md §4).

Recipe: only ``model.expert`` trains; balanced BCE on the image score with class weights
N / (2·N_c); AdamW lr 1e-4; ``CosineAnnealingWarmRestarts`` with T_0 = half an epoch in
steps; 2 epochs; global batch 128; the same preprocessing as stage 2 (the model's processor).
No pixel loss: the maps learn to localise from the image label alone. Zero-shot protocol:
validation categories are never trained on (``val_samples`` hold the held-out categories).

Runs on 1 or N processes with ``accelerate.Accelerator`` (DDP over the expert only). The
global batch is split rank-major and into micro-batches; each sample's loss is divided by the
global batch size, so 1 process and N processes compute the same gradient. Data order is a
function of (seed, epoch) alone and the checkpoint holds optimizer, scheduler, RNG and step,
so a resumed run reproduces an uninterrupted one bit for bit (same process count).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import hf
from ..data.records import AnomalySample, DataError
from .checkpoints import find_stage1, load_stage1, save_stage1
from .features import FeatureCache, tower_features
from .launch import Stage1Config


@dataclass
class Stage1Result:
    out_dir: Path
    expert_path: Path  # safetensors with keys ``expert.*`` (load with load_trained_parts)
    checkpoint: Path  # last checkpoint folder
    global_step: int
    completed: bool  # False when stopped by max_steps
    steps: list[dict]  # per step: step, epoch, loss, lr
    epochs: list[dict]  # per epoch: epoch, step, val_auroc (macro), per-category AUROC


def class_weights(labels: Sequence[int]) -> dict[int, float]:
    """Balanced BCE weights w_c = N / (2·N_c) over the training set (paper §3.5, §5.1)."""
    y = np.asarray(labels)
    n = len(y)
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    if min(counts.values()) == 0:
        raise DataError(f"stage 1 needs normal and anomalous training images, got {counts[0]} normal "
                        f"and {counts[1]} anomalous")
    return {c: n / (2 * k) for c, k in counts.items()}


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor, weights: dict[int, float], denominator: float):
    """Σ_i w_{y_i} · BCE(logit_i, y_i) / denominator (the global batch size)."""
    w = torch.where(labels > 0.5, weights[1], weights[0]).to(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), weight=w, reduction="sum") / denominator


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch ``epoch``: a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def expert_inputs(model, samples, cache: FeatureCache | None, device):
    """(final, levels, split) for a micro-batch: from the cache, or tiles → frozen tower."""
    if cache is not None:
        return cache.load(samples, device)
    batch = model.processor.images([s.load_image() for s in samples])
    final, levels = tower_features(model, batch.pixel_values, device)
    return final, levels, batch.split_sizes.tolist()


@torch.no_grad()
def predict_scores(model, samples, cache=None, device=None, batch_size: int = 16) -> np.ndarray:
    """Expert anomaly scores [len(samples)] (eval mode, no gradient)."""
    expert = model.expert
    was_training = expert.training
    expert.eval()
    out = []
    for i in range(0, len(samples), batch_size):
        final, levels, split = expert_inputs(model, samples[i:i + batch_size], cache, device)
        out.append(expert(final, levels, split).scores.float().cpu())
    expert.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def validate(model, samples, cache=None, device=None, batch_size: int = 16) -> dict:
    """Image AUROC per held-out category (categories holding both classes) and their mean."""
    from ..eval.metrics import auroc, macro, per_class

    if not samples:
        return {}
    scores = predict_scores(model, samples, cache, device, batch_size)
    labels = np.array([s.label for s in samples])
    cats = np.array([s.category for s in samples])
    usable = [c for c in sorted(set(cats)) if len(set(labels[cats == c])) == 2]
    if not usable:
        return {}
    keep = np.isin(cats, usable)
    per = per_class(auroc, labels[keep], scores[keep], cats[keep])
    return {"val_auroc": macro(per), **{f"auroc/{k}": v for k, v in per.items()}}


@torch.no_grad()
def prior_statistics(model, samples, cache=None, device=None, batch_size: int = 16) -> None:
    """Set the self-similarity prior's standardisation (patch distances and image statistics of
    the training images) before stage 1; nothing to do for the official expert."""
    prior = model.expert.prior
    if prior is None:
        return
    from ..expert import split_index

    dists, stats = [], []
    for i in range(0, len(samples), batch_size):
        _, levels, split = expert_inputs(model, samples[i:i + batch_size], cache, device)
        d = prior.distances(levels, split)  # [N, P]
        _, image_index = split_index(split, device=d.device)
        dists.append(d.flatten().cpu())
        stats.append(prior.image_statistic(d, image_index, len(split)).cpu())
    prior.set_statistics(torch.cat(dists), torch.cat(stats))


def optimizer_groups(model, config: Stage1Config) -> list[dict]:
    """AdamW groups: the expert at ``lr``; the prior's gains and biases at ``lr × prior_lr_scale``
    (O(1) scalars that would barely move at the expert's learning rate)."""
    prior = model.expert.prior
    scalars = [] if prior is None else [p for p in prior.parameters() if p.requires_grad]
    ids = {id(p) for p in scalars}
    rest = [p for p in model.expert.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": rest}]
    if scalars:
        groups.append({"params": scalars, "lr": config.lr * config.prior_lr_scale, "weight_decay": 0.0})
    return groups


def freeze_for_stage1(model) -> list[torch.nn.Parameter]:
    """requires_grad only on the expert; returns its parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.expert.parameters():
        p.requires_grad_(True)
    frozen_ok = all(not p.requires_grad for n, p in model.named_parameters() if not n.startswith("expert."))
    assert frozen_ok, "stage 1 must train the expert only"
    return list(model.expert.parameters())


# ---------------------------------------------------------------------------- checkpoints


# save_checkpoint / find_checkpoint / load_checkpoint live in adkit/train/checkpoints.py: a
# completion marker is written last and "latest" resumes from the newest complete checkpoint.
save_checkpoint, find_checkpoint, load_checkpoint = save_stage1, find_stage1, load_stage1


# ---------------------------------------------------------------------------- training


def train_stage1(model, train_samples: Sequence[AnomalySample], val_samples: Sequence[AnomalySample],
                 config: Stage1Config | None = None, out_dir=".") -> Stage1Result:
    """Train ``model.expert`` in place; write checkpoints, metrics (CSV/JSON/PNG) and
    ``out_dir/expert.safetensors``. Run it under torchrun/accelerate for N processes."""
    from accelerate import Accelerator

    config = config or Stage1Config()
    out_dir = Path(out_dir)
    train_samples, val_samples = list(train_samples), list(val_samples)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    world, rank, device = acc.num_processes, acc.process_index, acc.device
    G, micro = config.batch_size, config.micro_batch_size
    if G % world or (G // world) % micro:
        raise ValueError(f"global batch {G} must split into {world} process(es) × micro-batches of {micro}")
    steps_per_epoch = len(train_samples) // G
    if steps_per_epoch < 1:
        raise DataError(f"stage 1 has {len(train_samples)} training images, fewer than one global batch ({G}); "
                        "lower batch_size")
    weights = class_weights([s.label for s in train_samples])
    freeze_for_stage1(model)
    tower, expert = hf.vision_tower(model.mllm), model.expert
    home = next(tower.parameters()).device, next(expert.parameters()).device
    tower.to(device).eval()
    expert.to(device).train()

    cache = None
    if config.feature_cache:
        cache = FeatureCache(config.feature_cache, model, config.cache_dtype)
        everything = train_samples + val_samples
        cache.build(everything[rank::world], batch_size=micro, device=device, progress=config.progress and acc.is_main_process)
        acc.wait_for_everyone()
        cache.refresh()

    if not config.resume_from:  # a resumed run restores the statistics with the weights
        prior_statistics(model, train_samples, cache, device, micro)
    ddp = acc.prepare_model(expert)
    optimizer = torch.optim.AdamW(optimizer_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    t0 = max(1, int(steps_per_epoch * config.restart_fraction))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0)
    log = TrainLog(out_dir, enabled=acc.is_main_process)
    global_step = 0
    if config.resume_from:
        state = load_checkpoint(find_checkpoint(out_dir, config.resume_from), model, optimizer, scheduler)
        global_step = state["global_step"]
        log.restore(state["log"])
    total = steps_per_epoch * config.epochs
    stop_at = min(total, config.max_steps) if config.max_steps else total
    bar = None
    if config.progress and acc.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=global_step, desc="stage 1", leave=False)

    def checkpoint():
        path = out_dir / "checkpoints" / f"step-{global_step:06d}"
        if acc.is_main_process:
            save_checkpoint(path, model, optimizer, scheduler,
                            {"global_step": global_step, "config": dataclasses.asdict(config), "log": log.state(),
                             "class_weights": weights, "steps_per_epoch": steps_per_epoch, "world_size": world})
        acc.wait_for_everyone()
        return path

    last = None
    while global_step < stop_at:
        epoch, step = divmod(global_step, steps_per_epoch)
        order = epoch_order(len(train_samples), config.seed, epoch)
        share = order[step * G:(step + 1) * G].view(world, G // world)[rank]  # [G] → [world, G/world] → mine
        chunks = share.split(micro)
        loss_sum = torch.zeros((), device=device)
        for k, idx in enumerate(chunks):
            samples = [train_samples[i] for i in idx.tolist()]
            final, levels, split = expert_inputs(model, samples, cache, device)
            labels = torch.tensor([s.label for s in samples], device=device)
            sync = k == len(chunks) - 1
            with nullcontext() if sync else acc.no_sync(ddp):
                out = ddp(final, levels, split)
                loss = balanced_bce(out.logits, labels, weights, G)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"stage 1: non-finite loss at step {global_step} (images "
                                             f"{[s.id for s in samples]}); try ExpertConfig(eps=1e-6)")
                acc.backward(loss * world)  # DDP averages over processes; × world keeps Σ/G
            loss_sum += loss.detach()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        global_step += 1
        loss_value = float(acc.reduce(loss_sum, "sum")) if world > 1 else float(loss_sum)
        log.step(step=global_step, epoch=epoch + (step + 1) / steps_per_epoch, loss=loss_value, lr=lr)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        end_of_epoch = global_step % steps_per_epoch == 0
        if end_of_epoch:
            val = validate(model, val_samples, cache, device, micro) if acc.is_main_process else {}
            log.epoch(epoch=epoch + 1, step=global_step, **val)
        if end_of_epoch or global_step == stop_at or (config.save_steps and global_step % config.save_steps == 0):
            last = checkpoint()
    if bar is not None:
        bar.close()
    if last is None:  # resumed at the end: nothing new to save
        last = find_checkpoint(out_dir, "latest")
    completed = global_step >= total
    expert_path = out_dir / "expert.safetensors"
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (expert_path).write_bytes((last / "expert.safetensors").read_bytes())
        log.write(title=f"stage 1 · {model.config.name} · global batch {G} on {world} process(es)")
    acc.wait_for_everyone()
    tower.to(home[0])
    expert.to(home[1]).eval()
    return Stage1Result(out_dir=out_dir, expert_path=expert_path, checkpoint=last, global_step=global_step,
                        completed=completed, steps=log.steps, epochs=log.epochs)


# ---------------------------------------------------------------------------- metrics


class TrainLog:
    """Per-step and per-epoch metrics → ``steps.csv``, ``epochs.csv``, ``metrics.json`` and a
    ``training.png`` plot (loss, lr, validation AUROC per epoch). Stage 2 reuses it."""

    def __init__(self, out_dir, enabled: bool = True):
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.steps: list[dict] = []
        self.epochs: list[dict] = []

    def step(self, **row) -> None:
        self.steps.append(row)

    def epoch(self, **row) -> None:
        self.epochs.append(row)

    def state(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs}

    def restore(self, state: dict) -> None:
        self.steps, self.epochs = list(state["steps"]), list(state["epochs"])

    def write(self, title: str = "") -> dict[str, Path]:
        if not self.enabled:
            return {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"steps": self.out_dir / "steps.csv", "epochs": self.out_dir / "epochs.csv",
                 "json": self.out_dir / "metrics.json", "plot": self.out_dir / "training.png"}
        for rows, key in ((self.steps, "steps"), (self.epochs, "epochs")):
            cols = list(dict.fromkeys(k for r in rows for k in r))
            with open(paths[key], "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
        paths["json"].write_text(json.dumps(self.state(), indent=1))
        self.plot(title).savefig(paths["plot"], dpi=90, bbox_inches="tight")
        return paths

    def plot(self, title: str = ""):
        """Loss, learning rate and validation curves as a matplotlib ``Figure``.

        Built without pyplot, so the caller's backend is never switched (a notebook keeps
        drawing inline after it) and nothing opens a window; ``display(fig)`` shows it in
        Jupyter and ``fig.savefig`` writes it anywhere."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12, 3))
        axes = fig.subplots(1, 3)
        s = [r["step"] for r in self.steps if "loss" in r]
        axes[0].plot(s, [r["loss"] for r in self.steps if "loss" in r])
        axes[0].set(xlabel="step", ylabel="loss", title="training loss")
        axes[1].plot([r["step"] for r in self.steps if "lr" in r], [r["lr"] for r in self.steps if "lr" in r])
        axes[1].set(xlabel="step", ylabel="lr", title="learning rate")
        keys = sorted({k for r in self.epochs for k in r if k.startswith(("val_", "auroc/", "eval_"))})
        for k in keys:
            pts = [(r["epoch"], r[k]) for r in self.epochs if k in r]
            axes[2].plot(*zip(*pts), marker="o", lw=2.5 if k.startswith(("val_", "eval_")) else 1, label=k)
        axes[2].set(xlabel="epoch", title="validation")
        if keys:
            axes[2].legend(fontsize=7)
        else:  # a run without validation data (stage 2 on training records only) says so
            axes[2].text(0.5, 0.5, "no validation in this run", ha="center", va="center", transform=axes[2].transAxes)
            axes[2].set(xticks=[], yticks=[])
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return fig
