"""Train the expert notes' defect reader (``adkit train reader``; the "+ notes" variant, adkit/notes.py).

A standardised multinomial logistic regression (scikit-learn, the reference implementation) from
:func:`adkit.notes.pooled_features` — mid-level tower features over the most self-dissimilar
patches, minus the image's mean — to the defect family, fitted on anomalous images of the kit's
synthetic **train** categories and measured on the **val** categories. The tower is frozen and
nothing else changes; the stored verdict threshold is the model's calibrated expert threshold
(chosen on the val categories, ``adkit eval calibrate``).

The defaults were chosen on the val categories (never the held-out ones): levels
``hidden_states[6]`` (small) over the top 3 % of patches, C = 0.02, 12 anomalous images per family
and train category; the top-10 % pooling and other level sets were a few points lower there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..notes import DefectReader, top_cell
from .features import _progress

__all__ = ["ReaderReport", "reader_features", "fit_reader", "evaluate_reader", "train_reader"]

SHARE, C = 0.03, 0.02  # chosen on the val categories (module docstring)
NOTE_WORDING = {"normal": "nothing stands out.", "anomalous": "likely {noun} ({place})."}


@dataclass
class ReaderReport:
    family_accuracy: float  # share of anomalous images whose family the reader names
    location_accuracy: float  # share whose largest-region 3×3 cell the self map's peak falls in
    images: int
    chance: float  # the most frequent family's share


def reader_features(model, samples, levels: Sequence[int], share: float, batch: int = 8, progress: bool = False):
    """(pooled features [N, D·L] numpy, 3×3 cells of the self-map peaks) of ``samples``' images."""
    from ..notes import pooled_features

    xs, cells = [], []
    for start in _progress(range(0, len(samples), batch), progress, f"reader features ({len(samples)} images)"):
        images = [s.load_image() for s in samples[start:start + batch]]
        states, self_map = model.note_inputs(images, levels)
        xs.append(pooled_features(states, self_map, levels, share).numpy())
        cells += top_cell(self_map)
    return np.concatenate(xs), cells


def fit_reader(x: np.ndarray, families: Sequence[str], levels, share: float, threshold: float, c: float = C,
               nouns: dict | None = None, cells=None, wording: dict | None = None) -> DefectReader:
    """StandardScaler + LogisticRegression(C=c) on ``x`` [N, F] → ``families`` [N], as a DefectReader."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ..data import phrases as P
    from ..data.instruct import LOCATION_CELLS
    from ..data.writers import defect_family

    classes = sorted(set(families))
    if len(classes) < 2:
        raise ValueError(f"the defect reader needs at least two defect families, got {classes}")
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x), list(families))
    order = list(clf.classes_)
    nouns = nouns or {f: P.FAMILIES[defect_family(f)]["syn"][0] if defect_family(f) in P.FAMILIES else f.replace("_", " ")
                      for f in order}
    return DefectReader(tuple(int(v) for v in levels), float(share), float(threshold), tuple(order),
                        tuple(nouns[f] for f in order), tuple(tuple(r) for r in (cells or LOCATION_CELLS)),
                        dict(wording or NOTE_WORDING), torch.tensor(scaler.mean_, dtype=torch.float32),
                        torch.tensor(scaler.scale_, dtype=torch.float32), torch.tensor(clf.coef_, dtype=torch.float32),
                        torch.tensor(clf.intercept_, dtype=torch.float32))


def evaluate_reader(model, reader: DefectReader, samples, progress: bool = False) -> ReaderReport:
    """Family and location accuracy of ``reader`` on labelled anomalous ``samples``."""
    from ..data.instruct import LOCATION_CELLS, location_from_mask

    x, cells = reader_features(model, samples, reader.levels, reader.share, progress=progress)
    pred = reader.probabilities(torch.from_numpy(x)).argmax(1).tolist()
    truth = [s.defect for s in samples]
    where = {p: (r, c) for r, row in enumerate(LOCATION_CELLS) for c, p in enumerate(row)}
    true_cells = [where[location_from_mask(np.asarray(s.load_mask(), bool))] for s in samples]
    counts = np.unique(truth, return_counts=True)[1]
    return ReaderReport(float(np.mean([reader.families[p] == t for p, t in zip(pred, truth)])),
                        float(np.mean([a == b for a, b in zip(cells, true_cells)])), len(samples),
                        float(counts.max() / counts.sum()))


def train_reader(model, per_family: int = 12, seed: int = 21, levels: Sequence[int] | None = None,
                 share: float = SHARE, c: float = C, progress: bool = True) -> tuple[DefectReader, ReaderReport]:
    """Fit on the train categories, measure on the val categories (``per_family // 2`` per family)."""
    from ..data import normals
    from ..data.synth import DEFECT_FAMILIES

    levels = tuple(levels or (model.config.feature_levels[1],))
    n = len(DEFECT_FAMILIES)
    train = normals.make_samples(normals.categories("train"), 0, per_family * n, seed)
    val = normals.make_samples(normals.categories("val"), 0, max(1, per_family // 2) * n, seed + 1)
    x, _ = reader_features(model, train, levels, share, progress=progress)
    reader = fit_reader(x, [s.defect for s in train], levels, share, model.calibration.threshold("expert"), c)
    return reader, evaluate_reader(model, reader, val, progress=progress)
