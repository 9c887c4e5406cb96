"""Visual-token selection and the anomaly score (paper §3.4–3.5; docs/architecture.md §3 steps 7–10).

The anomaly map of each crop becomes pool² queries (map-weighted means of the crop's final
features over the cells of ``AdaptiveAvgPool2d(pool)``). One single-head attention per query
picks the crop's most suspicious tokens; the raw features it averages are the *selected
tokens*. All crops of an image are then averaged, weighted by how suspicious each cell and
each crop is, into one *global token*, from which a small MLP predicts the anomaly score.

Everything here runs in fp32 and is vectorised over crops and images: segment sums use
``index_add_`` on an ``image_index`` instead of the official per-image Python loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ExpertConfig
from .ltfm import mlp2, project


def adaptive_pool_matrix(grid: int, pool: int) -> torch.Tensor:
    """``AdaptiveAvgPool2d(pool)`` on a grid×grid map as a [pool², grid²] averaging matrix.

    Cell (a, b) averages rows [⌊a·g/k⌋, ⌈(a+1)·g/k⌉) and the same columns; on an odd grid the
    windows overlap (g=27, k=2: [0, 14) and [13, 27)). Cells are in row-major order.
    """
    bounds = [(math.floor(i * grid / pool), math.ceil((i + 1) * grid / pool)) for i in range(pool)]
    w = torch.zeros(pool, pool, grid, grid)
    for a, (r0, r1) in enumerate(bounds):
        for b, (c0, c1) in enumerate(bounds):
            w[a, b, r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
    return w.reshape(pool * pool, grid * grid)  # [k², P]


class VisualTokenSelector(nn.Module):
    """Selected tokens per crop, the global token and the score per image."""

    def __init__(self, config: ExpertConfig):
        super().__init__()
        c = config
        self.config = c
        self.query_proj = nn.Linear(c.vision_dim, c.attention_dim)
        self.key_proj = nn.Linear(c.vision_dim, c.attention_dim)
        self.score_mlp = nn.Sequential(nn.Linear(c.vision_dim, c.score_hidden), nn.GELU(), nn.Linear(c.score_hidden, 1))
        self.register_buffer("pool_matrix", adaptive_pool_matrix(c.grid, c.pool_size), persistent=False)

    def queries(self, final: torch.Tensor, anomaly_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 7: q = AAP(V ⊙ m) / AAP(m) → [N, k², D]; π = AAP(m) → [N, k²]."""
        m = anomaly_map.flatten(1).float()  # [N, g, g] → [N, P]
        cell = self.pool_matrix.to(m.device)[None] * m[:, None, :]  # [N, k², P]
        pi = cell.sum(-1)  # [N, k²]  = AAP(m)
        q = cell @ final.float() / (pi[..., None] + self.config.eps)  # [N, k², D]
        return q, pi

    def forward(
        self,
        final: torch.Tensor,
        anomaly_map: torch.Tensor,
        crop_significance: torch.Tensor,
        image_index: torch.Tensor,
        num_images: int,
    ) -> dict[str, torch.Tensor]:
        """final [N, P, D]; anomaly_map [N, g, g]; crop_significance [N]; image_index [N]."""
        v = final.float()  # values are the raw (unprojected) features
        q, pi = self.queries(v, anomaly_map)  # [N, k², D], [N, k²]
        # Step 8: single-head attention, no value/output projection.
        # (Q)(W_k V + b_k)ᵀ = (Q W_k) Vᵀ + Q b_k: fold the key projection into the k² queries
        # instead of projecting all P tokens (one of the five big projections, ~20 % of FLOPs).
        # With only k² queries per crop this small product stays in fp32 in every mode.
        queries = project(q, self.query_proj)  # [N, k², A]
        qk = queries @ self.key_proj.weight.float()  # [N, k², D]
        scores = qk @ v.transpose(1, 2) + (queries @ self.key_proj.bias.float())[..., None]  # [N, k², P]
        attention = (scores / math.sqrt(self.config.attention_dim)).softmax(dim=-1)  # [N, k², P]
        selected = attention @ v  # [N, k², D]
        # Step 9: global token r_b = Σ w·v / Σ w over all crops and cells of image b.
        w = pi * crop_significance.float()[:, None]  # [N, k²]
        num = v.new_zeros(num_images, v.shape[-1]).index_add_(0, image_index, (w[..., None] * selected).sum(1))
        den = v.new_zeros(num_images).index_add_(0, image_index, w.sum(1))  # [B]
        global_tokens = num / (den[:, None] + self.config.eps)  # [B, D]
        # Step 10: score.
        logits = mlp2(global_tokens, self.score_mlp).squeeze(-1)  # [B]
        return {
            "selected_tokens": selected,
            "global_tokens": global_tokens,
            "logits": logits,
            "scores": logits.sigmoid(),
            "attention": attention,
            "queries": q,
            "cell_significance": pi,
        }
