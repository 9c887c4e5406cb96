"""LLaVA conversation records → padded stage-2 batches (paper §5.1; docs/architecture.md §2.5, §4).

A record is the LLaVA / Anomaly-Instruct JSON object

    {"id": "...", "image": "rel/path.png" | ["a.png", "b.png"] | <PIL image> | absent,
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}

:class:`Stage2Collator` is a ``transformers.Trainer`` ``data_collator``: it loads the images,
and hands conversations and images to :class:`adkit.AnomalyOVProcessor`, which renders ChatML,
expands ``<image>`` into the exact placeholder count, applies the label rule (``official`` or
``assistant_only``) and right-pads (ids with the pad token, labels with −100).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data.records import DataError
from ..images import ImageLoadError, load_image
from ..processor import IMAGE_TOKEN, ROLES


def record_name(record: dict, index: int | None = None) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"record {rid!r}" if rid is not None else f"record #{index}"


def record_images(record: dict) -> list:
    img = record.get("image")
    if img is None:
        return []
    return list(img) if isinstance(img, (list, tuple)) else [img]


def conversation(record: dict, index: int | None = None) -> list[dict]:
    """The record's turns, with ``<image>`` prepended to the first human turn when the record has
    images but the text names none (LLaVA convention). Raises DataError on malformed turns."""
    name = record_name(record, index)
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{name}: 'conversations' must be a non-empty list of turns")
    out = []
    for k, t in enumerate(turns):
        role = t.get("from", t.get("role")) if isinstance(t, dict) else None
        value = t.get("value", t.get("content")) if isinstance(t, dict) else None
        if role not in ROLES or not isinstance(value, str):
            raise DataError(f"{name}: turn {k} needs 'from' in {sorted(ROLES)} and a string 'value', got {t!r}")
        out.append({"from": role, "value": value})
    n_img, n_tok = len(record_images(record)), sum(t["value"].count(IMAGE_TOKEN) for t in out)
    if n_img and n_tok == 0:
        first = next((t for t in out if ROLES[t["from"]] == "user"), None)
        if first is None:
            raise DataError(f"{name}: has an image but no human turn to attach it to")
        first["value"] = IMAGE_TOKEN + "\n" + first["value"]
    elif n_tok != n_img:
        raise DataError(f"{name}: {n_tok} {IMAGE_TOKEN} tag(s) in the text but {n_img} image(s)")
    if not any(ROLES[t["from"]] == "assistant" for t in out):
        raise DataError(f"{name}: no assistant ('gpt') turn to learn from")
    return out


def resolve_image(item, image_folder, name: str):
    """A path (relative to ``image_folder``) or an in-memory image → RGB PIL."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_absolute() and image_folder is not None:
            path = Path(image_folder) / path
        if not path.is_file():
            raise DataError(f"{name}: image file not found: {path}")
        item = path
    try:
        return load_image(item)
    except ImageLoadError as exc:
        raise DataError(f"{name}: {exc}") from None


def check_records(records: Sequence[dict], image_folder=None, check_files: bool = True) -> None:
    """Validate every record up front (structure, tag counts, image files exist)."""
    if not records:
        raise DataError("stage 2 got no records")
    for i, rec in enumerate(records):
        conversation(rec, i)
        if check_files:
            for item in record_images(rec):
                if isinstance(item, (str, Path)):
                    path = Path(item) if Path(item).is_absolute() or image_folder is None else Path(image_folder) / item
                    if not path.is_file():
                        raise DataError(f"{record_name(rec, i)}: image file not found: {path}")


class Stage2Collator:
    """``data_collator`` for ``transformers.Trainer``: records → the processor's padded batch
    (input_ids, attention_mask, labels [B, L]; pixel_values [N, 3, S, S], image_sizes,
    split_sizes, single_view when the batch holds images). ``notes``: images → one note line each
    (``AnomalyOV.write_notes``, the "+ notes" variant), put after the ``<image>`` of every
    one-image record exactly as ``AnomalyOV.chat`` does at inference."""

    def __init__(self, processor, image_folder=None, notes=None):
        self.processor, self.image_folder, self.notes = processor, image_folder, notes

    def __call__(self, records: Sequence[dict]) -> dict:
        convs, images = [], []
        for i, rec in enumerate(records):
            name = record_name(rec, i)
            convs.append(conversation(rec, i))
            images.append([resolve_image(item, self.image_folder, name) for item in record_images(rec)])
        if self.notes is not None:
            from ..notes import with_note

            one = [i for i, imgs in enumerate(images) if len(imgs) == 1]
            for i, note in zip(one, self.notes([images[i][0] for i in one]) if one else []):
                convs[i] = with_note(convs[i], note)
        return self.processor(convs, images if any(images) else None)


def count_tokens(batch: dict) -> int:
    """Non-padding tokens of a batch (what tokens/s counts)."""
    return int(batch["attention_mask"].sum())
