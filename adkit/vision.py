"""Multi-level features from any transformers vision tower (paper §3.3, docs/architecture.md §2.1).

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


CPU_TOWER_CHUNK = 8
"""Tiles per tower forward on a CPU. One forward over 4–8 tiles runs ~1.4× faster per tile than
one over 40 (the activations stay in cache; measured by ``benchmarks/bench_eval.py``), and the
hidden states of a big batch never exist for all tiles at once. GPUs take the whole batch."""


def extract_features(
    tower: nn.Module,
    pixel_values: torch.Tensor,
    levels: tuple[int, ...],
    final_level: int = -1,
    has_cls_token: bool = False,
    extra: tuple[int, ...] = (),
    chunk: int | None = None,
) -> VisionFeatures:
    """Run ``tower`` on [N, 3, S, S] crops; return final and level features as [N, P, D]
    (plus the ``extra`` hidden_states indices the training-free scorers read, in ``states``).

    Towers with a CLS token (DINOv2) drop token 0 so that the rest forms the g×g patch grid.
    Tiles of another size than the tower's own (a larger base view) interpolate its positions.
    ``chunk``: at most this many tiles per forward (None: all at once); each tile's features
    depend on that tile only, so chunks are concatenated and only the asked-for states are kept.
    """
    dtype = next(tower.parameters()).dtype
    n = pixel_values.shape[0]
    step = n if not chunk or chunk >= n else int(chunk)
    start = 1 if has_cls_token else 0
    wanted = (*levels, final_level, *extra)
    parts: list[dict[int, torch.Tensor]] = []
    for first in range(0, max(n, 1), max(step, 1)):
        hidden = tower_hidden_states(tower, pixel_values[first:first + step].to(dtype))
        n_states = len(hidden)
        for idx in wanted:
            if not -n_states <= idx < n_states:
                raise ValueError(f"feature level {idx} out of range: the tower has {n_states} hidden states")
        parts.append({idx % n_states: hidden[idx][:, start:] for idx in wanted})  # [n, (1+)P, D] → [n, P, D]
    merged = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    states = {i: merged[i % n_states] for i in (*levels, *extra)}  # index → [N, P, D]
    final = merged[final_level % n_states]
    p = final.shape[1]
    if int(round(p ** 0.5)) ** 2 != p:
        raise ValueError(f"{p} patch tokens do not form a square grid (CLS token not dropped?)")
    return VisionFeatures(final=final, levels=[states[i] for i in levels], states=states)
