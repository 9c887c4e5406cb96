"""The VisA-D&R evaluation protocols: ``official`` (the paper's scripts) and ``kit`` (paper §5.3, Table 4).

``official`` reproduces the choices of the official evaluation scripts of Anomaly-OneVision
(:data:`OFFICIAL_SOURCE`: ``scripts/eval/test_detection.py``, ``test_reasoning.py``,
``calc_accuracy.py``):

* images opened with PIL and converted to RGB (no EXIF orientation, no pixel budget), then
  capped so the long side is at most the preset's cap with ``int()`` truncation
  (:func:`adkit.anyres.capped_size` ``rounding="floor"``), resized bicubic (PIL's default);
* every detection item asked the fixed prompt :data:`~adkit.data.visa_dr.DETECTION_PROMPT`;
* greedy decoding without penalties (``do_sample=False``), at most 4096 new tokens, one image
  at a time; answers kept raw (decoded with special tokens skipped, never stripped), also as the
  reasoning history;
* "anomalous" iff ``"Yes"`` or ``"yes"`` occurs in the answer (rule ``official_substring``);
* the class of an item is ``image.split('/')[1]`` of its file's ``"image"`` string, whatever
  other key the record has;
* reasoning skips items whose ``"image"`` contains ``pcb2`` or ``pcb4``;
* ``detection_results_<size>.json`` (the list of answers) and ``reasoning_results_<size>.json``
  (each reasoning record as read plus its ``"responses"``), ``json.dump(..., indent=4)``.

``kit`` is the kit's own protocol (short answers, anti-loop decoding, first-word parser, ...);
:func:`deviations` lists how a protocol differs from the official one, and the report header
prints that list.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..anyres import capped_size
from ..data.records import DataError
from ..data.visa_dr import DETECTION_PROMPT, OFFICIAL_REASONING_SKIP, official_category

__all__ = ["OFFICIAL_SOURCE", "OFFICIAL_MAX_NEW_TOKENS", "PLAIN_GREEDY", "Protocol", "PROTOCOLS", "get_protocol",
           "choose_protocol", "deviations", "size_tag", "category_of", "prompt_of", "skipped", "official_image",
           "detection_results", "reasoning_results", "write_official", "read_detection_results",
           "read_reasoning_results", "RESIDUAL", "describe", "with_overrides", "official_size",
           "protocol_header", "score_detection_results"]

OFFICIAL_SOURCE = "honda-research-institute/Anomaly-OneVision@d85bec0 (scripts/eval/test_detection.py, " \
                  "test_reasoning.py, calc_accuracy.py)"
OFFICIAL_MAX_NEW_TOKENS = 4096
#: generate() overrides that make the kit's greedy decoding plain (the preset's anti-loop
#: defaults, adkit.config.DECODING, switched off), as the official ``do_sample=False, temperature=0``.
PLAIN_GREEDY = {"do_sample": False, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


@dataclass(frozen=True)
class Protocol:
    """Every choice of a VisA-D&R run that the official scripts fix one way."""

    name: str
    detection_tokens: int  # most new tokens of a detection answer
    reasoning_tokens: int  # most new tokens of a reasoning answer
    rule: str  # headline Yes/No parser (metrics.PARSE_RULES; both are always reported)
    skip: tuple[str, ...]  # reasoning items whose "image" contains one of these are not asked
    category: str  # "official": image.split('/')[1]; "file": the record's "category", else the path
    cap_rounding: str  # adkit.anyres.CAP_ROUNDING
    strip: bool  # strip answers (scoring, history, files)
    plain_greedy: bool  # PLAIN_GREEDY; False: the preset's anti-loop defaults (adkit.config.DECODING)
    batch_size: int  # images per generate() call
    loader: str  # "official": PIL open + convert("RGB"); "kit": adkit.images.load_image (EXIF, budget)
    prompt: str  # "official": DETECTION_PROMPT for every item; "file": the record's "question"


PROTOCOLS = {
    "official": Protocol("official", detection_tokens=OFFICIAL_MAX_NEW_TOKENS, reasoning_tokens=OFFICIAL_MAX_NEW_TOKENS,
                         rule="official_substring", skip=OFFICIAL_REASONING_SKIP, category="official",
                         cap_rounding="floor", strip=False, plain_greedy=True, batch_size=1, loader="official",
                         prompt="official"),
    "kit": Protocol("kit", detection_tokens=8, reasoning_tokens=128, rule="first_word", skip=(), category="file",
                    cap_rounding="round", strip=True, plain_greedy=False, batch_size=8, loader="kit", prompt="file"),
}

# what each field means, and how to say a value (deviations and --help)
_SAY = {
    "detection_tokens": ("detection answers cut at {} new tokens", str),
    "reasoning_tokens": ("reasoning answers cut at {} new tokens", str),
    "rule": ("headline parser {}", repr),
    "skip": ("reasoning skip list {}", lambda v: "(none)" if not v else ", ".join(v)),
    "category": ("class of an item: {}", {"official": "image.split('/')[1]",
                                          "file": "the record's \"category\" key, else the path"}.get),
    "cap_rounding": ("long-side cap rounds the short side by {}", {"floor": "int() truncation",
                                                                  "round": "rounding to nearest"}.get),
    "strip": ("answers {}", {True: "stripped of surrounding whitespace (also in the history)",
                             False: "kept raw (also in the history)"}.get),
    "plain_greedy": ("decoding {}", {True: "plain greedy",
                                     False: "greedy with repetition_penalty 1.1 and no_repeat_ngram_size 4"}.get),
    "batch_size": ("{} image(s) per generate() call", str),
    "loader": ("images {}", {"official": "opened with PIL as they are (no EXIF rotation, every pixel)",
                             "kit": "EXIF-rotated, above 2304² downscaled on load (adkit.images)"}.get),
    "prompt": ("detection prompt {}", {"official": "fixed (the VisA-D&R prompt)",
                                       "file": "the record's \"question\" where it has one"}.get),
}

#: What the kit still does differently under ``--protocol official`` (the report header lists them).
RESIDUAL = (
    "the prompt + 4096 new tokens must fit the LLM's context: a longer budget is cut to the room left "
    "(never for the paper presets' 32,768-token context; counted in the report when it happens)",
    "an empty answer in the history is rendered closed (`<|im_start|>assistant\\n<|im_end|>`); the official "
    "Conversation drops the `<|im_end|>` of an empty message",
    "the kit's processor strips whitespace around the first question after moving `<image>` to the turn's start",
    "the model is the kit's implementation (dtype of the preset; the official runs bfloat16 on CUDA); "
    "a checkpoint's own generation_config is not read",
)


def get_protocol(protocol) -> Protocol:
    """A :class:`Protocol` from its name (``"official"``, ``"kit"``) or itself."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {tuple(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def choose_protocol(bench) -> str:
    """``"official"`` for the paper's benchmark layout (every record's ``"image"`` starts with
    ``VisA/``, the official ``<data_dir>/VisA/...``), else ``"kit"``."""
    sources = [getattr(it, "source", "") for it in [*bench.detection, *bench.reasoning]]
    return "official" if sources and all(s.startswith("VisA/") for s in sources) else "kit"


def describe(protocol) -> list[str]:
    """Every choice of ``protocol``, one phrase each (for --help and reports)."""
    p = get_protocol(protocol)
    return [text.format(say(getattr(p, f))) for f, (text, say) in _SAY.items()]


def deviations(protocol, clipped: int = 0, single_view: bool = False) -> list[str]:
    """How ``protocol`` differs from the official scripts: its choices that differ ("X (official:
    Y)"), then what the kit keeps different under any protocol (:data:`RESIDUAL`), then what this
    run did differently (``clipped`` budgets, a ``single_view`` model)."""
    p, o = get_protocol(protocol), PROTOCOLS["official"]
    out = [f"{text.format(say(getattr(p, f)))} (official: {say(getattr(o, f))})"
           for f, (text, say) in _SAY.items() if getattr(p, f) != getattr(o, f)]
    out += list(RESIDUAL)
    if clipped:
        out.append(f"in this run {clipped} generate() call(s) had their new-token budget cut to the context")
    if single_view:
        out.append("the model reads each image as one base view (trained with --single-view; official: anyres crops)")
    return out


def size_tag(preset: str) -> str:
    """The ``<size>`` of the official file names (their ``--size``): 7b, 05b, else the preset's name."""
    return {"paper-7b": "7b", "paper-0.5b": "05b"}.get(preset, preset)


def category_of(item, protocol) -> str:
    """The item's class under ``protocol`` (official: ``image.split('/')[1]`` of its file string)."""
    p = get_protocol(protocol)
    source = getattr(item, "source", "")
    if p.category != "official" or not source:
        return str(item.category)
    try:
        return official_category(source)
    except DataError as e:
        raise DataError(f"{item.image}: {e} (use --protocol kit for paths without a class folder)") from None


def prompt_of(item, protocol) -> str:
    return DETECTION_PROMPT if get_protocol(protocol).prompt == "official" else item.question


def skipped(item, protocol) -> bool:
    """Is the reasoning item skipped (its file's ``"image"`` contains a skip-list entry)?"""
    source = getattr(item, "source", "") or str(item.image)
    return any(s in source for s in get_protocol(protocol).skip)


def official_image(path, geometry, rounding: str = "floor") -> Image.Image:
    """The official scripts' image: ``Image.open(path).convert("RGB")``, and when the long side
    exceeds the cap, resized (PIL's default bicubic) to :func:`capped_size` with ``rounding``."""
    try:
        with Image.open(path) as im:
            img = Image.fromarray(np.asarray(im.convert("RGB")))  # pixels only: no EXIF travels on
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot load image ({e})") from None
    h, w = capped_size(img.height, img.width, geometry, rounding)
    return img if (h, w) == (img.height, img.width) else img.resize((w, h), Image.BICUBIC)


# ---------------------------------------------------------------------------- official files

def detection_results(det) -> list[str]:
    """``detection_results_<size>.json``: the answers, in the order of the detection list."""
    return list(det.answers)


def reasoning_results(rea) -> list[dict]:
    """``reasoning_results_<size>.json``: per asked item, its record as read (or as the kit writes
    it, for items built in memory) with ``"responses"`` = the answers in turn order."""
    from ..data.visa_dr import VisaDRBenchmark, _records

    answers: dict[int, list[str]] = {}
    for r in sorted(rea.records, key=lambda r: (r["item"], r["turn"])):
        answers.setdefault(r["item"], []).append(r["answer"])
    out = []
    for i, item in enumerate(rea.items):
        record = dict(item.record) if item.record else _records(VisaDRBenchmark([], [item]), None)[1][0]
        record["responses"] = answers.get(i, [])  # d.copy(); p["responses"] = ... (a key kept in place)
        out.append(record)
    return out


def _dump(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=4), encoding="utf-8")  # json.dump(obj, f, indent=4), as there
    return path


def write_official(result, out, tag: str) -> dict[str, Path]:
    """Write the official files of a ``VisaDRResult`` into ``out``; returns {name: path}. The
    reasoning file holds image paths, so it is written only when every item was read from a
    file (items built in memory from arrays or PIL images have none)."""
    out = Path(out)
    files = {}
    if result.detection is not None:
        files["official_detection"] = _dump(out / f"detection_results_{tag}.json", detection_results(result.detection))
    if result.reasoning is not None and all(item.record or isinstance(item.image, (str, os.PathLike))
                                            for item in result.reasoning.items):
        files["official_reasoning"] = _dump(out / f"reasoning_results_{tag}.json", reasoning_results(result.reasoning))
    return files


def _load(path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read file ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_detection_results(path, bench) -> list[str]:
    """The answers of an official ``detection_results_*.json``, checked against ``bench``'s list."""
    data = _load(path)
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
        raise DataError(f"{path}: expected a JSON list of answer strings (official detection_results format)")
    if len(data) != len(bench.detection):
        raise DataError(f"{path}: {len(data)} answers but the benchmark has {len(bench.detection)} detection items")
    return data


def read_reasoning_results(path) -> list[dict]:
    """The records of an official ``reasoning_results_*.json`` (each with "image", "questions" and
    "responses" of the same length)."""
    data = _load(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records (official reasoning_results format)")
    for i, rec in enumerate(data):
        ok = isinstance(rec, dict) and isinstance(rec.get("image"), str) and isinstance(rec.get("questions"), list)
        resp = rec.get("responses") if isinstance(rec, dict) else None
        if not ok or not isinstance(resp, list) or len(resp) != len(rec["questions"]) \
                or not all(isinstance(a, str) for a in resp):
            raise DataError(f"{path}: record {i}: needs 'image', 'questions' and as many 'responses' strings")
    return data


def with_overrides(protocol, **changes) -> Protocol:
    """``protocol`` with some choices changed (None values ignored); the name is kept, and
    :func:`deviations` lists every changed choice against the official one."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(get_protocol(protocol), **changes) if changes else get_protocol(protocol)


def official_size(result) -> str:
    """The ``<size>`` of a result's official file names (:func:`size_tag` of its preset)."""
    return size_tag((result.detection or result.reasoning).preset)


def protocol_header(result) -> list[str]:
    """Markdown lines for the top of a VisA-D&R report: the protocol, what it skipped or could not
    score, and every deviation from the official scripts."""
    p = get_protocol(result.protocol)
    det, rea = result.detection, result.reasoning
    clipped = sum(r.clipped for r in (det, rea) if r is not None)
    single_view = any(getattr(r, "single_view", False) for r in (det, rea) if r is not None)
    lines = [f"## Protocol: `{p.name}`", "", f"Official reference: {OFFICIAL_SOURCE}.", ""]
    if rea is not None and rea.skipped:
        lines += [f"Reasoning items skipped by the skip list ({', '.join(p.skip)}): {len(rea.skipped)}.", ""]
    if rea is not None and rea.unscored:
        lines += [f"Reasoning answers without a reference answer in the file (asked, not scored): {rea.unscored}.", ""]
    devs = deviations(p, clipped, single_view)
    lines += [f"Deviations from the official protocol ({len(devs)}):", "", *[f"- {d}" for d in devs], ""]
    return lines


def score_detection_results(path, bench, protocol="official", preset: str = ""):
    """Score an official ``detection_results_*.json`` (from the official scripts or from the kit)
    against ``bench``'s detection list, classes and headline rule by ``protocol``."""
    from .visa_dr_runners import detection_summary

    p = get_protocol(protocol)
    answers = read_detection_results(path, bench)
    res = detection_summary(answers, [int(it.label) for it in bench.detection],
                            [category_of(it, p) for it in bench.detection], p.rule, preset=preset)
    res.protocol = p.name
    res.images = [getattr(it, "source", "") or str(it.image) for it in bench.detection]
    return res
