"""One home for the checks of arguments and inputs (docs/architecture.md §8, conventions).

Everything a user passes — a verdict threshold, a token count, a size, a question, a JSON or
weights file — is checked here before any work is done, and a failure is one line naming the
argument or the file and the reason. The CLI (``adkit/cli.py``, ``adkit/eval/cli.py``,
``adkit/train/cli.py``) and the Python API (``AnomalyOV.detect``, ``AnomalyOV.chat``,
``load_trained_parts``, ...) call the same functions, so they refuse the same things with the
same words.

Why these bounds: every scoring method's score is a probability-like number in [0, 1] (paper
§3.3, step 10 of docs/architecture.md §3), so a threshold outside [0, 1] — or NaN, which no
comparison satisfies — means nothing; a sequence longer than the LLM's context
(``max_position_embeddings``) cannot be answered; a NaN weight turns every score into NaN.

No heavy imports at module level (torch is imported inside the one function that needs it), so
lower layers and the light CLI paths can use it freely.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path

__all__ = ["ValidationError", "probability", "count", "optional_count", "positive", "non_negative", "finite_scores", "finite_tensors",
           "read_json", "parse_json", "read_safetensors", "fits_context", "describe"]


class ValidationError(ValueError):
    """An argument or input that cannot mean anything: the message names it and says why."""


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def probability(value, name: str = "threshold") -> float:
    """``value`` as a float if it is a finite number in [0, 1], else :class:`ValidationError`."""
    if not _is_number(value) or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        raise ValidationError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is a whole number >= ``minimum`` (token counts, batch sizes)."""
    whole = _is_number(value) and math.isfinite(float(value)) and float(value) == int(value)
    if not whole or int(value) < minimum:
        raise ValidationError(f"{name} must be >= {minimum} (a whole number), got {value!r}")
    return int(value)


def optional_count(value, name: str, minimum: int = 1) -> int | None:
    """None (unset), or :func:`count`."""
    return None if value is None else count(value, name, minimum)


def positive(value, name: str) -> float:
    """``value`` as a float if it is a finite number > 0 (sizes, rates, penalties)."""
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValidationError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative(value, name: str) -> float:
    """``value`` as a float if it is a finite number >= 0 (weight decay, dropout)."""
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise ValidationError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def finite_scores(scores, names, what: str = "score") -> None:
    """Refuse NaN/inf scores (they are not a verdict, and ``"score": NaN`` is not JSON).
    ``names`` labels each score (file names, or indices) in the message."""
    bad = [f"{n} ({s})" for n, s in zip(names, scores) if not math.isfinite(float(s))]
    if bad:
        raise ValidationError(f"non-finite {what} for {len(bad)} image(s): {', '.join(bad[:5])} — the weights are "
                              "probably corrupt (a NaN/inf parameter); reload them or rebuild the cache")


def finite_tensors(tensors: dict, where, error: type[Exception] = ValidationError) -> None:
    """Raise ``error`` naming ``where`` and the first offending keys when a floating tensor of
    ``tensors`` ({name: tensor}) holds NaN or inf: a weight like that makes every output NaN."""
    import torch

    bad = []
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad.append(f"{name} ({int(torch.isnan(t).sum())} NaN, {int(torch.isinf(t).sum())} inf)")
    if bad:
        raise error(f"{where}: non-finite weights in {len(bad)} tensor(s): {', '.join(bad[:5])}")


def parse_json(text, where, error: type[Exception] = ValidationError):
    """``json.loads(text)`` whose every failure is one ``error`` line naming ``where`` and the reason
    (invalid JSON with its position, nesting too deep for Python's parser, not text)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: invalid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{where}: invalid JSON (nested too deeply to parse)") from None
    except (TypeError, UnicodeDecodeError) as exc:
        raise error(f"{where}: not JSON text ({exc})") from None


def read_json(path, error: type[Exception] = ValidationError, what: str = "JSON file"):
    """The parsed JSON of ``path``; a missing file, a folder, an unreadable file, text that is not
    UTF-8 or not JSON: one ``error`` line naming the file and the reason."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise error(f"{path}: not a regular file ({what} expected)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    return parse_json(text, path, error)


def read_safetensors(path, error: type[Exception] = ValidationError, keys=None) -> tuple[dict, dict]:
    """(metadata, {name: tensor}) of a safetensors file, every tensor checked finite; a missing,
    truncated, header-less or bad-JSON file, or a NaN/inf weight: one ``error`` line naming the
    file and the reason. ``keys``: a predicate choosing which tensors to read (default: all)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys() if keys is None or keys(k)}
    except Exception as exc:  # SafetensorError (not a ValueError), OSError: say which file and why
        reason = " ".join(str(exc).split()).removeprefix("Error while deserializing header: ") or type(exc).__name__
        if "not fully covered" in reason or "incomplete metadata" in reason:
            reason += " (the file is truncated or its header lies)"
        raise error(f"{describe(path)}: not a readable safetensors file: {reason}") from None
    finite_tensors(tensors, path, error)
    return meta, tensors


def fits_context(prompt_tokens: int, new_tokens: int, context: int, what: str = "the question") -> None:
    """Refuse a generation whose prompt plus answer would not fit the LLM's context window — before
    any compute, with the numbers, instead of running minutes and answering nothing."""
    if prompt_tokens + new_tokens > context:
        room = context - prompt_tokens
        hint = (f"shorten {what} by at least {prompt_tokens + new_tokens - context:,} tokens" if room < 1 else
                f"shorten {what} or ask for at most {room:,} new tokens")
        raise ValidationError(f"{what} does not fit the model's context: the prompt is {prompt_tokens:,} tokens "
                              f"(image included) + {new_tokens:,} new tokens > the context of {context:,}; {hint}")


def describe(path) -> str:
    """A short, human description of a path for messages (its name and size when it is a file)."""
    try:
        return f"{path} ({os.path.getsize(path):,} bytes)"
    except OSError:
        return str(path)
