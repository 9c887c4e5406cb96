"""Import of the official Anomaly-OV expert checkpoints (``pretrained_expert_{05b,7b}.pth``).

The official module names its parameters after its own code (``siglip_adaptors``,
``q_former``, ...); ours follow the paper's vocabulary. :data:`OFFICIAL_KEY_MAP` is the
one-to-one bridge. Loading is strict and safe: ``torch.load(weights_only=True)`` (a ``.pth``
is a pickle), and any missing, unexpected or mis-shaped key is reported by name.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from .. import validate
from ..config import ExpertConfig

# our name prefix → official name prefix (".weight"/".bias" and level indices carry over)
OFFICIAL_KEY_MAP: dict[str, str] = {
    "ltfm.normal_seed": "positive_embedding",
    "ltfm.anomaly_seed": "negative_embedding",
    "ltfm.base_pool": "pooling_layer.0",
    "ltfm.class_mlp": "class_predictor",
    "ltfm.patch_adaptors": "siglip_adaptors",
    "ltfm.prompt_adaptors": "prompt_adaptors",
    "selector.query_proj": "q_former.query_proj",
    "selector.key_proj": "q_former.key_proj",
    "selector.score_mlp": "final_predictor",
}
_PREFIXES = ("module.", "model.", "anomaly_encoder.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


def _rename(key: str, mapping: dict[str, str]) -> str | None:
    for src, dst in mapping.items():
        if key == src or key.startswith(src + "."):
            return dst + key[len(src):]
    return None


def to_official_state_dict(expert) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in expert.state_dict().items():
        name = _rename(key, OFFICIAL_KEY_MAP)
        if name is None:
            raise KeyError(f"parameter {key!r} has no official name")
        out[name] = value
    return out


def read_checkpoint(path_or_state_dict) -> dict[str, torch.Tensor]:
    """A flat state dict from a ``.pth`` path or a dict, with wrapper prefixes removed."""
    if isinstance(path_or_state_dict, (str, Path)):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise CheckpointError(f"expert checkpoint not found: {path}")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle with code objects, truncated zip, not a checkpoint
            raise CheckpointError(f"cannot read {validate.describe(path)} as a weights-only torch checkpoint: "
                                  f"{pth_problem(path, exc)}") from None
        where = str(path)
    else:
        sd, where = path_or_state_dict, "<state dict>"
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}: expected a dict of tensors, got {type(sd).__name__}")
    clean = {}
    for key, value in sd.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        clean[key] = value
    validate.finite_tensors(clean, where, CheckpointError)  # a NaN weight would make every score NaN
    return clean


def pth_problem(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words: torch's own messages for a damaged file
    are often empty (an empty file), a bare byte value (text) or ``[Errno 22]`` (a truncated
    archive), so look at the bytes first."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):  # torch's format since 1.6: a zip archive of pickled tensors
        try:
            with zipfile.ZipFile(path) as zf:
                broken = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            return f"the zip archive is damaged ({err or type(err).__name__}): truncated or overwritten?"
        if broken is not None:
            return f"the zip archive is damaged: member {broken} fails its CRC check"
    elif head.startswith(b"PK"):
        return "a truncated or damaged zip archive (its central directory is missing): an interrupted download?"
    elif head[0] != 0x80:  # a pickle (the legacy format) starts with the PROTO opcode
        return f"neither a zip archive nor a pickle (first bytes {head!r}): not a torch checkpoint"
    message = " ".join(str(exc).split())
    if not message or message.isdigit() or message.startswith("[Errno"):
        return f"{type(exc).__name__}{': ' + message if message else ''} (the file is damaged or not a checkpoint)"
    return message


def infer_expert_config(sd: dict[str, torch.Tensor], **overrides) -> ExpertConfig:
    """Expert sizes read off official-key shapes (so paper and toy checkpoints both load)."""
    try:
        vision_dim = sd["class_predictor.0.weight"].shape[1]
        num_patches = sd["pooling_layer.0.weight"].shape[1]
        levels = {int(m.group(1)) for k in sd if (m := re.match(r"siglip_adaptors\.(\d+)\.weight$", k))}
        sizes = dict(
            vision_dim=vision_dim,
            grid=int(round(num_patches ** 0.5)),
            embed_dim=sd["positive_embedding"].shape[1],
            class_dim=sd["class_predictor.0.weight"].shape[0],
            attention_dim=sd["q_former.query_proj.weight"].shape[0],
            score_hidden=sd["final_predictor.0.weight"].shape[0],
            num_levels=len(levels),
        )
    except KeyError as exc:
        raise CheckpointError(
            f"not an Anomaly-OV expert checkpoint: key {exc.args[0]!r} is missing "
            f"(found {len(sd)} keys, e.g. {sorted(sd)[:5]})"
        ) from None
    if sizes["grid"] ** 2 != num_patches:
        raise CheckpointError(f"pooling_layer expects {num_patches} tokens, not a square grid")
    sizes.update(overrides)
    return ExpertConfig(**sizes)


def load_into(expert, official_sd: dict[str, torch.Tensor]) -> None:
    """Strictly copy an official-key state dict into ``expert``; readable errors on mismatch."""
    inverse = {v: k for k, v in OFFICIAL_KEY_MAP.items()}
    ours = expert.state_dict()
    renamed, unexpected = {}, []
    for key, value in official_sd.items():
        name = _rename(key, inverse)
        if name is None or name not in ours:
            unexpected.append(key)
        else:
            renamed[name] = value
    missing = [to_official_state_dict_key(k) for k in ours if k not in renamed]
    shapes = [
        f"{to_official_state_dict_key(k)}: checkpoint {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
        for k, v in renamed.items() if v.shape != ours[k].shape
    ]
    if missing or unexpected or shapes:
        lines = ["expert checkpoint does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            lines.append("  shape mismatches: " + "; ".join(shapes))
        raise CheckpointError("\n".join(lines))
    expert.load_state_dict(renamed, strict=True)


def to_official_state_dict_key(key: str) -> str:
    return _rename(key, OFFICIAL_KEY_MAP) or key


def load_official_expert(cls, path_or_state_dict, **config_overrides):
    sd = read_checkpoint(path_or_state_dict)
    expert = cls(infer_expert_config(sd, **config_overrides))
    load_into(expert, sd)
    return expert
