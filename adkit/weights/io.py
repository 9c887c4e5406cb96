"""Safetensors save/load of a whole :class:`adkit.AnomalyOV` (DESIGN §8: safetensors only).

A folder holds ``adkit_config.json`` (preset name, geometry, the transformers sub-configs)
and ``model.safetensors`` (base MLLM under ``mllm.``, expert under ``expert.``). Loading is
strict and reports missing/unexpected keys by name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_model, save_model
from transformers import AutoConfig

from ..config import AnomalyOVConfig, Geometry
from .official import CheckpointError

CONFIG_FILE, WEIGHTS_FILE = "adkit_config.json", "model.safetensors"


def config_to_dict(config: AnomalyOVConfig) -> dict:
    d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    d["vision"], d["text"] = config.vision.to_dict(), config.text.to_dict()
    d["geometry"] = dataclasses.asdict(config.geometry)
    return d


def config_from_dict(d: dict) -> AnomalyOVConfig:
    d = dict(d)
    for key in ("vision", "text"):
        sub = dict(d[key])
        d[key] = AutoConfig.for_model(sub.pop("model_type"), **sub)
    geo = d["geometry"]
    d["geometry"] = Geometry(**{k: tuple(v) if isinstance(v, list) else v for k, v in geo.items()})
    for key in ("feature_levels", "hint_levels", "hint_thresholds"):
        d[key] = tuple(d[key])
    return AnomalyOVConfig(**d)


def save_anomalyov(model, path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(config_to_dict(model.config), indent=2, default=list))
    save_model(model, str(path / WEIGHTS_FILE))  # handles tied embeddings


def load_anomalyov(cls, path, **kw):
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not an adkit checkpoint folder: {name} is missing")
    try:
        config = config_from_dict(json.loads((path / CONFIG_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is malformed: {exc}") from exc
    model = cls.from_config(config, seed=None, **kw)
    try:
        missing, unexpected = load_model(model, str(path / WEIGHTS_FILE), strict=False)
    except Exception as exc:  # header or size mismatch inside safetensors
        raise CheckpointError(f"cannot load {path / WEIGHTS_FILE}: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(f"{path / WEIGHTS_FILE} does not match the model:\n"
                              f"  missing keys ({len(missing)}): {', '.join(sorted(missing)[:20])}\n"
                              f"  unexpected keys ({len(unexpected)}): {', '.join(sorted(unexpected)[:20])}")
    model.untrained = ()  # every weight came from the checkpoint
    return model.eval()
