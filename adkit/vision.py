"""Multi-level features from any transformers vision tower (paper §3.2, DESIGN §2.1).

The expert matches patches at several depths of the tower; LLaVA projects one more (the
final feature). One tower pass gives both through ``output_hidden_states``: index 0 is the
embedding output and index k the output of encoder layer k, so the paper's levels are
hidden_states[7, 13, 19, 25] and the final feature hidden_states[-1] of the 26-layer SigLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .hf import tower_hidden_states


@dataclass
class VisionFeatures:
    final: torch.Tensor  # [N, P, D] the feature LLaVA projects
    levels: list[torch.Tensor]  # L × [N, P, D] the expert's matching levels

    @property
    def grid(self) -> int:
        return int(round(self.final.shape[1] ** 0.5))


def extract_features(
    tower: nn.Module,
    pixel_values: torch.Tensor,
    levels: tuple[int, ...],
    final_level: int = -1,
    has_cls_token: bool = False,
) -> VisionFeatures:
    """Run ``tower`` once on [N, 3, S, S] crops; return final and level features as [N, P, D].

    Towers with a CLS token (DINOv2) drop token 0 so that the rest forms the g×g patch grid.
    """
    dtype = next(tower.parameters()).dtype
    hidden = tower_hidden_states(tower, pixel_values.to(dtype))
    n_states = len(hidden)
    for idx in (*levels, final_level):
        if not -n_states <= idx < n_states:
            raise ValueError(f"feature level {idx} out of range: the tower has {n_states} hidden states")
    start = 1 if has_cls_token else 0
    final = hidden[final_level][:, start:]  # [N, (1+)P, D] → [N, P, D]
    lvls = [hidden[i][:, start:] for i in levels]  # L × [N, P, D]
    p = final.shape[1]
    if int(round(p ** 0.5)) ** 2 != p:
        raise ValueError(f"{p} patch tokens do not form a square grid (CLS token not dropped?)")
    return VisionFeatures(final=final, levels=lvls)
