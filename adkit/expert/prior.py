"""The self-similarity prior: adkit's "Anomaly-OV + prior" variant of the expert (off by default).

Not in the paper. Trained on a few hundred synthetic images, the official expert's score head
learns what the *training* images look like, and transfers poorly to a new domain (the kit's
``small`` expert scored 52.9 AUROC on ELPV). A training-free signal transfers much better: a
defect is a patch unlike the rest of its own image (in-image patch kNN, AnomalyDINO, WACV 2025;
:func:`adkit.zeroshot.scores.self_similarity_map`). The prior hands that signal to the expert
at the two places the paper's design can use it (§3.3–3.5):

* **map**: the prior's per-patch distance d, standardised and squashed,
  ``m_prior = sigmoid(map_gain · (d − μ_d) / σ_d + map_bias)``, joins the L level maps in the
  fused anomaly map, so the visual-token selector's queries and significances follow it too;
* **score**: ``logit += score_gain · (T − μ_T) / σ_T + score_bias`` with T the mean of the top
  ``prior_fraction`` of the image's patch distances (base view and crops); with
  ``prior_relative`` the score MLP also reads the global token *relative to its image*,
  r_b − v̄_b (v̄_b the image's mean final feature): what the suspicious tokens add to the image,
  not what the image is, so the head cannot learn the training images' appearance.

μ and σ are statistics of the training images (:meth:`SelfSimilarityPrior.set_statistics`,
called once before stage 1), stored as buffers with the weights; the four gains and biases are
learned. With ``ExpertConfig.prior_level = None`` (the official geometry) none of this exists
and the expert is exactly the official module.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ExpertConfig
from ..zeroshot.scores import self_similarity_map, top_mean


class SelfSimilarityPrior(nn.Module):
    """Per-patch self-similarity distances of one expert level → a map and a score term."""

    def __init__(self, config: ExpertConfig):
        super().__init__()
        if config.prior_level is None or not 0 <= config.prior_level < config.num_levels:
            raise ValueError(f"prior_level must index one of the {config.num_levels} expert levels, "
                             f"got {config.prior_level!r}")
        self.config = config
        self.map_gain = nn.Parameter(torch.tensor(1.0))
        self.map_bias = nn.Parameter(torch.tensor(-2.0))  # typical patches start near 0.12
        self.score_gain = nn.Parameter(torch.tensor(1.0))
        self.score_bias = nn.Parameter(torch.tensor(0.0))
        # (μ_d, σ_d, μ_T, σ_T) of the training images; (0, 1, 0, 1) until set_statistics()
        self.register_buffer("statistics", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def distances(self, levels, split_sizes) -> torch.Tensor:
        """[N, P] in-image kNN distance of every patch at the prior level (training-free)."""
        return self_similarity_map(levels[self.config.prior_level], split_sizes, radius=self.config.prior_radius)

    def image_statistic(self, distances: torch.Tensor, image_index: torch.Tensor, num_images: int) -> torch.Tensor:
        """T per image: mean of the top ``prior_fraction`` of its patch distances. [N, P] → [B]."""
        return torch.stack([top_mean(distances[image_index == b].reshape(1, -1), self.config.prior_fraction)[0]
                            for b in range(num_images)])

    @staticmethod
    def context(final: torch.Tensor, image_index: torch.Tensor, num_images: int) -> torch.Tensor:
        """The mean final feature of each image over all its tiles and patches. [N, P, D] → [B, D]."""
        per_tile = final.float().mean(1)  # [N, D]
        total = per_tile.new_zeros(num_images, per_tile.shape[-1]).index_add_(0, image_index, per_tile)
        count = per_tile.new_zeros(num_images).index_add_(0, image_index, torch.ones_like(per_tile[:, 0]))
        return total / count[:, None]

    @torch.no_grad()
    def set_statistics(self, distances: torch.Tensor, image_stats: torch.Tensor) -> None:
        """Standardise with the training set's patch distances [M] and image statistics [B]."""
        d, t = distances.float().flatten(), image_stats.float().flatten()
        self.statistics.copy_(torch.stack([d.mean(), d.std().clamp_min(1e-6), t.mean(), t.std().clamp_min(1e-6)]))

    def forward(self, levels, split_sizes, image_index: torch.Tensor, num_images: int) -> dict[str, torch.Tensor]:
        d = self.distances(levels, split_sizes)  # [N, P]
        mu_d, sd_d, mu_t, sd_t = self.statistics.float()
        g = self.config.grid
        prior_map = torch.sigmoid(self.map_gain * (d - mu_d) / sd_d + self.map_bias)  # [N, P]
        t = self.image_statistic(d, image_index, num_images)  # [B]
        return {
            "distances": d.reshape(-1, g, g),  # [N, P] → [N, g, g]
            "map": prior_map.reshape(-1, g, g),  # [N, P] → [N, g, g]
            "statistic": t,
            "logit": self.score_gain * (t - mu_t) / sd_t + self.score_bias,  # [B]
        }
