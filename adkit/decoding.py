"""Greedy decoding with a static KV cache: what :meth:`AnomalyOV.generate` runs by default.

The same tokens as transformers' ``generate`` on ``inputs_embeds`` (greedy, with the preset's
``repetition_penalty`` / ``no_repeat_ngram_size``, ``min_new_tokens``, EOS and padding, and a
streamer) — ``tests/test_fast_decode.py`` compares the two on real weights — but with less work
per token on a small CPU model:

* a **static KV cache** (``transformers.StaticCache``) allocated once for prompt + new tokens,
  instead of a dynamic one that concatenates every layer's keys and values at every step;
* the decoder and LM head are called directly: no ``prepare_inputs_for_generation``, LLaVA
  wrapper or stopping-criteria machinery per step, and the LM head sees the last position only
  (also during the prefill);
* an **incremental n-gram blocker** (:class:`NGramBlocker`): each step adds one n-gram to a
  per-row table instead of rebuilding the table from the whole sequence in Python
  (transformers' ``NoRepeatNGramLogitsProcessor``, O(length) per step); it bans exactly the
  same tokens (``tests/test_fast_decode.py`` checks on random sequences).

Anything else (sampling, beams, other processors, ``max_new_tokens=None``) is left to
transformers: :func:`supports` says which calls this loop takes.
"""

from __future__ import annotations

import torch

from . import hf

# generate() keyword arguments this loop implements exactly; any other key goes to transformers
SUPPORTED = {"max_new_tokens", "min_new_tokens", "repetition_penalty", "no_repeat_ngram_size",
             "do_sample", "eos_token_id", "pad_token_id", "streamer", "num_beams"}


def supports(gen_kwargs: dict) -> bool:
    """True when :func:`greedy_generate` gives exactly what ``mllm.generate(**gen_kwargs)`` would."""
    if set(gen_kwargs) - SUPPORTED or gen_kwargs.get("max_new_tokens") is None:
        return False
    if gen_kwargs.get("do_sample") or (gen_kwargs.get("num_beams") or 1) != 1:
        return False
    return isinstance(gen_kwargs.get("eos_token_id"), int) and isinstance(gen_kwargs.get("pad_token_id"), int)


class NGramBlocker:
    """Bans, per row, every token that would repeat an ``n``-gram already in that row.

    The same bans as transformers' ``NoRepeatNGramLogitsProcessor(n)`` called on the whole
    sequence so far, kept up to date one token at a time: :meth:`__call__` must see each
    sequence once per step, one token longer each time (as a decoding loop does)."""

    def __init__(self, n: int, batch_size: int):
        self.n = n
        self.tables = [{} for _ in range(batch_size)]  # row -> {(n-1)-prefix: set of next tokens}
        self.rows = [[] for _ in range(batch_size)]
        self.seen = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length != self.seen + 1 and not (length == 0 == self.seen):
            raise ValueError(f"NGramBlocker saw {self.seen} tokens per row, now {length}: one at a time")
        n = self.n
        if length:
            for row, token, table in zip(self.rows, input_ids[:, -1].tolist(), self.tables):
                row.append(token)
                if len(row) >= n:
                    table.setdefault(tuple(row[-n:-1]), set()).add(token)
        self.seen = length
        if length + 1 < n:
            return scores
        for i, (row, table) in enumerate(zip(self.rows, self.tables)):
            banned = table.get(tuple(row[length - n + 1:]) if n > 1 else ())
            if banned:
                scores[i, list(banned)] = -float("inf")
        return scores


def _penalty(penalty: float, mask: torch.Tensor):
    """transformers' own repetition penalty, set up exactly as its ``generate`` does: on
    ``inputs_embeds`` it ignores the first (left-padding count) *generated* tokens of each row."""
    from transformers import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=(mask != 0).int().argmax(dim=1))


@torch.no_grad()
def greedy_generate(mllm, embeds: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int,
                    eos_token_id: int, pad_token_id: int, min_new_tokens: int | None = None,
                    repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
                    streamer=None, **_greedy) -> torch.Tensor:
    """New token ids [B, T] (T ≤ ``max_new_tokens``) for left-padded ``embeds`` [B, L, H] and
    ``mask`` [B, L]; rows that ended are filled with ``pad_token_id`` until all have.
    ``_greedy`` takes ``do_sample=False`` / ``num_beams=1`` (what :func:`supports` lets through)."""
    batch, length = mask.shape
    device = embeds.device
    decoder, head = hf.language_model(mllm), hf.lm_head(mllm)
    cache = hf.static_cache(mllm, length + max_new_tokens)
    processors = []
    if repetition_penalty is not None and repetition_penalty != 1.0:
        processors.append(_penalty(repetition_penalty, mask))
    if no_repeat_ngram_size:
        processors.append(NGramBlocker(no_repeat_ngram_size, batch))
    if streamer is not None:
        if batch != 1:
            raise ValueError("a streamer takes one sequence at a time (batch size 1)")
        streamer.put(torch.empty((1, 0), dtype=torch.long))  # the "prompt" (none: embeddings), as transformers does

    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    ids = torch.empty((batch, 0), dtype=torch.long, device=device)
    unfinished = torch.ones(batch, dtype=torch.long, device=device)
    x, pos = embeds, positions
    for step in range(max_new_tokens):
        hidden = decoder(inputs_embeds=x, attention_mask=mask, position_ids=pos, cache=cache,
                         use_cache=True).last_hidden_state
        scores = head(hidden[:, -1]).to(dtype=torch.float32)
        for proc in processors:
            scores = proc(ids, scores)
        if min_new_tokens and step < min_new_tokens:
            scores[:, eos_token_id] = -float("inf")
        token = scores.argmax(-1)
        token = token * unfinished + pad_token_id * (1 - unfinished)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if streamer is not None:
            streamer.put(token.cpu())
        unfinished = unfinished & (token != eos_token_id).long()
        if not unfinished.any():
            break
        x = hf.embed_tokens(mllm)(token[:, None])
        pos = pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=1)
    if streamer is not None:
        streamer.end()
    return ids
