"""Evaluation runners: the paper's three protocols end to end (paper §5.1–5.3; docs/architecture.md §7).

    zero_shot            the expert alone (`model.detect`, batched): image AUROC, AP and
                         F1-max per class, then macro over classes (paper Table 2); where
                         masks exist pixel AUROC, AP, F1-max and AUPRO (MVTec AD's metric,
                         :mod:`adkit.eval.localisation`); per-sample scores, ROC and PR points
                         and the best / worst localised image per class kept.
    visa_dr_detection    VisA-D&R detection and multi-turn reasoning (paper Table 4): in
    visa_dr_reasoning    :mod:`adkit.eval.visa_dr_runners`, re-exported here.

Inputs are duck-typed: samples need ``image``, ``label``, ``category`` (`AnomalySample`);
benchmarks need ``detection`` items (``image``, ``label``, ``category``, ``question``) and
``reasoning`` items (``image``, ``category``, ``turns`` = [(question, reference), ...]).
`load_samples` / `load_benchmark` read folders and packages through the data loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import localisation, metrics

__all__ = [
    "AVERAGING", "SOURCES", "ALIASES", "ZeroShotResult", "LocalisationExample", "DetectionResult", "ReasoningResult",
    "VisaDRResult",
    "zero_shot", "score_result", "mutual_reference_curve", "PhotoCheck", "photo_check", "visa_dr_detection", "detection_summary", "visa_dr_reasoning", "generate_answers", "load_samples",
    "load_benchmark", "turn_kind",
]

AVERAGING = "macro over classes (per-class value, then the unweighted mean of the classes)"
SOURCES = ("elpv", "mvtec", "visa", "folder", "heldout")
_DATASET_NAMES = {"elpv": "ELPV", "mvtec": "MVTec AD", "visa": "VisA", "heldout": "held-out"}
# Result keys are anomalib's metric names (localisation.NAMES); these older keys name the same
# values and stay in `adkit eval zero-shot --json` because scripts and tests read them.
ALIASES = {"image_auroc": "image_AUROC", "f1_max": "image_F1Max", "pixel_auroc": "pixel_AUROC"}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="img", leave=False)


def _preset(model) -> str:
    return getattr(getattr(model, "config", None), "name", None) or type(model).__name__


def _sample_name(s, i: int) -> str:
    return str(getattr(s, "id", "") or (s.image if isinstance(s.image, str) else f"sample {i}"))


def _image(s, i: int) -> Image.Image:
    """The RGB image of a sample or benchmark item; errors name the record."""
    from ..data.records import DataError
    from ..images import load_image

    try:
        img = s.image
        return load_image(Image.fromarray(img) if isinstance(img, np.ndarray) else img)
    except Exception as e:  # noqa: BLE001 — re-raised with the record's name
        raise DataError(f"{_sample_name(s, i)} ({getattr(s, 'category', '?')}): cannot load image: {e}") from e


# ---------------------------------------------------------------------------- zero-shot (Table 2)

@dataclass
class LocalisationExample:
    """One image of the report's localisation panel: its map, the mask predicted at the class's
    pixel-F1-max threshold, and the truth, all at the size pixel metrics were computed at."""

    id: str
    category: str
    kind: str  # "best" or "worst" localised anomalous image of its class
    f1: float  # pixel F1 of this image's predicted mask against its ground truth
    threshold: float  # the class's pixel F1-max threshold
    image: np.ndarray  # [H, W, 3] uint8
    anomaly_map: np.ndarray  # [H, W] float32
    mask: np.ndarray  # [H, W] bool ground truth

    @property
    def predicted(self) -> np.ndarray:
        return self.anomaly_map >= self.threshold  # [H, W] bool


@dataclass
class ZeroShotResult:
    """Expert-only detection on a set of samples (paper Table 2 protocol)."""

    dataset: str
    preset: str
    ids: list[str]
    categories: list[str]
    labels: np.ndarray  # [N] 0/1
    scores: np.ndarray  # [N] anomaly_score per sample, in input order
    image_auroc: dict[str, float]  # per class
    image_auroc_macro: float  # macro over classes
    f1_max: dict[str, float]
    f1_max_macro: float
    roc: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # per class (fpr, tpr, thresholds)
    pooled_auroc: float | None  # all images as one pool (not the paper's number; for reference)
    pixel_auroc: dict[str, float] = field(default_factory=dict)  # classes with masks only
    pixel_auroc_macro: float | None = None
    image_ap: dict[str, float] = field(default_factory=dict)  # per class, as image_auroc
    image_ap_macro: float | None = None
    pr: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # (precision, recall, thr)
    pixel: dict[str, localisation.PixelMetrics] = field(default_factory=dict)  # classes with masks only
    examples: dict[str, list[LocalisationExample]] = field(default_factory=dict)  # best, worst per mask class
    skipped: dict[str, str] = field(default_factory=dict)  # class → why it has no image AUROC
    averaging: str = AVERAGING
    untrained: tuple = ()  # the model's parts without trained weights (model.untrained) when it ran
    method: str = "expert"  # the detection method (adkit.zeroshot.METHODS)

    @property
    def label(self) -> str:
        """The row label: ``"adkit small · mutual (transductive, training-free)"``."""
        from ..zeroshot import method_label

        return f"adkit {self.preset} · {method_label(self.method)}"

    def restrict(self, keep, dataset: str) -> "ZeroShotResult":
        """The same scores on the samples where ``keep`` [N] is True, as a result named ``dataset``
        (e.g. ELPV's "clear" protocol from a "graded" run; pixel metrics are not carried over)."""
        keep = np.asarray(keep, dtype=bool)
        return score_result(dataset, self.preset, [i for i, k in zip(self.ids, keep) if k],
                            [c for c, k in zip(self.categories, keep) if k], self.labels[keep], self.scores[keep],
                            method=self.method, untrained=self.untrained)

    @property
    def n(self) -> int:
        return int(self.labels.size)

    def _pixel_macro(self, name: str) -> float | None:
        return metrics.macro({c: p.named()[name] for c, p in self.pixel.items()}) if self.pixel else None

    def summary(self) -> dict[str, float | None]:
        """Macro over classes of every metric, under anomalib's names (`localisation.NAMES`);
        pixel metrics over the classes with masks, None without any."""
        return {"image_AUROC": self.image_auroc_macro, "image_AP": self.image_ap_macro,
                "image_F1Max": self.f1_max_macro, "pixel_AUROC": self.pixel_auroc_macro,
                "pixel_AP": self._pixel_macro("pixel_AP"),
                "pixel_F1Max": self._pixel_macro("pixel_F1Max"), "pixel_AUPRO": self._pixel_macro("pixel_AUPRO")}

    def columns(self) -> list[str]:
        """The per-class table's columns: the pixel ones only when some class has masks."""
        pixel = ["pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO"] if self.pixel or self.pixel_auroc else []
        return ["class", "n", "anomalous", "image_AUROC", "image_F1Max", "image_AP", *pixel, "note"]

    def per_class_rows(self) -> list[dict[str, Any]]:
        """One dict per class with every key of `columns()` plus the pixel ones (None where absent)."""
        cats, y = np.asarray(self.categories), self.labels
        rows = []
        for c in sorted(set(self.categories)):
            sel = cats == c
            px = self.pixel[c].named() if c in self.pixel else {}
            rows.append({"class": c, "n": int(sel.sum()), "anomalous": int(y[sel].sum()),
                         "image_AUROC": self.image_auroc.get(c), "image_F1Max": self.f1_max.get(c),
                         "image_AP": self.image_ap.get(c), "pixel_AUROC": self.pixel_auroc.get(c),
                         "pixel_AP": px.get("pixel_AP"), "pixel_F1Max": px.get("pixel_F1Max"),
                         "pixel_AUPRO": px.get("pixel_AUPRO"), "note": self.skipped.get(c, "")})
        return rows


def _pixel_pair(s, det, pixel_size: int):
    """(mask, map) at most ``pixel_size`` on the long side; None when the truth is unknown."""
    amap = np.asarray(det.anomaly_map, dtype=np.float32)  # [H, W]
    h, w = amap.shape
    scale = min(1.0, pixel_size / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (W, H) for PIL
    if getattr(s, "mask", None) is not None:
        mask = s.load_mask(size, image_size=(w, h)) if hasattr(s, "load_mask") else \
            np.asarray(Image.fromarray((np.asarray(s.mask) > 0).astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    elif int(s.label) == 0:
        mask = np.zeros(size[::-1], dtype=bool)  # a normal image: no anomalous pixel
    else:
        return None  # anomalous without a mask: pixel truth unknown
    if size != (w, h):
        amap = np.asarray(Image.fromarray(amap, mode="F").resize(size, Image.BILINEAR))  # [H', W']
    return mask, amap


def zero_shot(model, samples: Sequence, batch_size: int = 8, progress: bool = True, dataset: str = "custom",
              pixel_size: int = 224, method: str = "expert", group=None, mutual_batch: int = 64,
              seed: int = 0) -> ZeroShotResult:
    """Score ``samples`` with ``model.detect(method=...)`` (``batch_size`` images per call).

    Image AUROC, AP and F1-max per class, then macro over classes (paper Table 2). Pixel
    AUROC, AP, F1-max and AUPRO (`localisation.pixel_metrics`: FPR limit 0.3, 8-connected
    regions, as MVTec AD) per class where any sample of the class has a mask (normal images
    count as all-normal, anomalous images without a mask are left out), with maps and masks
    resized to at most ``pixel_size`` px on the long side (masks nearest-neighbour, so a thin
    region may split or vanish at that size). For each such class the anomalous images with
    the highest and lowest pixel F1 at the class's F1-max threshold are kept in ``examples``.
    A class with only one label is skipped (reason kept in ``skipped``); if no class remains,
    a ValueError says so.

    ``method="mutual"`` is transductive: images are scored against the other unlabeled images
    of their *group* (``group(sample)``; default: the class, as MuSc batches per category),
    split into seeded random batches of at most ``mutual_batch`` images. Labels are never used.
    """
    return zero_shot_methods(model, samples, (method,), batch_size=batch_size, progress=progress, dataset=dataset,
                             pixel_size=pixel_size, group=group, mutual_batch=mutual_batch, seed=seed)[method]


def zero_shot_methods(model, samples: Sequence, methods: Sequence[str], batch_size: int = 8, progress: bool = True,
                      dataset: str = "custom", pixel_size: int = 224, group=None, mutual_batch: int = 64,
                      seed: int = 0) -> dict[str, ZeroShotResult]:
    """:func:`zero_shot` for several ``methods`` at once: {method: result}. The single-image
    methods (expert, self, expert+self) share one tower pass per batch; mutual runs on its own
    batches (its groups). Each result equals a separate ``zero_shot`` run of that method."""
    import torch

    from ..detection import INDUCTIVE, score_inductive
    from ..validate import finite_scores
    from ..zeroshot import METHODS

    samples, methods = list(samples), tuple(dict.fromkeys(methods))
    if not samples:
        raise ValueError("zero_shot: no samples to evaluate")
    if not methods:
        raise ValueError("zero_shot: no methods to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mutual_batch < 2:
        raise ValueError(f"mutual_batch must be >= 2 (each image is scored against the others), got {mutual_batch}")
    labels = np.array([int(s.label) for s in samples])
    bad = np.flatnonzero(~np.isin(labels, (0, 1)))
    if bad.size:
        raise ValueError(f"{_sample_name(samples[bad[0]], bad[0])}: label must be 0 or 1, got {labels[bad[0]]}")
    cats = [str(s.category) for s in samples]
    mask_classes = {c for s, c in zip(samples, cats) if getattr(s, "mask", None) is not None}
    scores = {m: np.empty(len(samples)) for m in methods}
    pix = {m: {c: ([], [], []) for c in mask_classes} for m in methods}  # masks, maps, indices
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown detection method {unknown[0]!r}; choose one of {METHODS}")
    inductive = tuple(m for m in methods if m in INDUCTIVE)
    passes = ([(inductive, _batches(samples, cats, "expert", batch_size, group, mutual_batch, seed))] if inductive else []) \
        + ([(("mutual",), _batches(samples, cats, "mutual", batch_size, group, mutual_batch, seed))] if "mutual" in methods else [])
    bar = _progress(len(samples) * len(passes), f"zero-shot {dataset} ({', '.join(methods)})", progress)
    for group_methods, batches in passes:
        for idx in batches:
            chunk = [samples[i] for i in idx]
            images = [_image(s, i) for i, s in zip(idx, chunk)]
            if group_methods == ("mutual",):
                if len(images) < 2:
                    raise ValueError(f"{_sample_name(chunk[0], idx[0])}: method 'mutual' needs at least 2 images per "
                                     "group (it scores each image against the others); this group has 1")
                found = {"mutual": model.detect(images, method="mutual")}
            else:
                with torch.no_grad():
                    found = score_inductive(model, images, group_methods)
                for m, dets in found.items():
                    finite_scores([d.score for d in dets], [_sample_name(s, i) for i, s in zip(idx, chunk)], f"{m} score")
            for m, dets in found.items():
                for i, s, det in zip(idx, chunk, dets):
                    scores[m][i] = float(det.score)
                    if cats[i] in mask_classes:
                        pair = _pixel_pair(s, det, pixel_size)
                        if pair is not None:
                            for lst, v in zip(pix[m][cats[i]], (*pair, i)):
                                lst.append(v)
            bar.update(len(chunk))
    bar.close()
    return {m: _result(model, samples, cats, labels, scores[m], pix[m], dataset, m) for m in methods}


def _result(model, samples, cats, labels, scores, pix, dataset, method) -> ZeroShotResult:
    pixel, examples = {}, {}
    for c, (masks, maps, where) in sorted(pix.items()):
        if masks and any(m.any() for m in masks) and not all(m.all() for m in masks):
            pixel[c] = localisation.pixel_metrics(masks, maps)
            examples[c] = _examples(samples, c, masks, maps, where, pixel[c].threshold)
    return score_result(dataset, _preset(model), [_sample_name(s, i) for i, s in enumerate(samples)], cats, labels,
                        scores, method=method, pixel=pixel, examples=examples,
                        untrained=tuple(getattr(model, "untrained", ()) or ()))


def _examples(samples, category: str, masks, maps, where, threshold: float) -> list[LocalisationExample]:
    """The best and the worst localised anomalous image of a class (by the pixel F1 of its map
    thresholded at ``threshold``; ties go to the earlier sample), each with its image at map size."""
    f1 = {}
    for k, (m, a) in enumerate(zip(masks, maps)):
        if m.any():
            pred = a >= threshold
            f1[k] = 2.0 * float((pred & m).sum()) / float(pred.sum() + m.sum())  # Dice = pixel F1 of this image
    best, worst = max(f1, key=f1.get), min(f1, key=f1.get)
    out = []
    for kind, k in (("best", best), ("worst", worst)):
        i = where[k]
        h, w = maps[k].shape
        image = np.asarray(_image(samples[i], i).resize((w, h), Image.BILINEAR))  # [H, W, 3]
        out.append(LocalisationExample(_sample_name(samples[i], i), category, kind, f1[k], float(threshold), image,
                                       np.asarray(maps[k], dtype=np.float32), np.asarray(masks[k], dtype=bool)))
    return out


def _batches(samples, cats, method, batch_size, group, mutual_batch, seed) -> list[list[int]]:
    """Indices per ``model.detect`` call: runs of ``batch_size``; for mutual, groups split into
    near-equal seeded random batches of at most ``mutual_batch`` (a lone leftover never occurs)."""
    if method != "mutual":
        return [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    keys = [str(group(s)) if group else c for s, c in zip(samples, cats)]
    out = []
    rng = np.random.default_rng(seed)
    for key in sorted(set(keys)):
        members = [i for i, k in enumerate(keys) if k == key]
        order = [members[j] for j in rng.permutation(len(members))]
        parts = -(-len(order) // mutual_batch)  # ceil
        out += [sorted(part.tolist()) for part in np.array_split(np.array(order), parts)]
    return out


def score_result(dataset: str, preset: str, ids, categories, labels, scores, *, method: str = "expert",
                 pixel_auroc: dict | None = None, untrained: tuple = (), pixel: dict | None = None,
                 examples: dict | None = None) -> ZeroShotResult:
    """The metrics of one run from its per-image labels and scores (per class, then macro).

    ``pixel``: {class: `localisation.PixelMetrics`}; its AUROCs fill ``pixel_auroc`` (an explicit
    ``pixel_auroc`` {class: value} is taken as given, for runs without the other pixel metrics)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    c_arr = np.asarray(categories)
    image_auroc, f1, roc, ap, pr, skipped = {}, {}, {}, {}, {}, {}
    for c in sorted(set(categories)):
        sel = c_arr == c
        n_pos = int(labels[sel].sum())
        if n_pos == 0 or n_pos == int(sel.sum()):
            skipped[c] = f"needs both labels, has {n_pos} anomalous and {int(sel.sum()) - n_pos} normal"
            continue
        image_auroc[c] = metrics.auroc(labels[sel], scores[sel])
        f1[c] = metrics.f1_max(labels[sel], scores[sel])[0]
        roc[c] = metrics.roc_curve(labels[sel], scores[sel])
        ap[c] = localisation.average_precision(labels[sel], scores[sel])
        pr[c] = localisation.precision_recall_curve(labels[sel], scores[sel])
    if not image_auroc:
        raise ValueError(f"zero_shot on {dataset}: no class has both normal and anomalous samples "
                         f"({'; '.join(f'{c}: {r}' for c, r in skipped.items())})")
    pixel = dict(pixel or {})
    pixel_auroc = dict(pixel_auroc or {c: p.auroc for c, p in pixel.items()})
    both = 0 < labels.sum() < labels.size
    return ZeroShotResult(
        dataset=dataset, preset=preset, ids=list(ids), categories=list(categories), labels=labels, scores=scores,
        image_auroc=image_auroc, image_auroc_macro=metrics.macro(image_auroc), f1_max=f1, f1_max_macro=metrics.macro(f1),
        roc=roc, pooled_auroc=metrics.auroc(labels, scores) if both else None, pixel_auroc=pixel_auroc,
        pixel_auroc_macro=metrics.macro(pixel_auroc) if pixel_auroc else None, image_ap=ap,
        image_ap_macro=metrics.macro(ap), pr=pr, pixel=pixel, examples=dict(examples or {}), skipped=skipped,
        untrained=untrained, method=method)


def mutual_reference_curve(model, samples: Sequence, shares: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                           references: int = 32, group=None, seed: int = 0, progress: bool = True) -> dict[float, float]:
    """Image AUROC of ``mutual`` when a fixed share of every image's references is anomalous.

    A stress test of the transductive setting: for each share s, every sample is scored against
    ``references`` other samples of its group (``group(sample)``, default the class) drawn at
    random with round(s · references) anomalous ones. Labels only *compose* the reference sets
    here; the score itself never sees a label. Returns {share: AUROC over all samples, pooled}.
    Base-view features are computed once; each score is one ``mutual_map`` row.
    """
    import torch

    from ..zeroshot.scores import mutual_map

    samples = list(samples)
    labels = np.array([int(s.label) for s in samples])
    keys = [str(group(s)) if group else str(s.category) for s in samples]
    levels = model.config.mutual_levels
    feats = model.base_view_features([_image(s, i) for i, s in enumerate(samples)], levels)
    rng = np.random.default_rng(seed)
    curve = {}
    bar = _progress(len(shares) * len(samples), "mutual reference curve", progress)
    for share in shares:
        n_bad = int(round(share * references))
        scores = np.empty(len(samples))
        for i in range(len(samples)):
            pool = [j for j in range(len(samples)) if j != i and keys[j] == keys[i]]
            bad = [j for j in pool if labels[j] == 1]
            good = [j for j in pool if labels[j] == 0]
            if len(bad) < n_bad or len(good) < references - n_bad:
                raise ValueError(f"group {keys[i]!r} has {len(bad)} anomalous and {len(good)} normal references; "
                                 f"share {share} of {references} needs {n_bad} and {references - n_bad}")
            refs = list(rng.choice(bad, n_bad, replace=False)) + list(rng.choice(good, references - n_bad, replace=False))
            idx = torch.tensor([i, *refs])
            scores[i] = float(mutual_map([feats[lv][idx] for lv in levels], num_queries=1)[0].max())
            bar.update(1)
        curve[float(share)] = metrics.auroc(labels, scores)
    bar.close()
    return curve


@dataclass
class PhotoCheck:
    """Verdicts on clean everyday photos and on visibly damaged copies of them (one method)."""

    method: str
    names: list[str]
    threshold: float
    calibrated: bool
    clean: np.ndarray  # [n] scores of the clean photos
    damaged: np.ndarray  # [n] scores of their damaged copies

    @property
    def clean_flagged(self) -> list[str]:
        """Clean photos called anomalous (score >= threshold)."""
        return [n for n, s in zip(self.names, self.clean) if s >= self.threshold]

    @property
    def raised(self) -> int:
        """How many damaged copies score above their clean original."""
        return int((self.damaged > self.clean).sum())

    def rows(self) -> list[list]:
        return [[n, float(c), float(d), "yes" if c >= self.threshold else "", "yes" if d > c else "no"]
                for n, c, d in zip(self.names, self.clean, self.damaged)]


def photo_check(model, method: str = "expert", names: Sequence[str] | None = None) -> PhotoCheck:
    """Score ten public-domain scikit-image photos and a damaged copy of each (a severe synthetic
    defect, one family per photo, seeded) with ``model.detect(method=...)``: a calibrated model
    should call the clean ones normal and score every damaged copy above its original. The photos
    (:data:`adkit.data.photos.CHECK_PHOTOS`) are never used for training or calibration."""
    from skimage import data as skdata

    from ..data.photos import CHECK_PHOTOS
    from ..data.synth import DEFECT_FAMILIES, synthesize

    names = list(names or CHECK_PHOTOS)
    clean = [Image.fromarray(getattr(skdata, n)()).convert("RGB") for n in names]
    damaged = [synthesize(im, DEFECT_FAMILIES[i % len(DEFECT_FAMILIES)], i, severity="severe").image
               for i, im in enumerate(clean)]
    if method == "mutual":  # transductive: each image against the other clean photos
        before = [model.detect([im], method=method, reference=[x for x in clean if x is not im])[0] for im in clean]
        after = [model.detect([d], method=method, reference=[x for j, x in enumerate(clean) if j != i])[0]
                 for i, d in enumerate(damaged)]
    else:
        before, after = model.detect(clean, method=method), model.detect(damaged, method=method)
    return PhotoCheck(method, names, float(before[0].threshold), bool(before[0].calibrated),
                      np.array([d.score for d in before]), np.array([d.score for d in after]))


def _subsample(samples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def load_samples(source: str, path=None, *, limit: int | None = None, seed: int = 0,
                 categories: Sequence[str] | None = None, per_class: int = 8) -> tuple[str, list]:
    """(dataset name, samples) from a source in `SOURCES`, importing its loader only now.

    ``elpv``: the packaged ELPV set (``limit`` images, seeded); ``mvtec`` / ``visa`` / ``folder``:
    a test split on disk under ``path`` (``limit``: a seeded random subset); ``heldout``: the
    kit's held-out synthetic categories, ``per_class`` images each (half normal).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if source != "elpv" and source != "heldout" and path is None:
        raise ValueError(f"source {source!r} needs a folder path")
    if source == "elpv":
        from ..data.loaders import load_elpv

        return "ELPV", load_elpv(limit=limit, seed=seed)
    if source == "heldout":
        from ..data import normals

        cats = list(categories) if categories else list(normals.categories("test"))
        n_normal = per_class // 2
        samples = normals.make_samples(cats, n_normal, per_class - n_normal, seed)
        return "held-out", _subsample(samples, limit, seed)
    from ..data import loaders

    if source == "mvtec":
        samples = loaders.load_mvtec(path, split="test", categories=categories)
    elif source == "visa":
        samples = loaders.load_visa(path, split="test", categories=categories)
    else:
        from pathlib import Path

        samples = loaders.load_folder(path, category=None if not categories else
                                      categories[0] if len(categories) == 1 else list(categories))
        return Path(path).name or "folder", _subsample(list(samples), limit, seed)
    return _DATASET_NAMES[source], _subsample(list(samples), limit, seed)


# VisA-D&R runners live in their own module; re-exported so ``runners.visa_dr_detection`` works.
from .visa_dr_runners import (  # noqa: E402
    DetectionResult, ReasoningResult, VisaDRResult, detection_summary, generate_answers, load_benchmark,
    turn_kind, visa_dr_detection, visa_dr_reasoning,
)
