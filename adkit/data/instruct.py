"""The paper's automatic instruction-data pipeline (docs/architecture.md §5; paper §4.1, Anomaly-Instruct-125k).

Each stage is a plain function, so a notebook can show one record before and after it:

    1. `hint`          class + defect hint from metadata: "a capsule with poke mark at the top left"
                       (normal: "a normal capsule"); location / severity when known, else derived
                       from the mask (`location_from_mask`, `extent_from_mask`).
    2. `draw_boxes`    masks dilated, close components merged, drawn as red boxes (`mask_boxes`);
                       only model writers that see images (``writer.multimodal``) get the boxed image.
    3. `describe`      the writer's detailed description (anomaly, or the normal object).
    4. `conversations` multi-round LLaVA turns: a one-word detection question answered exactly
                       "Yes" / "No", then description, cause, effect, prevention (anomalous) or
                       description and what to check (normal). ``<image>\\n`` opens the first
                       human turn only.
    5. `balance`       equal numbers of "Yes" and "No" one-word detection rounds.
    6. `deduplicate`   near-duplicate images (feature cosine > 0.99) removed, keep-first.
    7. `build_instructions` runs them all and returns LLaVA records.

Output records are LLaVA conversation JSON (docs/architecture.md §5) plus one documented extra key:
``{"id", "image", "conversations", "meta": {"writer", "category", "defect", "label", "source",
"hint"}}`` — LLaVA's loaders ignore unknown top-level keys; ``meta["writer"]`` names the writer
because text from different writers is not interchangeable (``with_meta=False`` drops ``meta``;
``adkit.data.llava`` accepts it with ``allow_extra=True``). ``image`` is ``sample.meta["path"]``,
else ``sample.image`` when it is a path, else the image saved under ``image_dir`` as
``<id>.png``; with ``image_root`` paths are written relative to it (LLaVA's ``image_folder``).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from . import phrases as P
from .records import AnomalySample, DataError
from .writers import Writer, WriterError, defect_words

__all__ = ["LOCATION_CELLS", "hint", "sample_context", "location_from_mask", "extent_from_mask", "severity_word", "mask_boxes",
           "draw_boxes", "describe", "conversations", "detection_counts", "balance", "deduplicate",
           "build_instructions"]

#: the 3×3 location words of hints and answers (rows top→bottom, columns left→right)
LOCATION_CELLS = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))


def _ndimage():
    try:
        from scipy import ndimage
    except ImportError as e:  # pragma: no cover - scipy comes with scikit-image (the `data` extra)
        raise ImportError("mask boxes need scipy: pip install 'adkit[data]'") from e
    return ndimage


def severity_word(value) -> str | None:
    """meta["severity"] in words: strings as given, numbers in [0, 1] → minor / moderate / severe."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise DataError(f"severity {value!r} is neither a word nor a number in [0, 1]")
    return P.SEVERITY_WORDS[min(int(v * 3), 2)]


def location_from_mask(mask: np.ndarray | None) -> str | None:
    """Where the largest defect region lies, on a 3×3 grid ("top left", "center", ...)."""
    if mask is None or not np.any(mask):
        return None
    labels, n = _ndimage().label(np.asarray(mask) > 0)
    sizes = np.bincount(labels.ravel())[1:]  # (n,) pixels per component
    cy, cx = _ndimage().center_of_mass(labels == (int(np.argmax(sizes)) + 1))
    h, w = labels.shape
    return LOCATION_CELLS[min(int(3 * cy / h), 2)][min(int(3 * cx / w), 2)]


def extent_from_mask(mask: np.ndarray | None) -> str | None:
    """The defect's size in words from the masked fraction: small (< 1 %), medium-sized, large (≥ 10 %)."""
    if mask is None or not np.any(mask):
        return None
    frac = float(np.mean(np.asarray(mask) > 0))
    return "small" if frac < 0.01 else "medium-sized" if frac < 0.10 else "large"


def _object_phrase(sample: AnomalySample) -> str:
    given = sample.meta.get("hint")
    if given:
        return str(given)
    cat = sample.category.replace("_", " ")
    return ("an " if cat[:1].lower() in "aeiou" else "a ") + cat


def sample_context(sample: AnomalySample, mask: np.ndarray | None = None) -> dict:
    """The facts writers get (see `adkit.data.writers`): category, defect, label, object, location,
    severity, extent, count (separate regions, `mask_boxes`), hint. ``mask`` (bool H×W) is loaded from the sample when not given."""
    meta = sample.meta or {}
    ctx = {"category": sample.category.replace("_", " "), "defect": sample.defect, "label": int(sample.label),
           "object": _object_phrase(sample)}
    if sample.label == 1:
        if mask is None and sample.mask is not None:
            mask = sample.load_mask()
        ctx["location"] = meta.get("location") or location_from_mask(mask)
        ctx["severity"] = severity_word(meta.get("severity"))
        ctx["extent"] = extent_from_mask(mask)
        ctx["count"] = len(mask_boxes(mask)) if mask is not None and np.any(mask) else None  # separate regions
    ctx = {k: v for k, v in ctx.items() if v is not None}
    ctx["hint"] = _hint_from(ctx)
    return ctx


def _hint_from(ctx: dict) -> str:
    obj = ctx["object"]
    if ctx["label"] == 0:
        first, _, rest = obj.partition(" ")
        return f"a normal {rest}" if first.lower() in ("a", "an", "the") and rest else f"a normal {obj}"
    adjective = ctx.get("severity") or ""
    defect = (adjective + " " if adjective else "") + defect_words(ctx.get("defect", ""))
    loc = ctx.get("location")
    where = ("on surface" if not loc else loc if str(loc).lower().startswith(P.PREPOSITIONS) else f"at the {loc}")
    return f"{obj} with {defect} {where}"


def hint(sample: AnomalySample, mask: np.ndarray | None = None) -> str:
    """Stage 1, the paper's hint: "a capsule with poke mark at the top left"; "a normal capsule"."""
    return sample_context(sample, mask)["hint"]


def mask_boxes(mask: np.ndarray, dilate: int | None = None, merge_distance: int | None = None
               ) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x0, y0, x1, y1)`` (inclusive pixels) around the defect regions of a mask.

    The mask is dilated by ``dilate`` px (default 1 % of the long side, ≥ 1; a separable max
    filter), connected components are boxed, and boxes whose gap is ≤ ``merge_distance`` px
    (default 3 % of the long side) are merged until none are that close. Sorted top to bottom."""
    ndimage = _ndimage()
    m = np.asarray(mask) > 0  # (H, W) bool
    if m.ndim != 2:
        raise DataError(f"mask must be 2-D (H, W), got shape {m.shape}")
    if not m.any():
        return []
    long_side = max(m.shape)
    d = max(1, round(0.01 * long_side)) if dilate is None else int(dilate)
    gap_max = round(0.03 * long_side) if merge_distance is None else int(merge_distance)
    grown = ndimage.maximum_filter(m.view(np.uint8), size=2 * d + 1) if d > 0 else m.view(np.uint8)
    labels, _ = ndimage.label(grown)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1]
                      for s in ndimage.find_objects(labels)])  # (n, 4) x0 y0 x1 y1
    from scipy.sparse.csgraph import connected_components

    while len(boxes) > 1:
        gx = np.maximum(boxes[:, None, 0] - boxes[None, :, 2], boxes[None, :, 0] - boxes[:, None, 2])  # (n, n)
        gy = np.maximum(boxes[:, None, 1] - boxes[None, :, 3], boxes[None, :, 1] - boxes[:, None, 3])  # (n, n)
        n_groups, group = connected_components(np.maximum(gx, gy) - 1 <= gap_max, directed=False)
        if n_groups == len(boxes):
            break
        merged = np.empty((n_groups, 4), boxes.dtype)  # (g, 4)
        merged[:, :2] = np.iinfo(boxes.dtype).max
        merged[:, 2:] = -1
        np.minimum.at(merged[:, :2], group, boxes[:, :2])
        np.maximum.at(merged[:, 2:], group, boxes[:, 2:])
        boxes = merged
    order = np.lexsort((boxes[:, 0], boxes[:, 1]))
    return [tuple(int(v) for v in b) for b in boxes[order]]


def draw_boxes(image: Image.Image, mask: np.ndarray | None, dilate: int | None = None,
               color: tuple[int, int, int] = (255, 0, 0), width: int | None = None,
               merge_distance: int | None = None) -> Image.Image:
    """Stage 2: a copy of ``image`` with `mask_boxes` drawn as ``color`` rectangles ``width`` px wide
    (default long side / 150, ≥ 2) drawn inward from each box. A mask of another size is resized
    (nearest) to the image first; no mask → a plain copy."""
    out = image.convert("RGB")  # always a new image
    if mask is None:
        return out
    m = np.asarray(mask) > 0
    if m.shape != (out.height, out.width):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(out.size, Image.NEAREST)) > 0
    w = max(2, round(max(out.size) / 150)) if width is None else int(width)
    draw = ImageDraw.Draw(out)
    for box in mask_boxes(m, dilate, merge_distance):
        draw.rectangle(box, outline=tuple(color), width=w)
    return out


def _writer_image(sample: AnomalySample, writer: Writer, ctx: dict, boxes: bool, mask) -> Image.Image | None:
    if not getattr(writer, "multimodal", False):
        return None
    image = sample.load_image()
    if boxes and sample.label == 1 and mask is not None:
        ctx["boxed"] = True
        return draw_boxes(image, mask)
    return image


def _answer(writer: Writer, task: str, image, ctx: dict, sample: AnomalySample) -> str:
    text = writer.write(task, ctx["hint"], image, ctx)
    if not isinstance(text, str) or not text.strip():
        raise WriterError(f"writer {getattr(writer, 'name', writer)!s} gave no text for task {task!r} "
                          f"of sample {sample.id or sample.image!s}")
    return text.strip()


def describe(sample: AnomalySample, writer: Writer, image: Image.Image | None = None,
             context: dict | None = None) -> str:
    """Stage 3: the writer's detailed description ("describe" for anomalies, "normal_description"
    for normal samples). Multimodal writers see ``image`` (default: the sample with red boxes)."""
    ctx = dict(context) if context is not None else sample_context(sample)
    if image is None and getattr(writer, "multimodal", False):
        mask = sample.load_mask() if sample.label == 1 and sample.mask is not None else None
        image = _writer_image(sample, writer, ctx, True, mask)
    task = "describe" if sample.label == 1 else "normal_description"
    return _answer(writer, task, image, ctx, sample)


def _as_rng(rng) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def conversations(sample: AnomalySample, description: str, writer: Writer, rng, image: Image.Image | None = None,
                  context: dict | None = None) -> list[dict[str, str]]:
    """Stage 4: LLaVA turns ``[{"from": "human"|"gpt", "value": ...}, ...]``.

    Round 1 is the one-word detection question (answer exactly "Yes" / "No"); then, for anomalous
    samples, description (``description``), cause, effect and prevention; for normal samples the
    description and what an inspector should check. Questions are drawn from the phrase bank with
    ``rng`` (a ``random.Random`` or a seed); follow-up answers come from ``writer``."""
    rng = _as_rng(rng)
    ctx = dict(context) if context is not None else sample_context(sample)
    cat = ctx["category"]
    rounds = [(rng.choice(P.DETECT_QUESTIONS).format(cat=cat), "Yes" if sample.label == 1 else "No")]
    tasks = ("describe", "cause", "effect", "prevention") if sample.label == 1 else ("normal_description", "check")
    image = image if getattr(writer, "multimodal", False) else None
    for task in tasks:
        question = rng.choice(P.QUESTIONS[task]).format(cat=cat)
        if task in ("describe", "normal_description"):
            answer = description
        else:
            answer = _answer(writer, task, image, dict(ctx, question=question, description=description), sample)
        rounds.append((question, answer))
    turns = []
    for i, (q, a) in enumerate(rounds):
        turns += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return turns


def detection_counts(records: Sequence[dict]) -> tuple[int, int]:
    """(# "Yes", # "No") one-word detection rounds: records whose first answer is exactly Yes / No."""
    first = [r["conversations"][1]["value"] if len(r["conversations"]) > 1 else None for r in records]
    return first.count("Yes"), first.count("No")


def balance(records: Sequence[dict], rng) -> list[dict]:
    """Stage 5: equal numbers of "Yes" and "No" one-word detection rounds.

    From randomly chosen records of the majority answer, only the detection round (first human +
    gpt turn) is dropped — their description / cause / ... rounds stay, and ``<image>\\n`` moves to
    the new first question; a record left without turns is dropped. Those records get
    ``meta["detection_dropped"] = True``. Inputs are not modified; order is kept."""
    rng = _as_rng(rng)
    first = [r["conversations"][1]["value"] if len(r["conversations"]) > 1 else None for r in records]
    yes = [i for i, a in enumerate(first) if a == "Yes"]
    no = [i for i, a in enumerate(first) if a == "No"]
    major, minor = (yes, no) if len(yes) > len(no) else (no, yes)
    drop = set(rng.sample(major, len(major) - len(minor)))
    out = []
    for i, rec in enumerate(records):
        if i not in drop:
            out.append(rec)
            continue
        rest = [dict(t) for t in rec["conversations"][2:]]
        if not rest:
            continue
        rest[0]["value"] = "<image>\n" + rest[0]["value"]
        out.append({**rec, "conversations": rest, "meta": {**rec.get("meta", {}), "detection_dropped": True}})
    return out


def _features(out, n: int) -> np.ndarray:
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    feats = np.asarray(out, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise DataError(f"dedup encoder must return an (N, D) array for N={n} images, got shape {feats.shape}")
    return feats


def deduplicate(samples: Sequence[AnomalySample], encoder: Callable, threshold: float = 0.99,
                batch_size: int = 32) -> tuple[list[AnomalySample], list[tuple[int, int, float]]]:
    """Stage 6: drop near-duplicate images, keep-first (paper: WebAD, cosine > 0.99).

    ``encoder(list[PIL]) -> (N, D)`` array or tensor, called on batches of ``batch_size``. Features
    are L2-normalised; sample i is removed when its cosine with an earlier *kept* sample exceeds
    ``threshold``. Returns (kept samples, ``(removed index, kept index, cosine)`` pairs)."""
    samples = list(samples)
    if not samples:
        return [], []
    feats = np.concatenate([_features(encoder([s.load_image() for s in samples[i:i + batch_size]]),
                                      len(samples[i:i + batch_size])) for i in range(0, len(samples), batch_size)])
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)  # (N, D) unit rows
    kept_idx: list[int] = []
    removed: list[tuple[int, int, float]] = []
    chunk = 1024
    for start in range(0, len(feats), chunk):
        block = feats[start:start + chunk]  # (b, D)
        to_kept = block @ feats[kept_idx].T if kept_idx else np.zeros((len(block), 0), np.float32)  # (b, k)
        within = block @ block.T  # (b, b)
        new_kept: list[int] = []  # positions within the block
        for i in range(len(block)):
            sims = np.concatenate([to_kept[i], within[i, new_kept]])  # (k + kept so far,)
            owners = kept_idx + [start + j for j in new_kept]
            j = int(np.argmax(sims)) if len(sims) else -1
            if j >= 0 and sims[j] > threshold:
                removed.append((start + i, owners[j], float(sims[j])))
            else:
                new_kept.append(i)
        kept_idx += [start + j for j in new_kept]
    return [samples[i] for i in kept_idx], removed


def _record_id(sample: AnomalySample, index: int) -> str:
    return str(sample.id) if sample.id else f"sample-{index:06d}"


def _image_path(sample: AnomalySample, rid: str, image_dir, image_root) -> str:
    path = sample.meta.get("path") or (sample.image if isinstance(sample.image, (str, Path)) else None)
    if path is None:
        if image_dir is None:
            raise DataError(f"{rid}: the image is in memory; give meta['path'] or build_instructions(image_dir=...)")
        path = Path(image_dir) / (re.sub(r"[^A-Za-z0-9._-]+", "_", rid) + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        sample.load_image().save(path)
    path = Path(path)
    if image_root is not None:
        path = Path(os.path.relpath(path, image_root))
    return path.as_posix()


def build_instructions(samples: Sequence[AnomalySample], writer: Writer, *, boxes: bool = True,
                       dedup_encoder: Callable | None = None, dedup_threshold: float = 0.99,
                       balance_detection: bool = True, seed: int = 0, progress: bool = True,
                       image_dir: str | Path | None = None, image_root: str | Path | None = None,
                       with_meta: bool = True) -> list[dict]:
    """Stage 7: samples → LLaVA records (see the module docstring for the record and ``image``).

    Order: `deduplicate` (when ``dedup_encoder`` is given), then per sample `sample_context` /
    `hint`, `draw_boxes` (when ``boxes`` and the writer is multimodal), `describe`,
    `conversations`; finally `balance` (when ``balance_detection``). ``seed`` drives question
    choice and balancing; the writer's own randomness is its own (TemplateWriter(seed)).
    ``with_meta=False`` leaves out the ``meta`` key (plain LLaVA records, e.g. for strict validators
    such as ``adkit.data.llava.write_llava_json`` without ``allow_extra=True``)."""
    from tqdm.auto import tqdm

    samples = list(samples)
    if dedup_encoder is not None:
        samples, _ = deduplicate(samples, dedup_encoder, dedup_threshold)
    rng, records, seen = random.Random(seed), [], set()
    for index, sample in enumerate(tqdm(samples, desc=f"instructions ({writer.name})", disable=not progress)):
        rid = _record_id(sample, index)
        if rid in seen:
            raise DataError(f"duplicate sample id {rid!r}: record ids must be unique")
        seen.add(rid)
        path = _image_path(sample, rid, image_dir, image_root)
        mask = sample.load_mask() if sample.label == 1 and sample.mask is not None else None
        ctx = sample_context(sample, mask)
        image = _writer_image(sample, writer, ctx, boxes, mask)
        description = describe(sample, writer, image=image, context=ctx)
        turns = conversations(sample, description, writer, rng, image=image, context=ctx)
        meta = {"writer": writer.name, "category": sample.category, "defect": sample.defect,
                "label": int(sample.label), "source": sample.source, "hint": ctx["hint"]}
        records.append({"id": rid, "image": path, "conversations": turns, "meta": meta})
    records = balance(records, rng) if balance_detection else records
    return records if with_meta else [{k: v for k, v in r.items() if k != "meta"} for r in records]
