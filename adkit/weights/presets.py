"""Loaders of the paper presets: llava-hf weights + the official expert checkpoint (DESIGN §1).

Nothing here downloads unless the caller allows it: by default transformers is asked for
local files only, and a missing file ends in one message that names what to get and where
to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import hf
from ..config import AnomalyOVConfig
from ..expert import AnomalyExpert
from .official import CheckpointError

MODEL_ENV, EXPERT_ENV = "ADKIT_LLAVA_PATH", "ADKIT_EXPERT_PATH"


def missing_weights_message(config: AnomalyOVConfig, what: str, detail: str) -> str:
    return (
        f"preset {config.name!r}: {what} not available ({detail}).\n"
        f"  base MLLM : the llava-hf checkpoint {config.hub_id!r} — download it once, e.g.\n"
        f"              `huggingface-cli download {config.hub_id} --local-dir <dir>`, then pass\n"
        f"              model_path=<dir> or set {MODEL_ENV}=<dir>\n"
        f"  expert    : {config.expert_file} from the official Anomaly-OneVision repository —\n"
        f"              pass expert_path=<file> or set {EXPERT_ENV}=<file>"
    )


def load_paper_preset(cls, config: AnomalyOVConfig, model_path=None, expert_path=None,
                      local_files_only: bool = True, torch_dtype=None, **kw):
    model_path = model_path or os.environ.get(MODEL_ENV) or config.hub_id
    expert_path = expert_path or os.environ.get(EXPERT_ENV)
    if not expert_path or not Path(expert_path).is_file():
        raise FileNotFoundError(missing_weights_message(
            config, "expert checkpoint", f"looked for {expert_path!r}" if expert_path else "no path given"))
    try:
        mllm = hf.load_mllm(model_path, local_files_only=local_files_only,
                            **({"dtype": torch_dtype} if torch_dtype else {}))
    except OSError as exc:
        raise FileNotFoundError(missing_weights_message(config, "base MLLM weights", f"{model_path}: {exc}")) from None
    # the loaded folder is the truth for the MLLM's sizes; the preset supplies geometry and levels
    config = config.replace(vision=mllm.config.vision_config, text=mllm.config.text_config)
    expert = AnomalyExpert.from_official_checkpoint(expert_path)
    if expert.config.vision_dim != config.vision.hidden_size:
        raise CheckpointError(f"{expert_path}: expert width {expert.config.vision_dim} does not match "
                              f"the tower width {config.vision.hidden_size} of {config.name}")
    from ..model import _tokenizer_for

    tokenizer = _tokenizer_for(config)
    if tokenizer.convert_tokens_to_ids("<image>") != mllm.config.image_token_id:
        raise CheckpointError(f"{model_path}: image token id {mllm.config.image_token_id} differs from the "
                              f"tokenizer's <image> id {tokenizer.convert_tokens_to_ids('<image>')}")
    return cls(config, mllm, expert, tokenizer, **kw).eval()
