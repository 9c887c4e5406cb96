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
    "AnomalyOVConfig": ".config", "ExpertConfig": ".config", "Geometry": ".config", "get_preset": ".config",
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
    """LLM tokens one image costs (paper §3.3: visual tokens, the hint phrase, the expert's tokens)."""

    visual: int  # base view + unpadded crops with newlines (plain LLaVA-OneVision)
    hint: int  # "with … suspicious features: "
    expert: int  # global token + selected tokens (+ their newlines)
    total: int
    layout: "ImageLayout"


def token_budget(height: int, width: int, preset: str = "paper-0.5b", *, single_view: bool = False) -> TokenBudget:
    """Token counts for one ``height × width`` image under ``preset`` (tokenizer built offline)."""
    from .config import get_preset
    from .processor import AnomalyOVProcessor
    from .tokenizers import load_tokenizer

    config = get_preset(preset)
    processor = AnomalyOVProcessor(config, load_tokenizer(config.tokenizer))
    lay = processor.layout(height, width, single_view=single_view)
    return TokenBudget(visual=lay.visual_tokens, hint=lay.hint_tokens, expert=lay.expert_tokens,
                       total=lay.total, layout=lay)
