"""A from-scratch transcription of docs/architecture.md §3 (the official expert's semantics), for parity tests.

Deliberately naive: plain loops over images and crops, ``F.adaptive_avg_pool2d`` on [D, g, g]
grids, explicit softmaxes, and weights read by their *official* key names — so it shares no
code (and no key map) with ``adkit.expert``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _lin(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _mlp(sd, name, x):
    return _lin(sd, f"{name}.2", F.gelu(_lin(sd, f"{name}.0", x)))


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference_expert(sd: dict, final: torch.Tensor, levels: list, split_sizes: list[int], pool: int = 2) -> dict:
    """docs/architecture.md §3 steps 1–10 with official-key weights ``sd``. Returns per-crop/per-image results."""
    n, p, d = final.shape
    g = int(math.isqrt(p))
    maps, signif, selected, queries = [], [], [], []
    global_tokens, scores = [], []
    start = 0
    for size in split_sizes:
        base = final[start]  # step 1: the base view of this image, for every crop
        pooled = _lin(sd, "pooling_layer.0", base.T)[:, 0]  # step 2: Linear over tokens → [D]
        c = _mlp(sd, "class_predictor", pooled)
        crop_w, crop_v = [], []
        for j in range(start, start + size):
            level_maps = []
            for i, lvl in enumerate(levels):
                d_pos = _unit(_lin(sd, f"prompt_adaptors.{i}", torch.cat([sd["positive_embedding"][0], c])))
                d_neg = _unit(_lin(sd, f"prompt_adaptors.{i}", torch.cat([sd["negative_embedding"][0], c])))
                u = _unit(_lin(sd, f"siglip_adaptors.{i}", lvl[j]))  # [P, E]
                z = 100.0 * torch.stack([u @ d_pos, u @ d_neg])  # [2, P]
                level_maps.append(torch.softmax(z, dim=0)[1].reshape(g, g))
            m = sum(level_maps) / len(level_maps)  # step 6
            s = m.mean()
            v_grid = final[j].T.reshape(d, g, g)
            pi = F.adaptive_avg_pool2d(m[None], pool)[0]  # [k, k]
            q = F.adaptive_avg_pool2d(v_grid * m, pool) / pi  # step 7: [D, k, k]
            q = q.reshape(d, -1).T  # [k², D]
            qq = _lin(sd, "q_former.query_proj", q)
            kk = _lin(sd, "q_former.key_proj", final[j])
            att = torch.softmax(qq @ kk.T / math.sqrt(kk.shape[-1]), dim=-1)  # step 8
            v = att @ final[j]  # [k², D]
            maps.append(m), signif.append(s), selected.append(v), queries.append(q)
            crop_w.append(pi.reshape(-1) * s), crop_v.append(v)
        w = torch.stack(crop_w)  # step 9: [crops, k²]
        vv = torch.stack(crop_v)  # [crops, k², D]
        r = (w[..., None] * vv).sum((0, 1)) / w.sum()
        global_tokens.append(r)
        scores.append(torch.sigmoid(_mlp(sd, "final_predictor", r))[0])  # step 10
        start += size
    return {
        "anomaly_maps": torch.stack(maps), "crop_significance": torch.stack(signif),
        "selected_tokens": torch.stack(selected), "queries": torch.stack(queries),
        "global_tokens": torch.stack(global_tokens), "scores": torch.stack(scores),
    }
