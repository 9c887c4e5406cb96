"""Multi-level features from any transformers vision tower (paper §3.2, docs/architecture.md §2.1).

The expert matches patches at several depths of the tower; LLaVA projects one more (the
final feature). One tower pass gives both through ``output_hidden_states``: index 0 is the
embedding output and index k the output of encoder layer k, so the paper's levels are
hidden_states[7, 13, 19, 25] and the final feature hidden_states[-1] of the 26-layer SigLIP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .hf import tower_hidden_states


@dataclass
class VisionFeatures:
    final: torch.Tensor  # [N, P, D] the feature LLaVA projects
    levels: list[torch.Tensor]  # L × [N, P, D] the expert's matching levels
    states: dict[int, torch.Tensor] = field(default_factory=dict)  # hidden_states index → [N, P, D], every one asked for

    @property
    def grid(self) -> int:
        return int(round(self.final.shape[1] ** 0.5))

    def at(self, index: int) -> torch.Tensor:
        """Patch tokens of hidden_states[index] (asked for as a level or an ``extra`` index)."""
        if index not in self.states:
            raise KeyError(f"hidden_states[{index}] was not extracted (have {sorted(self.states)})")
        return self.states[index]


def extract_features(
    tower: nn.Module,
    pixel_values: torch.Tensor,
    levels: tuple[int, ...],
    final_level: int = -1,
    has_cls_token: bool = False,
    extra: tuple[int, ...] = (),
) -> VisionFeatures:
    """Run ``tower`` once on [N, 3, S, S] crops; return final and level features as [N, P, D]
    (plus the ``extra`` hidden_states indices the training-free scorers read, in ``states``).

    Towers with a CLS token (DINOv2) drop token 0 so that the rest forms the g×g patch grid.
    Tiles of another size than the tower's own (a larger base view) interpolate its positions.
    """
    dtype = next(tower.parameters()).dtype
    hidden = tower_hidden_states(tower, pixel_values.to(dtype))
    n_states = len(hidden)
    for idx in (*levels, final_level, *extra):
        if not -n_states <= idx < n_states:
            raise ValueError(f"feature level {idx} out of range: the tower has {n_states} hidden states")
    start = 1 if has_cls_token else 0
    final = hidden[final_level][:, start:]  # [N, (1+)P, D] → [N, P, D]
    states = {i: hidden[i][:, start:] for i in (*levels, *extra)}  # index → [N, P, D]
    p = final.shape[1]
    if int(round(p ** 0.5)) ** 2 != p:
        raise ValueError(f"{p} patch tokens do not form a square grid (CLS token not dropped?)")
    return VisionFeatures(final=final, levels=[states[i] for i in levels], states=states)
