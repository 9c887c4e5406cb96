"""Trained parts: the few parameters a training stage changes, in one safetensors file.

Stage 1 writes the expert (``expert.*``), stage 2 the projector, ``image_newline`` and LoRA
matrices (``...q_proj.lora_A.default.weight``) with the LoRA settings in the file's metadata.
:func:`load_trained_parts` puts them into a model of the same preset and merges LoRA into the
base weights (W ← W + (α/r)·B·A) with plain tensor algebra — no peft needed to *use* a
checkpoint, only to train one. The shipped ``small`` weights (``adkit/weights/small/``) are two
such files. :func:`export_peft_adapter` writes the LoRA alone in peft's layout
(``adapter_config.json`` + ``adapter_model.safetensors``) for ``PeftModel.from_pretrained`` on the
plain LLM; the projector, ``image_newline`` and expert stay in the kit's file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import torch

from .. import validate
from ..notes import READER_KIND, DefectReader
from .official import CheckpointError

__all__ = ["save_trained_parts", "load_trained_parts", "read_parts", "merge_lora_into_base", "lora_deltas", "base_with_parts",
           "export_peft_adapter"]

_LORA = re.compile(r"^(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def save_trained_parts(model, path, names: Sequence[str] | None = None, lora: dict | None = None,
                       state_dict: dict | None = None) -> Path:
    """Write the parameters ``names`` (default: those with requires_grad) to one safetensors file."""
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad] if names is None else list(names)
    state = model.state_dict()
    # a part travels whole: its persistent buffers too (e.g. the expert prior's statistics)
    parts = [pre for pre in _PART_PREFIXES.values() if any(n.startswith(pre) for n in names)]
    names += [k for k in state if k not in params and k not in names and any(k.startswith(pre) for pre in parts)]
    source = state_dict if state_dict is not None else state
    tensors = {n: source[n].detach().cpu().contiguous() for n in names}
    meta = {"format": "adkit-parts", "preset": str(model.config.name)}
    if lora is not None:
        meta["lora"] = json.dumps(lora)
    if any(n.startswith(_PART_PREFIXES["projector"]) for n in names):  # stage 2: how its images were laid out
        meta["single_view"] = json.dumps(bool(model.config.single_view))
        meta["notes"] = json.dumps(bool(model.config.notes))  # trained with the expert's note line (adkit.notes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_trained_parts(model, path, merge_lora: bool = True, *, _held_deltas: bool = False):
    """Load a parts file (stage 1 ``expert.safetensors`` or stage 2 ``trained.safetensors``) into
    ``model``. With ``merge_lora`` (default) LoRA matrices are merged into the base weights, so
    the model is a plain AnomalyOV again (no peft needed); ``merge_lora=False`` injects peft LoRA
    layers instead (to keep training). Every key in the file must exist in the model.

    The merge adds each layer's (α/r)·B·A through one scratch tensor per shape;
    ``_held_deltas`` is the former way (every delta built first, ~420 MB for ``small``), the same
    arithmetic, kept for ``benchmarks/bench_build.py`` and its equality test."""
    path = Path(path)
    meta, tensors = read_parts(path)
    if meta.get("adkit_part") == READER_KIND:  # the expert notes' defect reader (adkit.notes)
        try:
            reader = DefectReader.from_parts(meta, tensors, path)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        width = model.config.vision.hidden_size * len(reader.levels)
        top = model.config.vision.num_hidden_layers
        if any(not 0 <= lv <= top for lv in reader.levels):
            raise CheckpointError(f"{path}: the defect reader reads hidden_states{list(reader.levels)}, this "
                                  f"model's tower has hidden_states[0..{top}] ({model.config.name})")
        if reader.weight.shape[1] != width:
            raise CheckpointError(f"{path}: the defect reader reads {reader.weight.shape[1]} features, this "
                                  f"model's levels give {width} ({model.config.name})")
        model.reader = reader
        return model
    lora = lora_settings(meta, path)
    if lora is not None and merge_lora and not _has_lora(model):
        pairs, scale = _lora_pairs(tensors), _lora_scale(lora)  # base weight name → (B, A)
        tensors = {k: v for k, v in tensors.items() if not _LORA.match(k)}
        own = model.state_dict()
        missing = sorted(set(pairs) - set(own))
        if missing:
            raise CheckpointError(f"{path} does not fit this model ({model.config.name}): LoRA targets "
                                  f"without a base weight ({len(missing)}): {', '.join(missing[:10])}")
        wrong = [f"{n} {tuple(own[n].shape)} vs B·A {(b.shape[0], a.shape[1])}" for n, (b, a) in pairs.items()
                 if own[n].shape != (b.shape[0], a.shape[1])]
        if wrong:
            raise CheckpointError(f"{path}: LoRA shape mismatch: {'; '.join(wrong[:5])}")
        buffers: dict = {}  # one scratch delta per shape: W += (α/r)·B·A without holding every delta
        held = {name: _delta(b, a, scale) for name, (b, a) in pairs.items()} if _held_deltas else {}
        with torch.no_grad():
            for name, (b, a) in pairs.items():
                delta = held.get(name)
                if delta is None:
                    if own[name].shape not in buffers:
                        buffers[own[name].shape] = torch.empty(own[name].shape, dtype=torch.float32)
                    delta = _delta(b, a, scale, out=buffers[own[name].shape])
                own[name].add_(delta.to(own[name].dtype))
        lora = None
    elif lora is not None and not _has_lora(model):
        from peft import LoraConfig, inject_adapter_in_model

        from .. import hf

        inject_adapter_in_model(LoraConfig(**lora), hf.language_model(model.mllm))
    own = model.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    if unexpected:
        raise CheckpointError(f"{path} does not fit this model ({model.config.name}): unexpected keys "
                              f"({len(unexpected)}): {', '.join(unexpected[:10])}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in tensors.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: shape mismatch: {'; '.join(wrong[:5])}")
    for part, prefix in _PART_PREFIXES.items():  # a part in the file must be whole: nothing stays random
        if any(k.startswith(prefix) for k in tensors):
            missing = sorted(k for k in own if k.startswith(prefix) and k not in tensors)
            if missing:
                raise CheckpointError(f"{path} holds the {part} but not all of it (made for another configuration? "
                                      f"e.g. an expert without the self-similarity prior): missing keys "
                                      f"({len(missing)}): {', '.join(missing[:10])}")
    model.load_state_dict(tensors, strict=False)
    if "single_view" in meta:  # the LLM parts expect the image layout they were trained on
        model.config.single_view = bool(json.loads(meta["single_view"]))
    if "notes" in meta:  # ... and the note line, if it says (older files do not: the model's setting stays)
        model.config.notes = bool(json.loads(meta["notes"]))
    if merge_lora and lora is not None:  # the model already had peft layers: merge them
        merge_lora_into_base(model)
    model.untrained = tuple(p for p in getattr(model, "untrained", ()) if not _part_in(p, tensors))
    return model


def read_parts(path, keys=None) -> tuple[dict, dict]:
    """(metadata, tensors) of a parts file: a missing file is FileNotFoundError; an unreadable one
    (truncated, no header, bad header JSON) or NaN/inf weights a CheckpointError naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"trained-parts file not found: {path}")
    return validate.read_safetensors(path, CheckpointError, keys)


def lora_settings(meta: dict, path) -> dict | None:
    """The LoRA settings in a parts file's metadata (None: no LoRA); malformed ones are a
    CheckpointError naming the file and what is wrong."""
    if not meta.get("lora"):
        return None
    lora = validate.parse_json(meta["lora"], f"{path}: metadata 'lora'", CheckpointError)
    if not isinstance(lora, dict):
        raise CheckpointError(f"{path}: metadata 'lora' must be a JSON object, got {type(lora).__name__}")
    r, alpha = lora.get("r"), lora.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise CheckpointError(f"{path}: metadata 'lora' needs a rank r >= 1, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha == alpha:
        raise CheckpointError(f"{path}: metadata 'lora' needs a numeric lora_alpha, got {alpha!r}")
    return lora


def merge_lora_into_base(model) -> None:
    """W ← W + scale·B·A for every LoRA layer, then put the plain base layer back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())


_PART_PREFIXES = {"expert": "expert.", "projector": "mllm.model.multi_modal_projector.",
                  "image_newline": "mllm.model.image_newline"}


def _part_in(part: str, tensors: dict) -> bool:
    prefix = _PART_PREFIXES.get(part)
    return prefix is not None and any(k.startswith(prefix) for k in tensors)


def lora_deltas(tensors: dict, lora: dict) -> dict[str, torch.Tensor]:
    """``{base weight name: (lora_alpha / r) · B @ A}`` from a parts file's LoRA matrices
    (``use_rslora``: α/√r). The base name drops peft's ``.lora_A.<adapter>`` infix."""
    scale = _lora_scale(lora)
    return {name: _delta(b, a, scale) for name, (b, a) in _lora_pairs(tensors).items()}


def _lora_scale(lora: dict) -> float:
    r = int(lora["r"])
    return lora["lora_alpha"] / (r ** 0.5 if lora.get("use_rslora") else r)


def _lora_pairs(tensors: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{base weight name: (B [out, r], A [r, in])}``; a layer with only one of them is an error."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _LORA.match(key)
        if m:
            pairs.setdefault(m["base"], {})[m["ab"]] = value
    for base, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"LoRA layer {base}: found only lora_{''.join(ab)}")
    return {base + ".weight": (ab["B"], ab["A"]) for base, ab in pairs.items()}


def _delta(b: torch.Tensor, a: torch.Tensor, scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """scale · B @ A in fp32 (into ``out`` when given: the same arithmetic, no new memory)."""
    if out is None:
        return scale * (b.float() @ a.float())  # [out, r] @ [r, in]
    return torch.matmul(b.float(), a.float(), out=out).mul_(scale)


def _has_lora(model) -> bool:
    return any(".lora_A." in n for n, _ in model.named_parameters())


def base_with_parts(preset: str, parts: Sequence = (), *, model_path=None, expert_path=None):
    """The preset's base weights (``trained=False``: for ``small`` the untrained expert, projector
    and newline, not the shipped parts) with ``parts`` files loaded in order — what training
    starts from and how ``--load`` evaluates a run. Missing files fail before the model is built."""
    import warnings

    from ..model import AnomalyOV

    for path in parts:
        if not Path(path).is_file():
            raise FileNotFoundError(f"trained-parts file not found: {path}")
    with warnings.catch_warnings():  # parts about to be trained or loaded: the untrained note is no news
        warnings.filterwarnings("ignore", message="preset 'small'", category=UserWarning)
        model = AnomalyOV.from_preset(preset, model_path=model_path, expert_path=expert_path, trained=False)
    for path in parts:
        load_trained_parts(model, path)
    return model


# ---------------------------------------------------------------------------- peft export

_LLM_PREFIX = "mllm.model.language_model."  # where stage 2 injects LoRA: hf.language_model(model.mllm)
#: the module a peft adapter is loaded onto → where the kit's LLM decoder sits in it
PEFT_BASES = {
    "causal_lm": "model.",  # the plain LLM with its head (Qwen2ForCausalLM, LlamaForCausalLM: SmolLM2)
    "decoder": "",  # the decoder alone (Qwen2Model, LlamaModel)
    "mllm": "model.language_model.",  # the whole LlavaOnevisionForConditionalGeneration (model.mllm)
}
_LORA_SETTINGS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora")


def export_peft_adapter(source, out_dir, base: str = "causal_lm") -> Path:
    """Write the LoRA of ``source`` — a stage 2 parts file (``trained.safetensors``) or a model with
    unmerged LoRA layers — as a peft adapter folder: ``adapter_config.json`` +
    ``adapter_model.safetensors``, keys ``base_model.model.<module path>.lora_A.weight``.

    ``base`` names the module it loads onto with ``peft.PeftModel.from_pretrained(base_module,
    out_dir)``: ``"causal_lm"`` (default; the plain LLM with its head), ``"decoder"`` or ``"mllm"``
    (the llava-hf model; the adapter then targets the language model only, not the tower)."""
    from safetensors.torch import save_file

    if base not in PEFT_BASES:
        raise ValueError(f"base must be one of {sorted(PEFT_BASES)}, got {base!r}")
    tensors, lora, name = _lora_source(source)
    prefix = "base_model.model." + PEFT_BASES[base]
    out, layers = {}, {}
    for key, value in tensors.items():
        m = _LORA.match(key)
        if m is None:
            if "lora_" in key:
                raise CheckpointError(f"{name}: {key} is a LoRA tensor peft's Linear layout cannot hold")
            continue
        if not m["base"].startswith(_LLM_PREFIX):
            raise CheckpointError(f"{name}: LoRA outside the language model ({key}): not exportable as an LLM adapter")
        layer = m["base"][len(_LLM_PREFIX):]
        layers.setdefault(layer, set()).add(m["ab"])
        out[f"{prefix}{layer}.lora_{m['ab']}.weight"] = value.detach().cpu().contiguous()
    if not out:
        raise CheckpointError(f"{name} holds no LoRA matrices to export")
    half = sorted(layer for layer, ab in layers.items() if ab != {"A", "B"})
    if half:
        raise CheckpointError(f"{name}: LoRA layers with only one of lora_A/lora_B: {', '.join(half[:10])}")
    suffixes = sorted({layer.rsplit(".", 1)[-1] for layer in layers})
    if base == "mllm":  # a regex (peft full-matches it) keeps the tower's own q_proj, ... out of the adapter
        targets = re.escape(PEFT_BASES[base]) + r".*\.(" + "|".join(map(re.escape, suffixes)) + ")"
    else:
        targets = suffixes
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM" if base == "causal_lm" else None,
              "base_model_name_or_path": None, "inference_mode": True, "fan_in_fan_out": False,
              "r": int(lora["r"]), "lora_alpha": lora["lora_alpha"], "lora_dropout": lora.get("lora_dropout", 0.0),
              "bias": lora.get("bias", "none"), "use_rslora": bool(lora.get("use_rslora", False)),
              "target_modules": targets}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(out, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


def _lora_source(source) -> tuple[dict, dict, str]:
    """(tensors, LoRA settings, a name for messages) of a parts file or a model with LoRA layers."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        meta, tensors = read_parts(path, keys=lambda k: bool(_LORA.match(k)) or "lora_" in k)
        lora = lora_settings(meta, path)
        if lora is None:
            raise CheckpointError(f"{path} holds no LoRA settings (metadata 'lora'): not a stage 2 file trained "
                                  "with llm='lora'")
        return tensors, lora, str(path)
    from .. import hf

    llm = hf.language_model(source.mllm)
    configs = getattr(llm, "peft_config", None) or {}
    if not _has_lora(source) or len(configs) != 1:
        raise ValueError("the model has no (single) unmerged LoRA adapter on its language model; "
                         "export from the stage 2 parts file instead")
    settings = vars(next(iter(configs.values())))
    lora = {k: sorted(v) if isinstance(v, set) else v for k, v in settings.items() if k in _LORA_SETTINGS}
    tensors = {k: v for k, v in source.state_dict().items() if "lora_" in k}
    return tensors, lora, "the model"
