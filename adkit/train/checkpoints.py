"""Training checkpoints that can be trusted: a completion marker written last, and resume from
the newest *complete* checkpoint (docs/architecture.md §4, training).

A run killed while it saves (or a disk that fills up) leaves a checkpoint folder whose files
are cut short. Resuming from it would stop the run (``OSError: [Errno 22]`` from a truncated
``trainer_state.pt``), and the checkpoint before it — complete — would be ignored. So every
save ends with :data:`MARKER`, a small JSON file listing the folder's files and their sizes,
written atomically after everything else. :func:`newest_complete` picks the newest folder
whose marker is present and whose files still have the listed sizes, and says in one line
which newer folders it skipped and why. Nothing is deleted: a skipped folder stays for a
person to inspect.

Stage 1 (``step-000042``, :mod:`adkit.train.stage1`) saves and loads through this module;
stage 2 (``transformers.Trainer``'s ``checkpoint-42``, :mod:`adkit.train.stage2`) writes the
marker after the Trainer's own save and resolves ``resume_from="latest"`` here instead of
letting the Trainer take the newest folder blindly.
"""

from __future__ import annotations

import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .. import validate

MARKER = "checkpoint-complete.json"
_NUMBER = re.compile(r"(\d+)$")


def write_marker(folder) -> Path:
    """Mark ``folder`` complete: call it after every other file of the checkpoint is written."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER and not p.name.endswith(".tmp")}
    tmp = folder / (MARKER + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"format": "adkit-checkpoint", "files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(folder / MARKER)
    return folder / MARKER


def clear_marker(folder) -> None:
    """Before (re)writing into ``folder``: it is not complete until :func:`write_marker` runs again."""
    (Path(folder) / MARKER).unlink(missing_ok=True)


def incomplete_reason(folder) -> str | None:
    """None when ``folder`` is a complete checkpoint, else why not (in words)."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return f"no {MARKER} (interrupted while saving, or written by an older adkit)"
    try:
        files = validate.read_json(marker, what="checkpoint marker")["files"]
        listed = {str(k): int(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"its {MARKER} is unreadable ({exc})"
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes, {size:,} when saved (truncated or overwritten)"
    return None


def _step(path: Path) -> int:
    m = _NUMBER.search(path.name)
    return int(m.group(1)) if m else -1


def newest_complete(folders: Iterable[Path], where) -> Path:
    """The complete checkpoint with the highest step among ``folders``; each newer incomplete one
    is skipped with one warning line saying which and why. None complete: FileNotFoundError."""
    found = sorted((Path(f) for f in folders if Path(f).is_dir()), key=_step, reverse=True)
    skipped = []
    for folder in found:
        reason = incomplete_reason(folder)
        if reason is None:
            if skipped:
                warnings.warn(f"resume_from='latest': resuming from {folder.name}, skipping "
                              + "; ".join(f"{f.name} ({r})" for f, r in skipped), stacklevel=2)
            return folder
        skipped.append((folder, reason))
    if not skipped:
        raise FileNotFoundError(f"resume_from='latest' but {where} holds no checkpoint")
    raise FileNotFoundError(f"resume_from='latest' but {where} holds no complete checkpoint: "
                            + "; ".join(f"{f.name} ({r})" for f, r in skipped)
                            + " — pass resume_from=<folder> to load one anyway")


# ---------------------------------------------------------------------------- stage 1

STAGE1_WEIGHTS, STAGE1_STATE = "expert.safetensors", "trainer_state.pt"


def save_stage1(path: Path, model, optimizer, scheduler, state: dict) -> None:
    """A stage-1 checkpoint: expert weights, optimizer, scheduler, every RNG and the run state,
    then the completion marker."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    clear_marker(path)
    save_file({f"expert.{k}": v.detach().cpu().contiguous() for k, v in model.expert.state_dict().items()},
              str(path / STAGE1_WEIGHTS), metadata={"format": "adkit-parts", "parts": "expert",
                                                    "preset": str(model.config.name)})
    np_state = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()),
                                                    *np_state[2:]), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                "state": state}, path / STAGE1_STATE)
    (path / "state.json").write_text(json.dumps(state, indent=1, default=str))
    write_marker(path)


def find_stage1(out_dir: Path, resume_from: str) -> Path:
    """``resume_from`` as a folder; ``"latest"``: the newest complete ``out_dir/checkpoints/step-*``."""
    if resume_from != "latest":
        return Path(resume_from)
    return newest_complete((out_dir / "checkpoints").glob("step-*"), out_dir / "checkpoints")


def load_stage1(path: Path, model, optimizer, scheduler) -> dict:
    """Restore a stage-1 checkpoint into model, optimizer, scheduler and the RNGs; the run state.
    A damaged file is an error naming it (:mod:`adkit.validate`)."""
    from ..weights.official import CheckpointError

    if not (path / STAGE1_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a stage-1 checkpoint ({STAGE1_STATE} missing)")
    _, weights = validate.read_safetensors(path / STAGE1_WEIGHTS, CheckpointError)
    try:
        model.expert.load_state_dict({k[len("expert."):]: v for k, v in weights.items()}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path / STAGE1_WEIGHTS} does not fit this expert: {' '.join(str(exc).split())}") from None
    try:
        ckpt = torch.load(path / STAGE1_STATE, weights_only=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng, state = ckpt["rng"], ckpt["state"]
    except Exception as exc:  # truncated archive ([Errno 22]), wrong contents
        from ..weights.official import pth_problem

        reason = pth_problem(path / STAGE1_STATE, exc) if not isinstance(exc, (KeyError, ValueError)) else repr(exc)
        raise CheckpointError(f"cannot resume from {validate.describe(path / STAGE1_STATE)}: {reason}") from None
    torch.set_rng_state(rng["torch"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
