"""The static-cache greedy loop (adkit.decoding) gives transformers' tokens, exactly.

``generate``/``chat`` run :func:`adkit.decoding.greedy_generate` by default; ``fast=False``
keeps transformers' ``generate`` reachable, so every test here compares the two on the same
model and inputs: the shipped ``small`` weights (real SmolLM2-135M) and the ``tiny`` preset,
single and batched (left-aligned padding, rows ending at different steps), with and without
the preset's anti-loop defaults, ``min_new_tokens``, and the streamer protocol the demo uses.
Speed is measured in benchmarks/bench_decode.py, never here.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor
from transformers.generation.streamers import BaseStreamer

from adkit import AnomalyOV, decoding

PLAIN = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
QUESTIONS = ["<image>\nIs there any anomaly in the image? Describe it.", "<image>\nWhat is this?",
             "<image>\nDescribe the anomaly in detail."]


@pytest.fixture(scope="module")
def shipped():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return AnomalyOV.from_preset("small")


@pytest.fixture(scope="module")
def images():
    from pathlib import Path

    from PIL import Image

    root = Path(__file__).resolve().parents[1] / "data_samples" / "test"
    return [Image.open(sorted((root / c).rglob("*.png"))[0]).convert("RGB") for c in ("hazelnut", "pill", "wood")]


def _batch(model, questions, imgs):
    batch = model.processor([[{"role": "user", "content": q}] for q in questions], [[i] for i in imgs],
                            add_generation_prompt=True)
    batch.pop("labels")
    return batch


def _both(model, batch, **gen):
    old = model.generate(**batch, fast=False, **gen)
    new = model.generate(**batch, **gen)
    return old.tolist(), new.tolist()


class Collect(BaseStreamer):
    """Every ``put`` and the ``end`` a streamer receives, as lists."""

    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(value.tolist())

    def end(self):
        self.calls.append("end")


# ---------------------------------------------------------------- the n-gram blocker alone

@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_ngram_blocker_bans_what_transformers_bans(n):
    gen = torch.Generator().manual_seed(n)
    reference = NoRepeatNGramLogitsProcessor(n)
    banned = 0
    for vocab in (3, 7, 50):  # small vocabularies: many repeats, so many bans
        batch = 4
        ids = torch.randint(0, vocab, (batch, 40), generator=gen)
        blocker = decoding.NGramBlocker(n, batch)
        for length in range(ids.shape[1] + 1):
            scores = torch.randn(batch, vocab, generator=gen)
            want = reference(ids[:, :length], scores.clone())
            got = blocker(ids[:, :length], scores.clone())
            assert torch.equal(want, got), (n, vocab, length)
            banned += int(torch.isinf(want).sum())
    assert banned > 0  # the comparison did see bans


def test_ngram_blocker_refuses_skipped_steps():
    blocker = decoding.NGramBlocker(2, 1)
    blocker(torch.zeros((1, 0), dtype=torch.long), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="one at a time"):
        blocker(torch.zeros((1, 3), dtype=torch.long), torch.zeros(1, 5))


def test_only_plain_greedy_calls_take_the_loop():
    base = {"max_new_tokens": 8, "eos_token_id": 1, "pad_token_id": 0}
    assert decoding.supports(base) and decoding.supports({**base, "no_repeat_ngram_size": 4})
    assert not decoding.supports({**base, "do_sample": True})
    assert not decoding.supports({**base, "num_beams": 2})
    assert not decoding.supports({**base, "temperature": 0.7})
    assert not decoding.supports({k: v for k, v in base.items() if k != "max_new_tokens"})


# ---------------------------------------------------------------- tiny preset (random weights)

@pytest.mark.parametrize("gen", [{}, PLAIN, {"min_new_tokens": 12}, {"no_repeat_ngram_size": 2}])
def test_tiny_batched_ids_equal_transformers(tiny, photo, gen):
    small_photo = photo.resize((60, 40))
    batch = _batch(tiny, QUESTIONS[:2], [photo, small_photo])
    assert (batch["attention_mask"].sum(1)[0] != batch["attention_mask"].sum(1)[1])  # padding is exercised
    old, new = _both(tiny, batch, max_new_tokens=16, **gen)
    assert old == new


# ---------------------------------------------------------------- small preset (shipped weights)

def test_small_ids_equal_transformers_one_at_a_time(shipped, images):
    for question, image in zip(QUESTIONS, images):
        old, new = _both(shipped, _batch(shipped, [question], [image]), max_new_tokens=24)
        assert old == new, question


def test_small_batched_ids_equal_transformers_with_padding(shipped, images):
    batch = _batch(shipped, QUESTIONS[:2], images[:2])
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] != lengths[1]
    for gen in ({}, PLAIN, {"min_new_tokens": 20}):
        old, new = _both(shipped, batch, max_new_tokens=40, **gen)
        assert old == new, gen
    assert any(shipped.processor.im_end_id in row for row in new)  # a row ended early: pads follow it


def test_small_chat_and_stream_equal_transformers(shipped, images):
    streams = {}
    for fast in (False, True):
        streamer = Collect()
        answer = shipped.chat(images[0], "Is there any anomaly?", max_new_tokens=24, streamer=streamer, fast=fast)
        streams[fast] = (answer, streamer.calls)
    assert streams[True] == streams[False]
    answer, calls = streams[True]
    assert answer and calls[0] == [[]] and calls[-1] == "end"  # empty "prompt", one put per token, end
