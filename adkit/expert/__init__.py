"""The anomaly expert of Anomaly-OV (paper §3.2–3.5): LTFM + visual-token selector + score head.

A pure tensor module: it knows no LLM, processor or data. Input is what a vision tower gives
for a batch of B images cut into N crops in total (each image's base view first):

    final       [N, P, D]      the feature LLaVA projects (hidden_states[-1])
    levels      L × [N, P, D]  the levels matched against prompts (paper: hidden_states[7,13,19,25])
    split_sizes [B]            crops per image, base view included
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..config import ExpertConfig
from .ltfm import LookTwiceFeatureMatching, mlp2
from .prior import SelfSimilarityPrior
from .selector import VisualTokenSelector

__all__ = ["AnomalyExpert", "ExpertConfig", "ExpertOutput", "split_index"]


@dataclass
class ExpertOutput:
    """Everything the expert computes; N crops, B images, k² = pool² cells, P = g² tokens."""

    selected_tokens: torch.Tensor  # [N, k², D] raw-feature tokens picked per crop
    global_tokens: torch.Tensor  # [B, D] significance-weighted mean of an image's selected tokens
    scores: torch.Tensor  # [B] anomaly score, sigmoid
    logits: torch.Tensor  # [B] score before the sigmoid (for BCE-with-logits training)
    anomaly_maps: torch.Tensor  # [N, g, g] fused anomaly map per crop
    level_maps: torch.Tensor  # [N, L, g, g] anomaly map per level
    crop_significance: torch.Tensor  # [N] mean of each crop's map
    cell_significance: torch.Tensor  # [N, k²] AAP(map) per cell
    attention: torch.Tensor  # [N, k², P] selector attention
    queries: torch.Tensor  # [N, k², D] map-weighted pooled features
    class_vector: torch.Tensor  # [B, C] look-back class vector
    prior_distances: torch.Tensor | None = None  # [N, g, g] self-similarity distances (prior variant only)
    prior_map: torch.Tensor | None = None  # [N, g, g] the prior's map, fused with the level maps

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def split_index(split_sizes: Sequence[int] | torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(base_rows [B], image_index [N]) from crops-per-image counts, e.g. [3, 1] → ([0, 3], [0, 0, 0, 1])."""
    sizes = torch.as_tensor(split_sizes, dtype=torch.long, device=device)
    if sizes.ndim != 1 or sizes.numel() == 0 or bool((sizes < 1).any()):
        raise ValueError(f"split_sizes must be a non-empty list of positive ints, got {split_sizes!r}")
    base_rows = torch.cumsum(sizes, 0) - sizes  # [B]
    image_index = torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)  # [N]
    return base_rows, image_index


class AnomalyExpert(nn.Module):
    """LTFM → token selector → score, vectorised over the whole batch (no per-image loop).

    With ``config.prior_level`` set, the self-similarity prior (:mod:`adkit.expert.prior`) joins
    the fused map and adds a term to the score logit ("Anomaly-OV + prior"; not in the paper).
    """

    def __init__(self, config: ExpertConfig | None = None):
        super().__init__()
        self.config = config or ExpertConfig()
        self.ltfm = LookTwiceFeatureMatching(self.config)
        self.selector = VisualTokenSelector(self.config)
        self.prior = SelfSimilarityPrior(self.config) if self.config.prior_level is not None else None

    def forward(
        self,
        final: torch.Tensor,
        levels: Sequence[torch.Tensor],
        split_sizes: Sequence[int] | torch.Tensor,
    ) -> ExpertOutput:
        n = final.shape[0]
        base_rows, image_index = split_index(split_sizes, device=final.device)
        if image_index.numel() != n:
            raise ValueError(f"split_sizes sum to {image_index.numel()} crops but features hold {n}")
        for i, lvl in enumerate(levels):
            if lvl.shape != final.shape:
                raise ValueError(f"level {i} has shape {tuple(lvl.shape)}, expected {tuple(final.shape)}")
        maps = self.ltfm(final, levels, base_rows, image_index)
        anomaly_map, significance, prior = maps["anomaly_map"], maps["crop_significance"], None
        if self.prior is not None:
            prior = self.prior(levels, split_sizes, image_index, len(base_rows))
            num = self.config.num_levels
            anomaly_map = (anomaly_map * num + prior["map"]) / (num + 1)  # mean over the L + 1 maps
            significance = anomaly_map.mean(dim=(1, 2))  # [N]
        sel = self.selector(final, anomaly_map, significance, image_index, len(base_rows))
        if prior is not None and self.config.prior_relative:
            context = self.prior.context(final, image_index, len(base_rows))  # [B, D]
            sel["logits"] = mlp2(sel["global_tokens"] - context, self.selector.score_mlp).squeeze(-1)
        logits = sel["logits"] if prior is None else sel["logits"] + prior["logit"]
        return ExpertOutput(
            selected_tokens=sel["selected_tokens"], global_tokens=sel["global_tokens"],
            scores=logits.sigmoid(), logits=logits, anomaly_maps=anomaly_map,
            level_maps=maps["level_maps"], crop_significance=significance,
            cell_significance=sel["cell_significance"], attention=sel["attention"],
            queries=sel["queries"], class_vector=maps["class_vector"],
            prior_distances=None if prior is None else prior["distances"],
            prior_map=None if prior is None else prior["map"],
        )

    # ------------------------------------------------------------------ official weights

    @classmethod
    def from_official_checkpoint(cls, path_or_state_dict: str | Path | dict, **config_overrides) -> "AnomalyExpert":
        """An expert holding the official ``pretrained_expert_*.pth`` weights (strict load).

        Sizes are read off the checkpoint's shapes (paper: D=1152, g=27, E=512).
        """
        from ..weights.official import load_official_expert

        return load_official_expert(cls, path_or_state_dict, **config_overrides)

    def to_official_state_dict(self) -> dict[str, torch.Tensor]:
        """This expert's weights under the official key names (for round trips and export)."""
        from ..weights.official import to_official_state_dict

        return to_official_state_dict(self)
