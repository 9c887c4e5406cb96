"""Look-Twice Feature Matching, LTFM (paper §3.3; docs/architecture.md §3 steps 1–6).

The expert "looks twice": once at the global base view, to guess *what* the object is (a class
vector c), and once at every crop, matching each patch at four depths of the vision tower
against a normal and an anomalous prompt that were conditioned on c.

This follows the official code, not the paper's prose: one look-back from the *final*
features of the base view (not per level), one prompt adaptor per level shared by both
seeds, and channel 1 (the seed the official code calls ``negative_embedding``) as the map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ExpertConfig


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / ‖x‖ over the last axis, exactly as the official code (no epsilon)."""
    return x / x.norm(dim=-1, keepdim=True)


def project(x: torch.Tensor, layer: nn.Linear, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``layer(x)`` computed in ``dtype``, returned in fp32 whatever the module's own dtype.

    The expert is small, so it computes in fp32 even inside a bf16 model; only the five big
    token projections may opt into bf16 (``ExpertConfig.projection_dtype``), which makes CPU
    matmuls several times faster.
    """
    w, b = layer.weight.to(dtype), None if layer.bias is None else layer.bias.to(dtype)
    return F.linear(x.to(dtype), w, b).float()


def mlp2(x: torch.Tensor, seq: nn.Sequential) -> torch.Tensor:
    """Linear → GELU → Linear in fp32 (the class and score MLPs)."""
    return project(F.gelu(project(x, seq[0])), seq[2])


class LookTwiceFeatureMatching(nn.Module):
    """Anomaly maps for every crop from multi-level patch features and the base view.

    Parameters keep one-to-one correspondence with the official ones (see
    ``adkit.weights.official.OFFICIAL_KEY_MAP``).
    """

    def __init__(self, config: ExpertConfig):
        super().__init__()
        c = config
        self.config = c
        self.normal_seed = nn.Parameter(torch.randn(1, c.embed_dim))  # official positive_embedding
        self.anomaly_seed = nn.Parameter(torch.randn(1, c.embed_dim))  # official negative_embedding
        self.base_pool = nn.Linear(c.num_patches, 1)  # Linear over the token axis of the base view
        self.class_mlp = nn.Sequential(
            nn.Linear(c.vision_dim, c.class_dim), nn.GELU(), nn.Linear(c.class_dim, c.class_dim)
        )
        self.patch_adaptors = nn.ModuleList(nn.Linear(c.vision_dim, c.embed_dim) for _ in range(c.num_levels))
        self.prompt_adaptors = nn.ModuleList(
            nn.Linear(c.embed_dim + c.class_dim, c.embed_dim) for _ in range(c.num_levels)
        )

    def class_vector(self, base_final: torch.Tensor) -> torch.Tensor:
        """Step 2: c = MLP(Linear_P→1(base view)) for each image. [B, P, D] → [B, C]."""
        pooled = project(base_final.transpose(1, 2), self.base_pool).squeeze(-1)  # [B, D, P] → [B, D]
        return mlp2(pooled, self.class_mlp)  # [B, C]

    def prompts(self, class_vec: torch.Tensor) -> torch.Tensor:
        """Step 3: unit prompts per level and seed. [B, C] → [B, L, 2, E] (seed 0 normal, 1 anomaly)."""
        b = class_vec.shape[0]
        seeds = torch.cat([self.normal_seed, self.anomaly_seed], dim=0)  # [2, E]
        seeds = seeds[None].expand(b, -1, -1)  # [B, 2, E]
        cls = class_vec[:, None].expand(-1, 2, -1)  # [B, 2, C]
        inp = torch.cat([seeds, cls], dim=-1)  # [B, 2, E + C]  (seed first, then c)
        return torch.stack([l2norm(project(inp, adaptor)) for adaptor in self.prompt_adaptors], dim=1)  # [B, L, 2, E]

    def patch_embeddings(self, levels: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Step 4: U_i = l2norm(Adaptor_i(L_i)). L × [N, P, D] → [N, L, P, E] in fp32.

        For inspection and teaching; ``forward`` fuses this with step 5 to save memory passes.
        """
        dtype = getattr(torch, self.config.projection_dtype)
        return torch.stack(
            [l2norm(project(lvl, adaptor, dtype)) for lvl, adaptor in zip(levels, self.patch_adaptors)], dim=1
        )

    def forward(
        self,
        final: torch.Tensor,
        levels: list[torch.Tensor] | tuple[torch.Tensor, ...],
        base_rows: torch.Tensor,
        image_index: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Steps 1–6 for all N crops of B images at once.

        final [N, P, D]; levels L × [N, P, D]; base_rows [B] (row of each image's base view);
        image_index [N] (image of each crop). Returns ``anomaly_map`` [N, g, g],
        ``level_maps`` [N, L, g, g], ``crop_significance`` [N], ``class_vector`` [B, C].
        """
        if len(levels) != self.config.num_levels:
            raise ValueError(f"expected {self.config.num_levels} feature levels, got {len(levels)}")
        n, p, _ = final.shape
        g = self.config.grid
        if p != g * g:
            raise ValueError(f"expected {g}×{g}={g * g} patch tokens per crop, got {p}")
        # Step 1 (look back): every crop sees its own image's base view; since the class MLP
        # is row-wise, computing it once per image and gathering is the same as repeating G.
        class_vec = self.class_vector(final[base_rows])  # [B, C]
        prompts = self.prompts(class_vec)[image_index]  # [N, L, 2, E]
        # Steps 4–5 fused per level. softmax over {normal, anomaly} of 100·⟨u, d⟩ with u = y/‖y‖
        # is sigmoid(100·⟨y, d_anom − d_norm⟩ / ‖y‖): same map, without materialising the unit
        # patch embeddings or a 2-column matmul over [N, L, P, E] (see patch_embeddings()).
        dtype = getattr(torch, self.config.projection_dtype)
        diff = self.config.logit_scale * (prompts[:, :, 1] - prompts[:, :, 0])  # [N, L, E]
        maps = []
        for i, (lvl, adaptor) in enumerate(zip(levels, self.patch_adaptors)):
            y = project(lvl, adaptor, dtype)  # [N, P, E]
            z = (y @ diff[:, i, :, None]).squeeze(-1) / y.norm(dim=-1)  # [N, P]
            maps.append(torch.sigmoid(z))
        level_maps = torch.stack(maps, dim=1).reshape(n, -1, g, g)  # [N, L, P] → [N, L, g, g]
        # Step 6: fuse levels; crop significance is the mean anomaly probability of the crop.
        anomaly_map = level_maps.mean(dim=1)  # [N, g, g]
        crop_significance = anomaly_map.mean(dim=(1, 2))  # [N]
        return {
            "anomaly_map": anomaly_map,
            "level_maps": level_maps,
            "crop_significance": crop_significance,
            "class_vector": class_vec,
        }
