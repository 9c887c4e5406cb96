"""Training-free patch scores on frozen tower features: self-similarity and mutual scoring.

Pure tensor functions (no model, no images), used by ``AnomalyOV.detect(method=...)`` and by
the expert's optional self-similarity prior. Every distance is *half the Euclidean distance of
unit vectors*, ``‖a/‖a‖ − b/‖b‖‖ / 2 = sin(θ/2)`` ∈ [0, 1]: a monotone function of the cosine,
so nearest neighbours are the cosine ones, and maps and scores live in [0, 1] like the expert's.

``self_similarity_map``  in-image patch kNN, the zero-shot *inductive* variant of AnomalyDINO
                         (Damm et al., WACV 2025): each patch is scored by its distance to the
                         nearest patches of the *same* image outside its own neighbourhood — a
                         defect is a patch unlike the rest of its image.
``mutual_map``           MuSc (Li et al., ICLR 2024), zero-shot *transductive*: each patch is
                         scored against the *other* unlabeled images of a batch (LNAMD
                         neighbourhood aggregation, MSM interval average); no labels are used.
``rescore``              MuSc's RsCIN: image scores smoothed over a kNN graph of image features.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "half_chord", "neighbourhood_mask", "self_similarity_map", "aggregate_neighbourhood", "mutual_map",
    "interval_mean", "top_mean", "rescore",
]

# elements of one distance block ([queries, references, P, P] floats) before work is split up
DEFAULT_BLOCK = 2 ** 24


def half_chord(sim: torch.Tensor) -> torch.Tensor:
    """Cosine similarity → half the chord between unit vectors, sqrt((1 − cos) / 2) ∈ [0, 1]."""
    return ((1 - sim) / 2).clamp_min(0).sqrt()


def neighbourhood_mask(grid: int, radius: int, device=None) -> torch.Tensor:
    """[P, P] bool: patches within Chebyshev distance ``radius`` on a grid×grid (itself included)."""
    idx = torch.arange(grid * grid, device=device)
    r, c = idx // grid, idx % grid  # token t → row t // g, col t % g
    return ((r[:, None] - r[None]).abs() <= radius) & ((c[:, None] - c[None]).abs() <= radius)


def _split_index(split_sizes) -> list[tuple[int, int]]:
    sizes = [int(s) for s in split_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"split_sizes must be positive tile counts, got {list(split_sizes)!r}")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return list(zip(starts, sizes))


def self_similarity_map(features: torch.Tensor, split_sizes: Sequence[int], *, radius: int = 1, k: int = 1,
                        block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Per-patch in-image kNN distance: [N, P, D] tiles (each image's base view first) → [N, P].

    The base view of an image is compared with its own patches; the crops of an image share one
    bank (all its crops' patches), so a defect repeated in no other crop stands out. A patch's own
    (2·radius+1)² neighbourhood in its own tile is excluded (neighbours overlap it); its score is
    the mean distance to its ``k`` nearest remaining patches.
    """
    n, p, _ = features.shape
    g = math.isqrt(p)
    if g * g != p:
        raise ValueError(f"{p} patch tokens do not form a square grid")
    parts = _split_index(split_sizes)
    if sum(s for _, s in parts) != n:
        raise ValueError(f"split_sizes sum to {sum(s for _, s in parts)} tiles but features hold {n}")
    bank = p - min(p, (2 * radius + 1) ** 2)  # patches left for the most excluded (inner) patch
    if bank < 1:
        raise ValueError(f"radius {radius} excludes the whole {g}×{g} grid: nothing left to compare with")
    k = min(k, bank)
    x = F.normalize(features.float(), dim=-1)
    near = neighbourhood_mask(g, radius, x.device)  # [P, P]
    out = torch.empty(n, p, device=x.device)
    # base views: one bank each, batched over images in blocks of ≤ `block` distance entries
    base = torch.tensor([s for s, _ in parts], device=x.device)
    step = max(1, block // (p * p))
    for i in range(0, len(base), step):
        rows = base[i:i + step]
        d = half_chord(x[rows] @ x[rows].transpose(1, 2)).masked_fill(near, math.inf)  # [b, P, P]
        out[rows] = _kmin_mean(d, k).to(out.dtype)  # fp32 also under a bf16 autocast
    # crops: images with the same crop count are batched; the bank spans all crops of the image
    by_count: dict[int, list[int]] = {}
    for start, size in parts:
        if size > 1:
            by_count.setdefault(size - 1, []).append(start + 1)
    for c, firsts in by_count.items():
        own = torch.block_diag(*[near] * c)  # [cP, cP]: neighbourhoods inside each crop only
        step = max(1, block // (c * p) ** 2)
        for i in range(0, len(firsts), step):
            rows = torch.tensor(firsts[i:i + step], device=x.device)[:, None] + torch.arange(c, device=x.device)
            xc = x[rows.flatten()].reshape(len(rows), c * p, -1)  # [b·c, P, D] → [b, cP, D]
            d = half_chord(xc @ xc.transpose(1, 2)).masked_fill(own, math.inf)  # [b, cP, cP]
            out[rows.flatten()] = _kmin_mean(d, k).reshape(-1, p).to(out.dtype)  # [b, cP] → [b·c, P]
    return out


def _kmin_mean(d: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k smallest values along the last axis."""
    return d.topk(k, dim=-1, largest=False).values.mean(-1)


def aggregate_neighbourhood(features: torch.Tensor, r: int) -> torch.Tensor:
    """MuSc's LNAMD for one level: [N, P, D] → [N, P, D] unit vectors.

    Layer norm over each tile's whole (P, D) map (no affine), then every patch becomes the mean
    of its r×r neighbourhood (zero padding at the border, as the official unfold does), then L2
    normalisation.
    """
    n, p, d = features.shape
    g = math.isqrt(p)
    x = F.layer_norm(features.float(), (p, d))
    if r > 1:
        grid = x.transpose(1, 2).reshape(n, d, g, g)  # [N, P, D] → [N, D, g, g]
        grid = F.avg_pool2d(grid, r, stride=1, padding=r // 2, count_include_pad=True)
        x = grid.reshape(n, d, p).transpose(1, 2)  # [N, D, g, g] → [N, P, D]
    return F.normalize(x, dim=-1)


def interval_mean(values: torch.Tensor, low: float, high: float, dim: int = -1) -> torch.Tensor:
    """Mean of the values ranked in [low, high) of the sorted axis (fractions of its length):
    MuSc's interval average. (0, 0.3) is the mean of the smallest 30 % (at least one value)."""
    m = values.shape[dim]
    lo, hi = int(m * low), max(int(m * high), int(m * low) + 1)
    return values.sort(dim=dim).values.narrow(dim, lo, min(hi, m) - lo).mean(dim)


def mutual_map(levels: Sequence[torch.Tensor], *, r_list: Sequence[int] = (1, 3, 5), interval=(0.0, 0.3),
               block: int = DEFAULT_BLOCK, num_queries: int | None = None) -> torch.Tensor:
    """MuSc mutual scoring of a batch, one tile per image: L × [B, P, D] → [Q, P].

    For every level and aggregation size r: each patch of image i gets, for every other image j,
    its distance to the nearest patch of j; the patch's score is the interval mean of these B − 1
    distances (the smallest 30 % by default: robust to anomalous references). Scores are averaged
    over r and levels. Only the first ``num_queries`` images (default: all) are scored; the rest
    serve as references. Work is split into blocks of ≤ ``block`` distance entries, so memory
    stays bounded for any batch size and the result does not depend on the split.
    """
    b, p, _ = levels[0].shape
    if b < 2:
        raise ValueError("mutual scoring needs at least 2 images (each is scored against the others)")
    q = b if num_queries is None else int(num_queries)
    if not 1 <= q <= b:
        raise ValueError(f"num_queries must lie in 1..{b}, got {num_queries}")
    total = torch.zeros(q, p, device=levels[0].device)
    for level in levels:
        for r in r_list:
            z = aggregate_neighbourhood(level, r)  # [B, P, D] unit vectors
            total += _mutual_once(z, interval, block, q)
    return total / (len(levels) * len(r_list))


def _mutual_once(z: torch.Tensor, interval, block: int, queries: int) -> torch.Tensor:
    b, p, _ = z.shape
    per_pair = p * p
    q_step = max(1, min(queries, block // (per_pair * b)))  # query images per block
    r_step = max(1, block // (per_pair * q_step))  # reference images per block
    out = torch.empty(queries, p, device=z.device)
    for q0 in range(0, queries, q_step):
        zq = z[q0:min(q0 + q_step, queries)]  # [q, P, D]
        nearest = torch.empty(len(zq), b, p, device=z.device)  # [q, B, P] distance to image j's nearest patch
        for r0 in range(0, b, r_step):
            sim = torch.einsum("qpd,rsd->qrps", zq, z[r0:r0 + r_step])  # [q, r, P, P]
            nearest[:, r0:r0 + r_step] = half_chord(sim.amax(-1))
        others = ~torch.eye(b, dtype=torch.bool, device=z.device)[q0:q0 + len(zq)]  # [q, B] drop self
        nearest = nearest[others].reshape(len(zq), b - 1, p)  # [q, B-1, P]
        out[q0:q0 + len(zq)] = interval_mean(nearest, *interval, dim=1)
    return out


def top_mean(maps: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Mean of the top ``fraction`` of each row (at least one value): [B, M] → [B]."""
    k = max(1, int(round(maps.shape[-1] * fraction)))
    return maps.topk(min(k, maps.shape[-1]), dim=-1).values.mean(-1)


def rescore(scores: torch.Tensor, image_features: torch.Tensor, k_list: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
    """MuSc's RsCIN: min-max normalised scores averaged over each image's k most similar images
    (itself included: k = 1 keeps the score), then averaged over ``k_list``. [B], [B, D] → [B]."""
    s = scores.double()
    s = (s - s.min()) / (s.max() - s.min()).clamp_min(1e-12)
    f = F.normalize(image_features.double(), dim=-1)
    sim = f @ f.T  # [B, B]
    out = torch.zeros_like(s)
    for k in k_list:
        k = min(int(k), len(s))
        vals, idx = sim.topk(k, dim=-1)  # [B, k] most similar images (self first)
        out += (vals * s[idx]).sum(-1) / vals.sum(-1)
    return (out / len(k_list)).to(scores.dtype)
