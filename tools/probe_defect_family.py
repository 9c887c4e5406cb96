"""Can the defect family be read from what stage 2's LLM is given? Linear probes, zero-shot.

The reasoning issue's target is answers that *name* the defect. Before training an LLM to read
the family out of its visual tokens, check that the tokens carry it: fit a logistic regression
from a per-image feature vector to the defect family on anomalous images of the kit's **train**
categories, and score it on the **test** (held-out) categories, which neither stage saw. Features
(the shipped ``small``, one base view per image as stage 2 trained it):

* ``expert global`` / ``expert selected``: the expert's global token and the mean of its selected
  tokens (paper §3.4) — what the LLM gets from the expert today; ``projected selected``: the same
  after the projector;
* ``final mean``: the plain mean of the tower's final features (no localisation);
* ``final top10 expert map``: final features pooled over the 10 % of patches the expert's map ranks highest;
* ``hs[L] mean`` / ``hs[L] in mask`` / ``hs[L] top10 self``: hidden_states[L] pooled over all
  patches, over the ground-truth mask (an oracle: it uses the label's mask), and over the 10 % of
  patches with the largest in-image kNN distance at that level (training-free, no labels).

Chance is 1 / 8 (balanced families). Not a test and not a benchmark: a diagnosis, printed.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F


SHARE = 0.1  # the share of patches the "top10" features pool over


def top_patches(x: torch.Tensor, share: float = SHARE) -> torch.Tensor:
    """Indices of the ``share`` of patches of ``x`` [P, D] farthest from their 3 nearest other patches."""
    z = F.normalize(x, dim=-1)
    d = 1 - z @ z.T  # [P, P] cosine distances
    d.fill_diagonal_(float("inf"))
    knn = d.topk(3, largest=False).values.mean(1)  # [P]
    return knn.topk(max(1, int(len(knn) * share))).indices


def features(model, samples, level: int, batch: int = 8) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from adkit import hf

    rows: dict[str, list] = {}
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        b = model.processor.images([s.load_image() for s in chunk], single_view=True)
        with torch.no_grad():
            f = model.features(b.pixel_values, extra=(level,))
            o = model.expert(f.final, f.levels, b.split_sizes.tolist())
            proj = hf.projector(model.mllm)(o.selected_tokens)  # [N, k², H]
        g = int(f.final.shape[1] ** 0.5)
        for j, s in enumerate(chunk):  # one base view per image: row j
            final, mid = f.final[j].float(), f.at(level)[j].float()  # [P, D]
            mask = np.asarray(s.load_mask(size=(g, g)), bool).reshape(-1)
            mask = torch.from_numpy(mask if mask.any() else np.ones(g * g, bool))
            vals = {
                "expert global": o.global_tokens[j], "expert selected": o.selected_tokens[j].mean(0),
                "projected selected": proj[j].mean(0), "final mean": final.mean(0),
                "final top10 expert map": final[o.anomaly_maps[j].reshape(-1).topk(max(1, int(g * g * SHARE))).indices].mean(0),
                f"hs[{level}] mean": mid.mean(0), f"hs[{level}] in mask (oracle)": mid[mask].mean(0),
                f"hs[{level}] top10 self": mid[top_patches(mid)].mean(0),
            }
            for k, v in vals.items():
                rows.setdefault(k, []).append(v.float().numpy())
    return {k: np.stack(v) for k, v in rows.items()}, np.array([s.defect for s in samples])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=6, help="anomalous images per family and train category (default: 6)")
    ap.add_argument("--level", type=int, default=8, help="the mid hidden_states index (default: 8, mutual's)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import adkit
    from adkit.data import normals
    from adkit.data.synth import DEFECT_FAMILIES

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = adkit.AnomalyOV.from_preset("small")
    n = len(DEFECT_FAMILIES)
    train = normals.make_samples(normals.categories("train"), 0, args.per_family * n, args.seed)
    test = normals.make_samples(normals.categories("test"), 0, max(2, args.per_family // 2) * n, args.seed + 1)
    xtr, ytr = features(model, train, args.level)
    xte, yte = features(model, test, args.level)
    print(f"{len(train)} train-category and {len(test)} held-out anomalous images, {n} families; "
          f"chance {max(Counter(yte).values()) / len(yte):.3f}")
    for name in xtr:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(xtr[name], ytr)
        print(f"{name:>28}: held-out family accuracy {clf.score(xte[name], yte):.3f} (train {clf.score(xtr[name], ytr):.3f})")


if __name__ == "__main__":
    main()
