"""LLaVA conversation JSON: read, validate, write, and round-trip through Hugging Face ``datasets``.

The format of Anomaly-Instruct-125k and of every LLaVA-OneVision training file (docs/architecture.md §5;
paper §4.1): a JSON list (or JSON lines) of records

    {"id": "bottle/000",
     "image": "images/000.png"            # or ["a.png", "b.png"]; absent for text-only
     "conversations": [{"from": "human", "value": "<image>\\nIs there a defect?"},
                       {"from": "gpt",   "value": "Yes, a crack on the rim."}, ...]}

Rules checked on every record (errors name the file, the record index / line and id):
turns alternate ``human``, ``gpt``, ... starting with ``human`` and ending with ``gpt``; every
``value`` is a string; the number of ``<image>`` tokens in the human turns equals the number of
images (none in gpt turns); image files exist (``check_images``, relative paths resolve against
``image_root``, default the JSON file's folder); no unknown fields unless ``allow_extra=True``.

``datasets``: :func:`to_dataset` / :func:`from_dataset` convert losslessly to an Arrow table with
fixed features (``image`` is always a list of strings there, ``image_is_list`` remembers
whether it was a list, ``extra`` holds unknown fields as a JSON string, ids are strings);
:func:`from_dataset` also accepts a table read straight from a LLaVA file by
``Dataset.from_json``. :func:`load_llava_dataset` reads a file into a ``datasets.Dataset``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..validate import parse_json
from .records import DataError

__all__ = ["IMAGE_TOKEN", "validate_record", "read_llava_json", "write_llava_json",
           "to_dataset", "from_dataset", "load_llava_dataset", "save_llava_dataset"]

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
TOP_FIELDS = ("id", "image", "conversations")
# "meta" (a dict) is the kit's one documented extra key: the instruction pipeline records the
# writer's name and the sample's facts there (adkit.data.instruct); LLaVA loaders ignore it.
OPTIONAL_FIELDS = ("meta",)
TURN_FIELDS = ("from", "value")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _where(base: str, rec: Any) -> str:
    rid = rec.get("id") if isinstance(rec, dict) else None
    return f"{base} (id {rid!r})" if rid is not None else base


def _image_list(rec: dict, where: str) -> list[str]:
    if "image" not in rec:
        return []
    image = rec["image"]
    if isinstance(image, str) and image:
        return [image]
    if isinstance(image, list) and image and all(isinstance(p, str) and p for p in image):
        return list(image)
    raise DataError(f"{where}: field 'image' must be a non-empty path string or a non-empty list "
                    f"of path strings, got {image!r}")


def validate_record(rec: Any, where: str = "record", *, image_root=None, check_images: bool = False,
                    allow_extra: bool = False) -> None:
    """Raise :class:`DataError` (prefixed with ``where``) if ``rec`` breaks the module's rules."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    where = _where(where, rec)
    extra = sorted(set(rec) - set(TOP_FIELDS) - set(OPTIONAL_FIELDS))
    if "meta" in rec and not isinstance(rec["meta"], dict):
        raise DataError(f"{where}: 'meta' must be an object, got {type(rec['meta']).__name__}")
    if extra and not allow_extra:
        raise DataError(f"{where}: unknown field(s) {extra}; allowed: {list(TOP_FIELDS)} "
                        "(pass allow_extra=True to keep other fields)")
    if "id" not in rec:
        raise DataError(f"{where}: missing field 'id'")
    if isinstance(rec["id"], bool) or not isinstance(rec["id"], (str, int)) or rec["id"] == "":
        raise DataError(f"{where}: field 'id' must be a non-empty string or an integer, got {rec['id']!r}")
    images = _image_list(rec, where)
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field 'conversations' must be a non-empty list of turns, got {turns!r}")
    n_tokens = 0
    for j, turn in enumerate(turns):
        at = f"{where}: conversations[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at}: expected an object with 'from' and 'value', got {type(turn).__name__}")
        for key in TURN_FIELDS:
            if key not in turn:
                raise DataError(f"{at}: missing field {key!r}")
        turn_extra = sorted(set(turn) - set(TURN_FIELDS))
        if turn_extra and not allow_extra:
            raise DataError(f"{at}: unknown field(s) {turn_extra}; allowed: {list(TURN_FIELDS)}")
        role, expected = turn["from"], ROLES[j % 2]
        if role not in ROLES:
            raise DataError(f"{at}: unknown role {role!r}; expected 'human' or 'gpt'")
        if role != expected:
            raise DataError(f"{at}: expected 'from': {expected!r}, got {role!r} (turns must alternate "
                            "human, gpt, ... starting with human)")
        if not isinstance(turn["value"], str):
            raise DataError(f"{at}: field 'value' must be a string, got {type(turn['value']).__name__}")
        if role == "gpt" and IMAGE_TOKEN in turn["value"]:
            raise DataError(f"{at}: a gpt turn contains {IMAGE_TOKEN!r}; images belong in human turns")
        n_tokens += turn["value"].count(IMAGE_TOKEN)
    if turns[-1]["from"] != "gpt":
        raise DataError(f"{where}: the last turn must be a 'gpt' answer (got a trailing human turn)")
    if n_tokens != len(images):
        raise DataError(f"{where}: {n_tokens} {IMAGE_TOKEN!r} token(s) in the human turns but "
                        f"{len(images)} image(s) in field 'image'")
    if check_images:
        root = Path(image_root) if image_root is not None else Path(".")
        for p in images:
            full = Path(p) if Path(p).is_absolute() else root / p
            if not full.is_file():
                raise DataError(f"{where}: image file not found: {full}")


def _parse(path: Path) -> list[tuple[str, Any]]:
    """(location label, parsed record) pairs from a JSON list or a JSON-lines file."""
    if not path.is_file():
        raise DataError(f"LLaVA JSON file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() in JSONL_SUFFIXES:
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}: line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {n}: malformed JSON: {exc.msg} (column {exc.colno})") from None
            except RecursionError:
                raise DataError(f"{path}: line {n}: malformed JSON: nested too deeply to parse") from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (a JSON-lines file should end in .jsonl)" if exc.msg == "Extra data" else ""
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}") from None
    except RecursionError:
        raise DataError(f"{path}: malformed JSON: nested too deeply to parse") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got a JSON {type(data).__name__}")
    return [(f"{path}: record {i}", rec) for i, rec in enumerate(data)]


def read_llava_json(path, image_root=None, check_images: bool = True, allow_extra: bool = False) -> list[dict]:
    """Read and validate a LLaVA conversation file (``.json`` list or ``.jsonl`` lines)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    records = []
    for where, rec in _parse(path):
        validate_record(rec, where, image_root=root, check_images=check_images, allow_extra=allow_extra)
        records.append(rec)
    return records


def _ordered(rec: dict) -> dict:
    """A copy with a fixed key order: id, image, conversations, then other fields sorted."""
    out = {"id": rec["id"]}
    if "image" in rec:
        out["image"] = list(rec["image"]) if isinstance(rec["image"], list) else rec["image"]
    out["conversations"] = [
        {**{k: t[k] for k in TURN_FIELDS}, **{k: t[k] for k in sorted(set(t) - set(TURN_FIELDS))}}
        for t in rec["conversations"]]
    out.update({k: rec[k] for k in sorted(set(rec) - set(TOP_FIELDS))})
    return out


def write_llava_json(records: Iterable[dict], path, *, image_root=None, check_images: bool = False,
                     allow_extra: bool = False) -> Path:
    """Validate and write records atomically (temp file + rename) as UTF-8.

    ``.json``: one list, ``indent=1``; ``.jsonl``/``.ndjson``: one record per line. Records keep
    their order; keys are written in a fixed order (see ``_ordered``), so equal data gives
    byte-identical files. Nothing is written if any record is invalid.
    """
    path = Path(path)
    records = list(records)
    for i, rec in enumerate(records):
        validate_record(rec, f"record {i}", image_root=image_root, check_images=check_images,
                        allow_extra=allow_extra)
    ordered = [_ordered(rec) for rec in records]
    if path.suffix.lower() in JSONL_SUFFIXES:
        text = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in ordered)
    else:
        text = json.dumps(ordered, ensure_ascii=False, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _features():
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"),
        "image": List(Value("string")),
        "image_is_list": Value("bool"),
        "conversations": List({"from": Value("string"), "value": Value("string")}),
        "extra": Value("string"),
    })


def to_dataset(records: Iterable[dict]):
    """Records → ``datasets.Dataset`` with fixed features (see the module docstring)."""
    from datasets import Dataset

    rows = []
    for i, rec in enumerate(records):
        validate_record(rec, f"record {i}", allow_extra=True)
        for j, turn in enumerate(rec["conversations"]):
            if set(turn) != set(TURN_FIELDS):
                raise DataError(f"{_where(f'record {i}', rec)}: conversations[{j}] has fields "
                                f"{sorted(set(turn) - set(TURN_FIELDS))} a Dataset cannot hold")
        extra = {k: rec[k] for k in sorted(set(rec) - set(TOP_FIELDS))}
        rows.append({
            "id": str(rec["id"]),
            "image": _image_list(rec, f"record {i}"),
            "image_is_list": isinstance(rec.get("image"), list),
            "conversations": [{"from": t["from"], "value": t["value"]} for t in rec["conversations"]],
            "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True),
        })
    return Dataset.from_list(rows, features=_features())


def from_dataset(ds) -> list[dict]:
    """``datasets.Dataset`` → records (inverse of :func:`to_dataset`; validated).

    Also reads tables built straight from LLaVA files (e.g. ``Dataset.from_json``): there
    ``image`` is a string, a list or null, and other columns become extra fields (nulls dropped).
    """
    records = []
    for i, row in enumerate(ds):
        rec: dict = {"id": row["id"]}
        image = row.get("image")
        if isinstance(image, list) and image:
            rec["image"] = list(image) if row.get("image_is_list", True) else image[0]
        elif isinstance(image, str):
            rec["image"] = image
        rec["conversations"] = [dict(t) for t in row["conversations"] or []]
        for key in sorted(set(row) - set(TOP_FIELDS) - {"image_is_list", "extra"}):
            if row[key] is not None:
                rec[key] = row[key]
        if row.get("extra"):
            rec.update(parse_json(row["extra"], f"dataset row {i}: field 'extra'", DataError))
        validate_record(rec, f"dataset row {i}", allow_extra=True)
        records.append(rec)
    return records


def load_llava_dataset(path, image_root=None, check_images: bool = True, allow_extra: bool = False):
    """Read and validate a LLaVA file, returned as a ``datasets.Dataset`` (:func:`to_dataset`)."""
    return to_dataset(read_llava_json(path, image_root=image_root, check_images=check_images,
                                      allow_extra=allow_extra))


def save_llava_dataset(ds, path, *, allow_extra: bool = True) -> Path:
    """Write a ``datasets.Dataset`` back as LLaVA JSON (:func:`from_dataset` + :func:`write_llava_json`)."""
    return write_llava_json(from_dataset(ds), path, allow_extra=allow_extra)
