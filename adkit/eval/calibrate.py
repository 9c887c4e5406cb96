"""Choose each method's verdict threshold on validation data: ``adkit eval calibrate``.

The zero-shot protocol forbids choosing anything on a test set, so thresholds come from the
kit's *validation* categories (:func:`adkit.data.normals.categories` ``"val"``), which no
stage-1 run trains on. For each method: score the validation images with
``model.detect(method=...)`` (``mutual`` per category, as evaluation does), then
:func:`adkit.calibration.fit_method` (balanced-accuracy threshold + logistic). ``expert+self``
averages the expert's and self's calibrated scores, so it is fitted last, on top of those two.
"""

from __future__ import annotations

import datetime
from typing import Sequence

import numpy as np

from ..calibration import Calibration, fit_method
from ..zeroshot import METHODS

__all__ = ["calibrate", "validation_samples"]


def validation_samples(n_normal: int = 48, n_anomalous: int = 48, seed: int = 1, sizes: Sequence[int] = (224, 336, 448),
                       grey: float = 0.3):
    """The kit's val categories with the domain variation stage 1 trains with (scale, grey)."""
    from ..data import normals

    return normals.make_samples(normals.categories("val"), n_normal, n_anomalous, seed, size=list(sizes), grey=grey)


def calibrate(model, samples, methods: Sequence[str] = METHODS, batch_size: int = 8, progress: bool = True,
              source: str = "") -> Calibration:
    """A :class:`Calibration` for ``model`` from labelled validation ``samples`` (never test data)."""
    from .runners import zero_shot

    methods = [m for m in METHODS if m in methods]  # expert+self after expert and self
    if "expert+self" in methods:
        methods = list(dict.fromkeys([m for m in methods if m != "expert+self"] + ["expert", "self", "expert+self"]))
    saved = model.calibration
    fitted = {}
    try:
        for method in methods:
            model.calibration = Calibration(dict(fitted), True, "in progress")
            r = zero_shot(model, samples, batch_size=batch_size, progress=progress, dataset="validation", method=method)
            fitted[method] = fit_method(r.labels, r.scores)
    finally:
        model.calibration = saved
    cats = sorted({str(s.category) for s in samples})
    labels = np.array([int(s.label) for s in samples])
    when = datetime.date.today().isoformat()
    text = source or (f"adkit eval calibrate on {len(samples)} validation images ({int(labels.sum())} anomalous) of "
                      f"{', '.join(cats)}: threshold = max balanced accuracy, logistic = class-balanced fit; {when}")
    return Calibration(fitted, True, text)
