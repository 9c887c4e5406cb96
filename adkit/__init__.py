"""adkit — a teaching and exploration kit for Anomaly-OV (CVPR 2025).

The public API; everything else lives in the modules named in README.md. Names are imported
on first use (a module ``__getattr__``), so ``import adkit`` and ``adkit --help`` do not pay
for torch and transformers until a model is needed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata

#: public name → the module that defines it (imported when the name is first used)
_LAZY = {
    "AnomalyExpert": ".expert", "ExpertOutput": ".expert",
    "AnomalyOV": ".model", "AnomalyOVOutput": ".model", "Detection": ".model",
    "AnomalyOVProcessor": ".processor", "Calibration": ".calibration",
    "AnomalyOVConfig": ".config", "ExpertConfig": ".config", "Geometry": ".geometry", "get_preset": ".config",
    "ImageLayout": ".anyres", "image_layout": ".anyres",
    "ImageLoadError": ".images", "load_image": ".images",
}

__all__ = sorted([*_LAZY, "TokenBudget", "token_budget", "zeroshot"])
try:
    __version__ = metadata.version("adkit")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    if name == "zeroshot":
        return importlib.import_module(".zeroshot", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


@dataclass(frozen=True)
class TokenBudget:
    """LLM tokens one image costs (paper §3.2, §3.4–3.5: visual tokens, the hint phrase, the expert's tokens)."""

    visual: int  # base view + unpadded crops with newlines (plain LLaVA-OneVision)
    hint: int  # "with … suspicious features: "
    expert: int  # global token + selected tokens (+ their newlines)
    total: int
    layout: "ImageLayout"


def token_budget(height: int, width: int, preset: "str | AnomalyOVConfig" = "paper-0.5b", *,
                 single_view: bool = False) -> TokenBudget:
    """Token counts for one ``height × width`` image under ``preset``.

    A preset name is answered by arithmetic over its geometry and hint length
    (:mod:`adkit.geometry`): no torch, transformers or tokenizer. An :class:`AnomalyOVConfig`
    (e.g. a preset with a changed geometry or hint) goes through its processor and offline
    tokenizer; the two agree on every preset (tests/test_budget.py).
    """
    from .anyres import image_layout
    from .geometry import PRESET_GEOMETRY, PRESET_HINT_TOKENS

    if isinstance(preset, str) and preset in PRESET_GEOMETRY:
        lay = image_layout(height, width, PRESET_GEOMETRY[preset], single_view=single_view,
                           hint_tokens=PRESET_HINT_TOKENS[preset])
    else:
        from .config import get_preset
        from .processor import AnomalyOVProcessor
        from .tokenizers import load_tokenizer

        config = get_preset(preset)
        processor = AnomalyOVProcessor(config, load_tokenizer(config.tokenizer))
        lay = processor.layout(height, width, single_view=single_view)
    return TokenBudget(visual=lay.visual_tokens, hint=lay.hint_tokens, expert=lay.expert_tokens,
                       total=lay.total, layout=lay)
