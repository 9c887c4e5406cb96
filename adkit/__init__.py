"""adkit — a teaching and exploration kit for Anomaly-OV (CVPR 2025).

The public API; everything else lives in the modules named in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import zeroshot
from .anyres import ImageLayout, image_layout
from .calibration import Calibration
from .config import AnomalyOVConfig, ExpertConfig, Geometry, get_preset
from .expert import AnomalyExpert, ExpertOutput
from .images import ImageLoadError, load_image
from .model import AnomalyOV, AnomalyOVOutput, Detection
from .processor import AnomalyOVProcessor

__all__ = [
    "AnomalyExpert", "AnomalyOV", "AnomalyOVConfig", "AnomalyOVOutput", "AnomalyOVProcessor", "Calibration", "Detection",
    "ExpertConfig", "ExpertOutput", "Geometry", "ImageLayout", "ImageLoadError", "TokenBudget",
    "get_preset", "image_layout", "load_image", "token_budget", "zeroshot",
]
__version__ = "0.1.0"


@dataclass(frozen=True)
class TokenBudget:
    """LLM tokens one image costs (DESIGN §3 "Into the LLM")."""

    visual: int  # base view + unpadded crops with newlines (plain LLaVA-OneVision)
    hint: int  # "with … suspicious features: "
    expert: int  # global token + selected tokens (+ their newlines)
    total: int
    layout: ImageLayout


def token_budget(height: int, width: int, preset: str = "paper-0.5b", *, single_view: bool = False) -> TokenBudget:
    """Token counts for one ``height × width`` image under ``preset`` (tokenizer built offline)."""
    from .tokenizers import load_tokenizer

    config = get_preset(preset)
    processor = AnomalyOVProcessor(config, load_tokenizer(config.tokenizer))
    lay = processor.layout(height, width, single_view=single_view)
    return TokenBudget(visual=lay.visual_tokens, hint=lay.hint_tokens, expert=lay.expert_tokens,
                       total=lay.total, layout=lay)
