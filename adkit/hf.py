"""Every touch-point with transformers internals, in one place (docs/architecture.md §6).

The kit composes an *unmodified* ``LlavaOnevisionForConditionalGeneration``; this module
knows its attribute paths and config fields so that a transformers upgrade breaks here, in
one small file with its own tests (``tests/test_hf.py``), and nowhere else.
Tested range: transformers >=5.24,<5.25 (see pyproject.toml).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from .config import AnomalyOVConfig


def llava_config(config: AnomalyOVConfig, image_token_id: int) -> LlavaOnevisionConfig:
    """The transformers config of the base MLLM of ``config`` (llava-hf layout)."""
    g = config.geometry
    return LlavaOnevisionConfig(
        vision_config=config.vision,
        text_config=config.text,
        image_token_index=image_token_id,
        image_grid_pinpoints=[list(p) for p in g.pinpoints],
        vision_feature_select_strategy="default" if config.has_cls_token else "full",
        vision_feature_layer=config.final_level,
        vision_aspect_ratio=f"anyres_max_{g.max_num_patches}",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=config.text.tie_word_embeddings,
    )


def build_mllm(config: AnomalyOVConfig, image_token_id: int) -> LlavaOnevisionForConditionalGeneration:
    """A randomly initialised base MLLM (weights are loaded separately)."""
    model = LlavaOnevisionForConditionalGeneration(llava_config(config, image_token_id))
    return model.eval()


def mllm_from_weights(config: AnomalyOVConfig, image_token_id: int, weights: dict[str, torch.Tensor],
                      fresh: tuple[str, ...] = ()) -> LlavaOnevisionForConditionalGeneration:
    """The base MLLM holding ``weights`` (full names, e.g. ``model.vision_tower.…``) without first
    random-initialising what they replace: the skeleton is built on the meta device, the given
    tensors become its own (``assign``: no copy), and only what they leave out is materialised
    and initialised by the model's own ``_init_weights`` (rotary buffers, and e.g. the projector
    and ``image_newline`` when not given), drawing from the global RNG as a fresh build would.
    Tied weights are tied again. Strict: a name it does not have, a shape that differs, or a
    missing weight outside the ``fresh`` prefixes (those it may initialise) raise a ``ValueError``
    listing them."""
    with torch.device("meta"):  # transformers skips its init on meta; nothing is allocated
        model = LlavaOnevisionForConditionalGeneration(llava_config(config, image_token_id))
    own = model.state_dict(keep_vars=True)
    unexpected = sorted(set(weights) - set(own))
    tied = set(model.all_tied_weights_keys) - set(weights)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items()
             if k in own and v.shape != own[k].shape]
    missing = sorted(k for k in set(own) - set(weights) - tied if not k.startswith(fresh))
    if unexpected or wrong or missing:
        raise ValueError(f"weights do not fit {type(model).__name__}: missing keys ({len(missing)}): "
                         f"{', '.join(missing[:10]) or '-'}; unexpected keys ({len(unexpected)}): "
                         f"{', '.join(unexpected[:10]) or '-'}; shape mismatches ({len(wrong)}): "
                         f"{'; '.join(wrong[:5]) or '-'}")
    model.load_state_dict(weights, strict=False, assign=True)
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name in weights:
            tensor._is_hf_initialized = True  # transformers' own init skips these (as from_pretrained does)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta and name not in tied:  # not given: real memory, initialised just below
            module, _, leaf = name.rpartition(".")
            value = torch.empty_like(tensor, device="cpu")
            owner = model.get_submodule(module)
            if isinstance(tensor, nn.Parameter):
                value = nn.Parameter(value, requires_grad=tensor.requires_grad)
                owner.register_parameter(leaf, value)
            else:
                owner.register_buffer(leaf, value, persistent=leaf not in owner._non_persistent_buffers_set)
    model.initialize_weights()
    model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"weights left {len(left)} tensors without values: {', '.join(left[:10])}")
    return model.eval()


def load_mllm(path: str, **kwargs) -> LlavaOnevisionForConditionalGeneration:
    """llava-hf format weights from a local directory or Hub id (local files only)."""
    kwargs.setdefault("local_files_only", True)
    return LlavaOnevisionForConditionalGeneration.from_pretrained(path, **kwargs).eval()


def vision_tower(mllm) -> nn.Module:
    return mllm.model.vision_tower


def projector(mllm) -> nn.Module:
    """``mlp2x_gelu``: Linear(D→H) → GELU → Linear(H→H); projects visual *and* expert tokens."""
    return mllm.model.multi_modal_projector


def image_newline(mllm) -> nn.Parameter:
    return mllm.model.image_newline


def language_model(mllm) -> nn.Module:
    """The decoder without its LM head (the head is tied or separate, per the text config)."""
    return mllm.model.language_model


def embed_tokens(mllm) -> nn.Module:
    return mllm.get_input_embeddings()


def lm_head(mllm) -> nn.Module:
    """hidden states -> vocabulary logits (tied to :func:`embed_tokens` or not, per the text config)."""
    return mllm.get_output_embeddings()


def static_cache(mllm, max_len: int):
    """A KV cache for the text decoder holding ``max_len`` positions, allocated on first use and
    written in place (``transformers.StaticCache``): no per-step concatenation."""
    from transformers import StaticCache

    return StaticCache(config=mllm.config.get_text_config(decoder=True), max_cache_len=max_len)


def tower_hidden_states(tower: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All hidden states of a transformers vision tower: index 0 embeddings, k = layer k.

    Tiles of another size than ``config.image_size`` interpolate the position embeddings: DINOv2
    always does; SigLIP is asked to (``interpolate_pos_encoding``).
    """
    kwargs = {}
    if pixel_values.shape[-1] != tower.config.image_size and "interpolate_pos_encoding" in inspect.signature(tower.forward).parameters:
        kwargs["interpolate_pos_encoding"] = True
    out = tower(pixel_values=pixel_values, output_hidden_states=True, return_dict=True, **kwargs)
    return out.hidden_states


def quiet_length_warning(tokenizer) -> None:
    """Mark the tokenizer's "sequence length is longer than the maximum" notice as shown: the
    model's own context check (``adkit.validate.fits_context``) reports it, in one line, with the numbers."""
    if isinstance(getattr(tokenizer, "deprecation_warnings", None), dict):
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
