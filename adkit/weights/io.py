"""Hugging Face-style folders of a whole :class:`adkit.AnomalyOV` (``save_pretrained`` / ``from_pretrained``).

A folder is self-contained:

    adkit_config.json                 preset name, geometry, the transformers sub-configs
    model.safetensors                 every weight: the base MLLM under ``mllm.``, the expert under
                                      ``expert.`` — or, above ``max_shard_size``,
    model-0000i-of-0000n.safetensors  shards (``huggingface_hub.save_torch_model``; tied
    + model.safetensors.index.json    embeddings are stored once)
    tokenizer.json, tokenizer_config.json, chat_template.jinja      the tokenizer
    generation_config.json, README.md the decoding defaults and a model card (:mod:`.card`)
    calibration.json                  verdict thresholds (:mod:`adkit.calibration`), when calibrated
    reader.safetensors                the expert notes' defect reader (:mod:`adkit.notes`), when the model has one

Safetensors only. Loading is strict: a key absent from the files is accepted only when it is
tied to (shares its storage with) a loaded one, e.g. ``mllm.lm_head.weight`` tied to the
embeddings; every other missing, unexpected or mis-shaped key is a :class:`CheckpointError`
naming it. ``dtype`` casts parameters and persistent buffers (``"auto"``: each as saved);
non-persistent buffers the modules compute themselves (RoPE frequencies) keep their dtype, as
in transformers' own loading. Older folders (``adkit_config.json`` + ``model.safetensors``) load
with the preset's tokenizer and default thresholds.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from transformers import AutoConfig

from .. import validate
from ..config import AnomalyOVConfig, Geometry
from .official import CheckpointError

CONFIG_FILE, WEIGHTS_FILE = "adkit_config.json", "model.safetensors"
INDEX_FILE, TOKENIZER_FILE, CALIBRATION_FILE = "model.safetensors.index.json", "tokenizer.json", "calibration.json"
READER_FILE = "reader.safetensors"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float64": torch.float64}
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


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


# ---------------------------------------------------------------------------- save


def save_anomalyov(model, path, max_shard_size: int | str = "2GB") -> Path:
    from huggingface_hub import save_torch_model

    from .card import write_card_files

    if any(".lora_A." in n for n, _ in model.named_parameters()):
        raise ValueError("the model holds unmerged LoRA layers, which a fresh model cannot load: merge them "
                         "(adkit.weights.parts.merge_lora_into_base) or export them for peft "
                         "(adkit.weights.parts.export_peft_adapter)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.iterdir():  # weights of an earlier save (another sharding) must not linger
        if old.name in (WEIGHTS_FILE, INDEX_FILE) or _SHARD.match(old.name):
            old.unlink()
    (path / CONFIG_FILE).write_text(json.dumps(config_to_dict(model.config), indent=2, default=list))
    save_torch_model(model, path, max_shard_size=max_shard_size, metadata={"format": "pt"})
    model.tokenizer.save_pretrained(str(path))
    write_card_files(model, path)
    calibration = path / CALIBRATION_FILE
    if model.calibration.calibrated or model.calibration.methods:
        model.calibration.save(calibration)
    elif calibration.is_file():
        calibration.unlink()
    reader = path / READER_FILE
    if model.reader is not None:
        model.reader.save(reader)
    elif reader.is_file():
        reader.unlink()
    return path


# ---------------------------------------------------------------------------- load


def load_anomalyov(cls, path, dtype=None, device_map=None, **kw):
    path = Path(path)
    dtype, device = resolve_dtype(dtype), resolve_device(device_map)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not an adkit checkpoint folder: {CONFIG_FILE} is missing")
    files = weight_files(path)
    raw = validate.read_json(path / CONFIG_FILE, CheckpointError, "adkit config")
    try:
        config = config_from_dict(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE} is malformed: {type(exc).__name__}: {exc}") from None
    if kw.get("tokenizer") is None:
        kw["tokenizer"] = read_tokenizer(path)
    model = cls.from_config(config, seed=None, **kw)
    load_weights(model, path, files)
    model.calibration = read_calibration(path) or model.calibration
    if (path / READER_FILE).is_file():
        from .parts import load_trained_parts

        load_trained_parts(model, path / READER_FILE)
    elif config.notes:
        raise CheckpointError(f"{path}: the model writes expert notes (config notes: true) but {READER_FILE} is missing")
    model.untrained = ()  # every weight came from the checkpoint
    if dtype == "auto":
        saved = saved_dtypes(files)
        cast_floating(model, saved.get)
    elif dtype is not None:
        cast_floating(model, lambda name: dtype)
    if device is not None:
        model.to(device)
    return model.eval()


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a folder: the shards its index names, else ``model.safetensors``."""
    index = path / INDEX_FILE
    if index.is_file():
        raw = validate.read_json(index, CheckpointError, "shard index")
        try:
            shards = sorted(set(raw["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index} is malformed: no 'weight_map' of shard names ({exc!r})") from None
        odd = [s for s in shards if not isinstance(s, str) or Path(s).name != s or not s.endswith(".safetensors")]
        if odd:
            raise CheckpointError(f"{index} names files that are not safetensors shards of this folder: {odd[:5]}")
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            raise CheckpointError(f"{index} names shard files that are missing: {', '.join(absent)}")
        return [path / s for s in shards]
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    raise CheckpointError(f"{path} is not an adkit checkpoint folder: {WEIGHTS_FILE} is missing "
                          f"(nor is {INDEX_FILE}, the index of a sharded one)")


def load_weights(model, path: Path, files: list[Path]) -> None:
    """Strict loading of ``files`` into ``model``, one file at a time; keys tied to a loaded key may
    be absent. (Read with safetensors directly: ``huggingface_hub.load_torch_model`` refuses files
    without its ``format`` metadata, which older adkit folders lack.)"""
    loaded: set[str] = set()
    for file in files:
        _, state = validate.read_safetensors(file, CheckpointError)  # names the file; NaN/inf refused
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a shape mismatch
            raise CheckpointError(f"cannot load {file}: {' '.join(str(exc).split())}") from None
        loaded |= set(state)
        del state
    own = set(model.state_dict())
    missing, unexpected = untied_missing(model, own - loaded), sorted(loaded - own)
    if missing or unexpected:
        where = path / INDEX_FILE if (path / INDEX_FILE).is_file() else files[0]
        raise CheckpointError(f"{where} does not match the model:\n"
                              f"  missing keys ({len(missing)}): {', '.join(missing[:20])}\n"
                              f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")


def untied_missing(model, missing) -> list[str]:
    """``missing`` keys less those sharing storage with a key that was loaded (tied weights)."""
    state = model.state_dict()
    missing = set(missing)

    def storage(t):
        return t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride())

    loaded = {storage(t) for k, t in state.items() if k not in missing and t.numel()}
    return sorted(k for k in missing if not (state[k].numel() and storage(state[k]) in loaded))


def read_tokenizer(path: Path):
    """The folder's tokenizer, or None (older folders: the preset's offline tokenizer is used)."""
    if not (path / TOKENIZER_FILE).is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path / TOKENIZER_FILE}: the tokenizer cannot be read: {exc}") from exc


def read_calibration(path: Path):
    """The folder's verdict thresholds, or None when it has none."""
    from ..calibration import Calibration

    if not (path / CALIBRATION_FILE).is_file():
        return None
    try:
        return Calibration.load(path / CALIBRATION_FILE)
    except ValueError as exc:  # its message names the file
        raise CheckpointError(str(exc)) from exc


# ---------------------------------------------------------------------------- dtype and device


def resolve_dtype(dtype):
    """None, ``"auto"`` or a floating torch dtype, from a dtype or its name ("bfloat16", "bf16", ...)."""
    if dtype is None or dtype == "auto" or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype must be a floating torch dtype, one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")


def resolve_device(device_map) -> torch.device | None:
    """One device for the whole model: None (stay on the CPU), "auto", "cpu", "cuda", "cuda:1", 0, a torch.device."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        raise ValueError(f"device_map={device_map!r}: per-module device maps are not supported; an AnomalyOV "
                         "runs on one device: pass 'auto', 'cpu', 'cuda', 'cuda:1' or a torch.device")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else
                            "mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(device_map)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device_map must be None, 'auto', a device name or a torch.device, "
                         f"got {device_map!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device_map={device_map!r}: CUDA is not available on this machine")
    return device


def saved_dtypes(files: list[Path]) -> dict[str, torch.dtype]:
    """Floating dtype of every tensor in ``files``, read from their headers only."""
    from safetensors import safe_open

    out = {}
    for file in files:
        try:
            with safe_open(str(file), "pt") as fh:
                for key in fh.keys():
                    dtype = _SAFETENSORS_DTYPES.get(fh.get_slice(key).get_dtype())
                    if dtype is not None:
                        out[key] = dtype
        except Exception as exc:  # SafetensorError is not a ValueError: name the file
            raise CheckpointError(f"{file}: not a readable safetensors file: {' '.join(str(exc).split())}") from None
    return out


def cast_floating(model, dtype_of) -> None:
    """Cast each floating parameter and persistent buffer ``name`` to ``dtype_of(name)`` (None: keep).
    Tied parameters stay tied (their shared ``Parameter`` is cast in place)."""
    persistent = set(model.state_dict())
    for prefix, module in model.named_modules():
        for name, p in module.named_parameters(prefix=prefix, recurse=False):
            dtype = dtype_of(name)
            if dtype is not None and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
        for name, b in list(module._buffers.items()):
            full = f"{prefix}.{name}" if prefix else name
            dtype = dtype_of(full) if full in persistent else None
            if b is not None and dtype is not None and b.is_floating_point() and b.dtype != dtype:
                module._buffers[name] = b.to(dtype)
