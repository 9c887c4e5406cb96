"""Training-free zero-shot anomaly scorers beside the expert (``adkit.zeroshot``).

The frozen vision tower already separates defects from normal patches without any training;
these scorers read it directly and return the same :class:`adkit.Detection` as
``AnomalyOV.detect`` (score in [0, 1], map at image resolution):

    self_similarity(model, images)            in-image patch kNN (AnomalyDINO, WACV 2025, zero-shot
                                              variant): single image, inductive
    mutual(model, images, reference=None)     MuSc (ICLR 2024): each image scored against the other
                                              unlabeled images: transductive, never uses labels

Both are ``model.detect(images, method=...)``; the tensor algebra is in
:mod:`adkit.zeroshot.scores`. Which hidden states they read is a preset setting
(``config.self_levels``, ``config.mutual_levels``).
"""

from __future__ import annotations

import importlib

#: the tensor algebra, imported on first use (torch): the method names below stay cheap to import
_SCORES = ("aggregate_neighbourhood", "half_chord", "interval_mean", "mutual_map", "neighbourhood_mask", "rescore",
           "self_similarity_map", "top_mean")

METHODS = ("expert", "self", "mutual", "expert+self")
#: how each method may be compared: what it sees at test time
SETTINGS = {
    "expert": "inductive, trained in stage 1",
    "self": "inductive, training-free",
    "mutual": "transductive, training-free",
    "expert+self": "inductive, trained + training-free",
}
#: one line per method, for --help texts, reports and the demo
DESCRIPTIONS = {
    "expert": "the anomaly expert (LTFM + token selector), one image at a time",
    "self": "in-image patch kNN on the frozen tower: a patch unlike the rest of its own image",
    "mutual": "MuSc mutual scoring: every patch against the other unlabeled images of the batch",
    "expert+self": "mean of the expert's and the self-similarity calibrated scores and maps",
}

__all__ = [
    "METHODS", "SETTINGS", "DESCRIPTIONS", "self_similarity", "mutual", "method_label", "aggregate_neighbourhood",
    "half_chord", "interval_mean", "mutual_map", "neighbourhood_mask", "rescore", "self_similarity_map", "top_mean",
]


def method_label(method: str) -> str:
    """``"mutual (transductive, training-free)"``: a method with its setting, for table rows."""
    if method not in SETTINGS:
        raise ValueError(f"unknown detection method {method!r}; choose one of {METHODS}")
    return f"{method} ({SETTINGS[method]})"


def self_similarity(model, images, *, image_size: int | None = None):
    """In-image patch kNN per image (inductive): ``model.detect(images, method="self")``."""
    return model.detect(images, method="self", image_size=image_size)


def mutual(model, images, *, reference=None, image_size: int | None = None):
    """MuSc mutual scoring over ``images`` (+ unlabeled ``reference`` images), transductive:
    ``model.detect(images, method="mutual", reference=reference)``."""
    return model.detect(images, method="mutual", reference=reference, image_size=image_size)


def __getattr__(name: str):
    if name in _SCORES:
        return getattr(importlib.import_module(".scores", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
