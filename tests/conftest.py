"""Shared fixtures: one tiny model per session (random SigLIP + Qwen2, real Qwen2 tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny():
    from adkit import AnomalyOV

    return AnomalyOV.from_preset("tiny")


@pytest.fixture(scope="session")
def photo():
    """A deterministic non-square RGB test image with structure (gradients + a bright blob)."""
    yy, xx = np.mgrid[0:120, 0:170]
    img = np.stack([xx * 1.5, yy * 2.0, 128 + 60 * np.sin(xx / 9.0)], -1)
    img[40:60, 90:115] = 255
    return Image.fromarray(np.clip(img, 0, 255).astype("uint8"))


@pytest.fixture(scope="session")
def small():
    """The small preset's untrained base: real DINOv2-S + SmolLM2-135M (converted and cached on
    first use) without the shipped trained parts, so conversion checks compare like with like."""
    import warnings

    from adkit import AnomalyOV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return AnomalyOV.from_preset("small", trained=False)
