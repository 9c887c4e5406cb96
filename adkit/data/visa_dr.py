"""The VisA-D&R benchmark files: detection list + multi-turn reasoning list (docs/architecture.md §5, §7; paper §4.2).

VisA-D&R: 10 VisA classes, 761 normal + 1000 anomalous images. Its format is the one the
official evaluation scripts read (honda-research-institute/Anomaly-OneVision,
``scripts/eval/test_detection.py``, ``test_reasoning.py``, ``calc_accuracy.py``):

``<data_dir>/VisA/test_data.json`` — detection, a JSON list of::

    {"image": "VisA/candle/.../000.JPG", "anomaly": true}

  image paths are relative to ``<data_dir>``; the class is ``image.split('/')[1]``; every image
  is asked :data:`DETECTION_PROMPT` (after ``<image>\\n``); "anomaly" is the ground truth.

``<data_dir>/VisA/visa_dr.json`` — reasoning (anomalous images only), a JSON list of::

    {"image": "VisA/candle/.../000.JPG", "questions": ["<low-level description q>", "<cause q>",
                                                      "<effect q>", "<prevention q>"]}

  asked in order, greedy, with the model's own answers as history (``<image>\\n`` is prepended
  to the first question by the runner, not stored). The official run skips images whose path
  contains ``pcb2`` or ``pcb4`` (:data:`OFFICIAL_REASONING_SKIP`, a substring test on the
  file's ``"image"``; applied by ``--protocol official``, :mod:`adkit.eval.official`).

The public scripts never read the reference answers, so their key is not defined there (the
official ``visa_dr.json`` holds questions only: read it with ``require_answers=False``; such items
have ``answered=False``). This module stores them as ``"answers"`` (a list parallel to
``"questions"``) and also writes an explicit ``"category"`` (and ``"question"`` when it differs
from the prompt); other keys (e.g. the ``"responses"`` the official script adds) are kept in
``meta`` and written back.
A single ``.json`` file may also hold both lists: ``{"detection": [...], "reasoning": [...]}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .records import DataError

__all__ = ["DETECTION_PROMPT", "OFFICIAL_REASONING_SKIP", "DETECTION_FILE", "REASONING_FILE",
           "DetectionItem", "ReasoningItem", "VisaDRBenchmark", "read_visa_dr", "write_visa_dr",
           "official_category"]

DETECTION_PROMPT = "Are there any defects for the object in the image? Please reply with 'Yes' or 'No'."
OFFICIAL_REASONING_SKIP = ("pcb2", "pcb4")
DETECTION_FILE = "test_data.json"
REASONING_FILE = "visa_dr.json"
_DET_KEYS = ("image", "anomaly", "category", "question")
_REA_KEYS = ("image", "questions", "answers", "category")


@dataclass
class DetectionItem:
    """One detection query: ``label`` 1 = anomalous (the file's ``"anomaly"``)."""

    image: Path
    label: int
    category: str
    question: str = DETECTION_PROMPT
    meta: dict = field(default_factory=dict)
    source: str = field(default="", compare=False)  # the file's "image" string as written ("" in memory)


@dataclass
class ReasoningItem:
    """One anomalous image with its (question, reference answer) turns, asked in order."""

    image: Path
    category: str
    turns: list[tuple[str, str]]
    meta: dict = field(default_factory=dict)
    source: str = field(default="", compare=False)  # the file's "image" string as written ("" in memory)
    record: dict = field(default_factory=dict, compare=False, repr=False)  # the file's record, as read
    answered: bool = field(default=True, compare=False)  # False: the file had no "answers" (references "")


@dataclass
class VisaDRBenchmark:
    """Both lists; ``root`` is the folder relative image paths were resolved against."""

    detection: list[DetectionItem]
    reasoning: list[ReasoningItem]
    root: Path | None = None

    def counts(self) -> dict:
        """Sizes to compare with the paper's (761 normal, 1000 anomalous, 10 classes)."""
        anomalous = sum(d.label for d in self.detection)
        return {"normal": len(self.detection) - anomalous, "anomalous": anomalous,
                "classes": len({d.category for d in self.detection} | {r.category for r in self.reasoning}),
                "reasoning": len(self.reasoning)}


def _official_category(image: str) -> str:
    """The official scripts' rule ``image.split('/')[1]`` (first part for two-part paths)."""
    parts = image.split("/")
    return parts[1] if len(parts) >= 3 else parts[0]


def official_category(image: str) -> str:
    """Exactly the official ``image.split('/')[1]`` (``calc_accuracy.py``), on the file's own
    ``"image"`` string; a path without ``/`` (where the official script fails) is a DataError."""
    parts = image.split("/")
    if len(parts) < 2:
        raise DataError(f"image {image!r}: the official class rule image.split('/')[1] needs a '/' in the path")
    return parts[1]


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: malformed JSON: nested too deeply to parse") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from None


def _text(rec: dict, key: str, where: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _resolve_root(json_dir: Path, first_image: str | None) -> Path:
    """Default image root: the JSON's folder, or its parent for the official ``VisA/...`` paths."""
    if first_image and not (json_dir / first_image).exists() and (json_dir.parent / first_image).exists():
        return json_dir.parent
    return json_dir


def _image(rec: dict, where: str, root: Path, check: bool) -> Path:
    rel = _text(rec, "image", where)
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    if check and not path.is_file():
        raise DataError(f"{where}: field 'image': file not found: {path} (pass image_root= if the "
                        "paths are relative to another folder)")
    return path


def _detection(records, path: Path, root: Path, check: bool) -> list[DetectionItem]:
    items = []
    for i, rec in enumerate(_as_list(records, path, "detection")):
        where = f"{path}: detection record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        image = _image(rec, where, root, check)
        anomaly = rec.get("anomaly")
        if anomaly not in (True, False, 0, 1) or isinstance(anomaly, float):
            raise DataError(f"{where}: field 'anomaly' must be true/false (or 1/0), got {anomaly!r}")
        category = _text(rec, "category", where) if "category" in rec else _official_category(rec["image"])
        question = _text(rec, "question", where) if "question" in rec else DETECTION_PROMPT
        meta = {k: v for k, v in rec.items() if k not in _DET_KEYS}
        items.append(DetectionItem(image, int(anomaly), category, question, meta, source=rec["image"]))
    return items


def _reasoning(records, path: Path, root: Path, check: bool, require_answers: bool) -> list[ReasoningItem]:
    items = []
    for i, rec in enumerate(_as_list(records, path, "reasoning")):
        where = f"{path}: reasoning record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        image = _image(rec, where, root, check)
        questions = rec.get("questions")
        if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q for q in questions):
            raise DataError(f"{where}: field 'questions' must be a non-empty list of strings, got {questions!r}")
        if any("<image>" in q for q in questions):
            raise DataError(f"{where}: field 'questions' contains '<image>'; the runner adds it to the first turn")
        answers = rec.get("answers")
        answered = answers is not None
        if answers is None and not require_answers:
            answers = [""] * len(questions)
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{where}: field 'answers' must be a list of reference answers (strings), got "
                            f"{answers!r} (pass require_answers=False to read a file without references)")
        if len(answers) != len(questions):
            raise DataError(f"{where}: field 'answers' has {len(answers)} entries but 'questions' has {len(questions)}")
        category = _text(rec, "category", where) if "category" in rec else _official_category(rec["image"])
        meta = {k: v for k, v in rec.items() if k not in _REA_KEYS}
        items.append(ReasoningItem(image, category, list(zip(questions, answers)), meta, source=rec["image"],
                                   record=dict(rec), answered=answered))
    return items


def _as_list(records, path: Path, kind: str) -> list:
    if not isinstance(records, list):
        raise DataError(f"{path}: the {kind} list must be a JSON list, got {type(records).__name__}")
    return records


def _first_image(records) -> str | None:
    if isinstance(records, list) and records and isinstance(records[0], dict):
        image = records[0].get("image")
        return image if isinstance(image, str) else None
    return None


def read_visa_dr(path_or_dir, image_root=None, check_images: bool = True,
                 require_answers: bool = True) -> VisaDRBenchmark:
    """Read VisA-D&R: a folder with ``test_data.json`` and/or ``visa_dr.json`` (also looked for
    in ``<dir>/VisA/``), one of those files, or a combined ``{"detection", "reasoning"}`` file.

    Relative image paths resolve against ``image_root``; by default against the JSON file's
    folder, or its parent when the paths start there (official ``<data_dir>/VisA/...`` layout).
    """
    src = Path(path_or_dir).expanduser()
    parts: dict[str, tuple[Path, object]] = {}
    if src.is_dir():
        for folder in (src, src / "VisA"):
            for kind, name in (("detection", DETECTION_FILE), ("reasoning", REASONING_FILE)):
                if kind not in parts and (folder / name).is_file():
                    parts[kind] = (folder / name, _load_json(folder / name))
        if not parts:
            raise DataError(f"{src}: no VisA-D&R files ({DETECTION_FILE}, {REASONING_FILE}) "
                            f"in the folder or in {src / 'VisA'}")
    elif src.is_file():
        data = _load_json(src)
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"detection", "reasoning"})
            if unknown or not data:
                raise DataError(f"{src}: a combined VisA-D&R file has keys 'detection' and/or "
                                f"'reasoning', got {sorted(data)}")
            parts = {kind: (src, data[kind]) for kind in data}
        elif isinstance(data, list):
            first = data[0] if data and isinstance(data[0], dict) else {}
            kind = "reasoning" if "questions" in first else "detection" if "anomaly" in first else None
            if kind is None:
                raise DataError(f"{src}: record 0 has neither 'anomaly' (detection) nor 'questions' (reasoning)")
            parts = {kind: (src, data)}
        else:
            raise DataError(f"{src}: expected a JSON list or object, got {type(data).__name__}")
    else:
        raise DataError(f"VisA-D&R path not found: {src}")
    roots = {kind: Path(image_root) if image_root is not None else _resolve_root(p.parent, _first_image(recs))
             for kind, (p, recs) in parts.items()}
    detection = _detection(parts["detection"][1], parts["detection"][0], roots["detection"],
                           check_images) if "detection" in parts else []
    reasoning = _reasoning(parts["reasoning"][1], parts["reasoning"][0], roots["reasoning"],
                           check_images, require_answers) if "reasoning" in parts else []
    return VisaDRBenchmark(detection, reasoning, roots.get("detection", roots.get("reasoning")))


def _rel(image: Path, root: Path | None) -> str:
    image = Path(image)
    if root is not None:
        try:
            return image.relative_to(root).as_posix()
        except ValueError:
            pass
    return image.as_posix()


def _records(bench: VisaDRBenchmark, root: Path | None) -> tuple[list, list]:
    detection = []
    for d in bench.detection:
        rec = {"image": _rel(d.image, root), "anomaly": bool(d.label), "category": d.category}
        if d.question != DETECTION_PROMPT:
            rec["question"] = d.question
        detection.append({**rec, **{k: v for k, v in d.meta.items() if k not in rec}})
    reasoning = []
    for r in bench.reasoning:
        rec = {"image": _rel(r.image, root), "category": r.category,
               "questions": [q for q, _ in r.turns], "answers": [a for _, a in r.turns]}
        reasoning.append({**rec, **{k: v for k, v in r.meta.items() if k not in rec}})
    return detection, reasoning


def _atomic_write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_visa_dr(bench: VisaDRBenchmark, path, image_root=None) -> Path:
    """Write ``bench``: a ``.json`` path gets one combined file; any other path is a folder that
    gets the official ``test_data.json`` + ``visa_dr.json``. Image paths are written relative to
    ``image_root`` (default ``bench.root``) when they lie under it, else absolute.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else bench.root
    detection, reasoning = _records(bench, root)
    if path.suffix.lower() == ".json":
        _atomic_write(path, {"detection": detection, "reasoning": reasoning})
    else:
        _atomic_write(path / DETECTION_FILE, detection)
        _atomic_write(path / REASONING_FILE, reasoning)
    return path
