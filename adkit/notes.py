"""Expert notes: what kind of defect, and where, written as one line for the LLM (a kit variant).

The paper hands the LLM the expert's findings as embeddings only: a hint phrase chosen by the
score and the selected visual tokens (§3.4–3.5). A 0.5B–7B LLM tuned on 125k conversations learns
to read them; the kit's `small` (a 135 M LLM, a few hundred conversations on a CPU) does not — its
descriptions never name the defect family (`tools/probe_defect_family.py` shows why: the
selected tokens carry the family no better than a plain mean of the features). **Anomaly-OV +
notes** adds one line of text after the image, made from the tower's features (``AnomalyOV.write_notes``:
the expert's ``detect`` pass for the verdict, one single-view pass for the reader)::

    <image>
    Expert note: likely scratch (top left).    (the expert's verdict is anomalous)
    Expert note: nothing stands out.           (the verdict is normal)
    Describe the anomaly in the image.

* the verdict: the expert's score against the threshold the reader was made with (the expert's
  calibrated one, chosen on the val categories; stored in the reader's file so that training and
  inference notes agree whatever ``model.calibration`` holds);
* *where*: the 3×3 cell of the patch with the largest in-image kNN distance (the ``self`` map,
  AnomalyDINO-style, training-free);
* *what*: a :class:`DefectReader`, a linear classifier over the tower's mid-level features
  pooled over the most self-dissimilar patches *minus* the image's mean feature (what sets the
  region apart from its own image, not what the object looks like), trained on the kit's
  synthetic train categories (``adkit train reader``).

The reader's file (``reader.safetensors``) carries its words (family nouns, cell names, the
note's wording) in its metadata, so inference needs nothing from :mod:`adkit.data`. With
``config.notes`` on, the model writes a note into every image prompt (``AnomalyOV.chat``, the
batched evaluators, the stage-2 collator with ``--notes``) — the same function at training and
at inference; a stage 2 trained with notes records ``notes`` in its parts file. The shipped
``small`` turns notes on at inference (its stage 2 was trained without them; the card says why).
Switch off with ``model.config.notes = False``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

__all__ = ["READER_KIND", "DefectReader", "pooled_features", "top_cell", "note_text", "with_note"]

READER_KIND = "defect-reader"  # the parts file's metadata "adkit_part"
NOTE_PREFIX = "Expert note: "


def pooled_features(states: dict[int, torch.Tensor], self_map: torch.Tensor, levels, share: float) -> torch.Tensor:
    """[N, D·L]: per image, the mean of each level's features over its ``share`` of patches with
    the largest ``self_map`` value, minus the mean over all its patches; levels concatenated.
    ``states``: hidden_states index → [N, P, D]; ``self_map`` [N, P]."""
    k = max(1, int(self_map.shape[1] * share))
    idx = self_map.topk(k, dim=1).indices  # [N, k]
    out = []
    for lv in levels:
        x = states[lv].float()  # [N, P, D]
        top = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))  # [N, k, D]
        out.append(top.mean(1) - x.mean(1))  # [N, D]
    return torch.cat(out, dim=1)  # [N, D·L]


def top_cell(self_map: torch.Tensor) -> list[tuple[int, int]]:
    """The (row, col) on a 3×3 grid of each image's largest ``self_map`` patch; ``self_map`` [N, P]."""
    g = int(round(self_map.shape[1] ** 0.5))
    flat = self_map.argmax(1).tolist()
    return [(min(3 * (k // g) // g, 2), min(3 * (k % g) // g, 2)) for k in flat]


def note_text(anomalous: bool, noun: str | None, place: str | None, wording: dict) -> str:
    """The note line: ``wording["anomalous"]`` filled with the noun and place, or ``wording["normal"]``."""
    if not anomalous:
        return NOTE_PREFIX + wording["normal"]
    return NOTE_PREFIX + wording["anomalous"].format(noun=noun, place=place)


def with_note(conversation: list[dict], note: str) -> list[dict]:
    """A copy of ``conversation`` with ``note`` on the line after the first ``<image>``."""
    out, done = [], False
    for turn in conversation:
        turn = dict(turn)
        key = "content" if "content" in turn else "value"
        text = turn.get(key)
        if not done and isinstance(text, str) and "<image>" in text:
            head, tail = text.split("<image>", 1)
            turn[key] = f"{head}<image>\n{note}\n{tail.lstrip(chr(10))}"
            done = True
        out.append(turn)
    if not done:
        raise ValueError("with_note: the conversation has no <image> placeholder to put the note after")
    return out


@dataclass
class DefectReader:
    """A standardised linear classifier from :func:`pooled_features` to the defect family
    (softmax over ``families``); ``nouns[f]`` is how the note names family ``f``."""

    levels: tuple[int, ...]
    share: float
    threshold: float  # the expert score from which the note says "anomalous"
    families: tuple[str, ...]
    nouns: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]  # 3×3 place names, row by row
    wording: dict
    mean: torch.Tensor  # [F_in]
    scale: torch.Tensor  # [F_in]
    weight: torch.Tensor  # [C, F_in]
    bias: torch.Tensor  # [C]

    def __post_init__(self):
        c, f = self.weight.shape
        if self.mean.shape != (f,) or self.scale.shape != (f,) or self.bias.shape != (c,):
            raise ValueError(f"defect reader: inconsistent shapes weight {tuple(self.weight.shape)}, mean "
                             f"{tuple(self.mean.shape)}, scale {tuple(self.scale.shape)}, bias {tuple(self.bias.shape)}")
        if len(self.families) != c or len(self.nouns) != c:
            raise ValueError(f"defect reader: {c} classes but {len(self.families)} families / {len(self.nouns)} nouns")
        if len(self.cells) != 3 or any(len(r) != 3 for r in self.cells):
            raise ValueError("defect reader: cells must be 3 rows of 3 place names")
        if not {"normal", "anomalous"} <= set(self.wording):
            raise ValueError("defect reader: wording needs 'normal' and 'anomalous' texts")

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """[N, F_in] pooled features → [N, C] family probabilities."""
        z = (x.float() - self.mean) / self.scale
        return torch.softmax(z @ self.weight.T + self.bias, dim=1)

    def notes(self, states: dict[int, torch.Tensor], self_map: torch.Tensor, scores) -> list[str]:
        """One note per image from its single-view ``states`` / ``self_map`` [N, P] and expert score."""
        anomalous = [float(s) >= self.threshold for s in scores]
        fam = self.probabilities(pooled_features(states, self_map, self.levels, self.share)).argmax(1).tolist()
        return [note_text(bool(a), self.nouns[f], self.cells[r][c], self.wording)
                for a, f, (r, c) in zip(anomalous, fam, top_cell(self_map))]

    # ------------------------------------------------------------------ file
    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"reader.mean": self.mean, "reader.scale": self.scale, "reader.weight": self.weight,
                 "reader.bias": self.bias}
        return {k: v.detach().float().contiguous() for k, v in named.items()}

    def metadata(self) -> dict[str, str]:
        return {"adkit_part": READER_KIND, "levels": json.dumps(list(self.levels)), "share": json.dumps(self.share),
                "threshold": json.dumps(self.threshold),
                "families": json.dumps(list(self.families)), "nouns": json.dumps(list(self.nouns)),
                "cells": json.dumps([list(r) for r in self.cells]), "wording": json.dumps(self.wording)}

    def save(self, path) -> None:
        from safetensors.torch import save_file

        save_file(self.tensors(), str(path), metadata=self.metadata())

    @classmethod
    def from_parts(cls, meta: dict, tensors: dict, path="reader file") -> "DefectReader":
        """Rebuild from a parts file's (metadata, tensors); anything missing or malformed is a
        ValueError naming ``path`` and what is wrong."""
        need = ("levels", "share", "threshold", "families", "nouns", "cells", "wording")
        missing = [k for k in need if k not in meta] + [k for k in ("reader.mean", "reader.scale", "reader.weight",
                                                                     "reader.bias") if k not in tensors]
        if missing:
            raise ValueError(f"{path}: not a complete defect reader, missing {', '.join(missing)}")
        try:
            m = {k: json.loads(meta[k]) for k in need}
            return cls(tuple(int(v) for v in m["levels"]), float(m["share"]), float(m["threshold"]), tuple(m["families"]), tuple(m["nouns"]),
                       tuple(tuple(r) for r in m["cells"]), dict(m["wording"]), tensors["reader.mean"].float(),
                       tensors["reader.scale"].float(), tensors["reader.weight"].float(), tensors["reader.bias"].float())
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: malformed defect reader: {exc}") from None
