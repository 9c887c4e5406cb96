"""On-disk cache of the frozen tower's features for stage-1 training (docs/architecture.md §4 "Stage 1").

In stage 1 the vision tower is frozen, so the expert's inputs for an image never change:
run the tower once per image, store its tiles' features, and train the expert from the
store. The stored tensors are exactly what :meth:`adkit.AnomalyOV.features` hands the
expert (the same :func:`adkit.vision.extract_features` call on the same
:class:`adkit.AnomalyOVProcessor` tiles), only rounded to ``dtype`` (fp16 by default).

Layout (one folder per *preprocessing hash*: geometry, levels, tower config and weights):

    <root>/<prep_hash>/chunk-<tag>.npy    [tiles, 1 + L, P, D]  final feature first, then the levels
    <root>/<prep_hash>/chunk-<tag>.json   {"key": [first_tile, n_tiles], ...} (written last)

Chunks are append-only: a build writes the images not yet cached into a new chunk, so train
and validation sets, or several ranks, share one cache. A chunk counts only once its JSON
exists, so an interrupted build is simply redone. Size: (1 + L)·P·D·2 bytes per tile —
small preset 1.0 MB per tile (≤ 5 tiles an image), paper geometry 8.4 MB per tile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import hf
from ..data.records import AnomalySample, DataError
from ..vision import extract_features

CACHE_VERSION = 1


def tower_features(model, pixel_values: torch.Tensor, device=None):
    """Tower pass exactly as :meth:`AnomalyOV.features`, but on ``device`` (only the tower
    needs to live there in stage 1): → (final [N, P, D], levels L × [N, P, D])."""
    c = model.config
    tower = hf.vision_tower(model.mllm)
    device = device or next(tower.parameters()).device
    with torch.no_grad():
        f = extract_features(tower, pixel_values.to(device), c.feature_levels, c.final_level, c.has_cls_token)
    return f.final, f.levels


def preprocessing_hash(model, dtype: str = "float16") -> str:
    """A digest of everything that decides the cached tensors: geometry, levels, tower config,
    a fingerprint of the tower weights and the storage dtype."""
    c = model.config
    tower = hf.vision_tower(model.mllm)
    h = hashlib.sha256()
    h.update(json.dumps({
        "version": CACHE_VERSION, "dtype": dtype, "geometry": dataclasses.asdict(c.geometry),
        "levels": list(c.feature_levels), "final": c.final_level, "cls": c.has_cls_token,
        "vision": c.vision.to_json_string(use_diff=False),
    }, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in tower.state_dict().items():  # weights fingerprint: shape, moments, first values
            x = p.detach().float().flatten()
            h.update(f"{name}{tuple(p.shape)}{float(x.sum()):.6e}{float(x.abs().sum()):.6e}".encode())
            h.update(x[:64].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def sample_key(sample: AnomalySample) -> str:
    """The cache key of a sample: its id plus a fingerprint of its image (file size and mtime
    for paths — no decoding —, a pixel digest for in-memory images), so regenerated data with
    recycled ids never hits stale features."""
    img = sample.image
    if isinstance(img, (str, Path)):
        try:
            st = Path(img).stat()
        except OSError as exc:
            raise DataError(f"sample {sample.id!r}: cannot read image file {img}: {exc.strerror}") from None
        tag = f"{st.st_size}-{st.st_mtime_ns}"
    else:
        arr = np.asarray(img)
        tag = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]
    return f"{sample.id}#{tag}"


class FeatureCache:
    """Per-image tower features in memory-mapped ``.npy`` chunks, keyed by image id + fingerprint."""

    def __init__(self, root, model, dtype: str = "float16"):
        if dtype not in ("float16", "float32"):
            raise ValueError(f"feature cache dtype must be float16 or float32, got {dtype!r}")
        self.model, self.dtype = model, dtype
        self.prep_hash = preprocessing_hash(model, dtype)
        self.dir = Path(root) / self.prep_hash
        self.index: dict[str, tuple[str, int, int]] = {}  # key → (chunk, first tile, n tiles)
        self._maps: dict[str, np.ndarray] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the chunk index files (after another rank or process has built)."""
        self.index.clear()
        if not self.dir.is_dir():
            return
        for meta in sorted(self.dir.glob("chunk-*.json")):
            entries = json.loads(meta.read_text())
            for key, (start, n) in entries.items():
                self.index[key] = (meta.stem, int(start), int(n))

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def missing(self, samples: Sequence[AnomalySample]) -> list[AnomalySample]:
        return [s for s in samples if sample_key(s) not in self.index]

    def build(self, samples: Sequence[AnomalySample], batch_size: int = 8, device=None, progress: bool = False) -> int:
        """Run the tower on the samples not yet cached; returns how many images were added."""
        todo, seen = [], set()
        for s in samples:
            key = sample_key(s)
            if key in seen and key not in self.index:
                raise DataError(f"duplicate sample id {key!r}: the feature cache needs unique ids")
            seen.add(key)
            if key not in self.index:
                todo.append((key, s))
        if not todo:
            return 0
        proc = self.model.processor
        tiles = [proc.layout(*fit_caps(proc, s.load_image())).num_tiles for _, s in todo]  # sizes only
        c, g = self.model.config, self.model.config.geometry
        shape = (sum(tiles), 1 + len(c.feature_levels), g.num_patches, c.vision.hidden_size)
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:12]
        npy = self.dir / f"chunk-{tag}.npy"
        arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.dtype(self.dtype), shape=shape)
        entries, start = {}, 0
        for i in _progress(range(0, len(todo), batch_size), progress, "feature cache"):
            chunk = todo[i:i + batch_size]
            batch = proc.images([s.load_image() for _, s in chunk])
            final, levels = tower_features(self.model, batch.pixel_values, device)
            stacked = torch.stack([final, *levels], dim=1)  # L + 1 × [N, P, D] → [N, 1 + L, P, D]
            for (key, _), part in zip(chunk, stacked.split(batch.split_sizes.tolist())):
                arr[start:start + len(part)] = part.to(getattr(torch, self.dtype)).cpu().numpy()
                entries[key] = [start, len(part)]
                start += len(part)
        arr.flush()
        del arr
        tmp = self.dir / f".chunk-{tag}.json.tmp"
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, self.dir / f"chunk-{tag}.json")  # the chunk counts from here on
        self.refresh()
        return len(todo)

    def _array(self, chunk: str) -> np.ndarray:
        if chunk not in self._maps:
            self._maps[chunk] = np.load(self.dir / f"{chunk}.npy", mmap_mode="r")
        return self._maps[chunk]

    def load(self, samples: Sequence[AnomalySample], device=None):
        """The expert's inputs for ``samples`` from the cache, in fp32:
        (final [N, P, D], levels L × [N, P, D], split_sizes [B])."""
        parts, split = [], []
        for s in samples:
            key = sample_key(s)
            if key not in self.index:
                raise KeyError(f"sample {key!r} is not in the feature cache {self.dir}; call build() first")
            chunk, start, n = self.index[key]
            parts.append(torch.from_numpy(np.array(self._array(chunk)[start:start + n])))  # [n, 1 + L, P, D]
            split.append(n)
        x = torch.cat(parts).to(device=device, dtype=torch.float32)  # [N, 1 + L, P, D]
        return x[:, 0], list(x[:, 1:].unbind(1)), split

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("chunk-*.npy")) if self.dir.is_dir() else 0


def fit_caps(processor, image) -> tuple[int, int]:
    """(h, w) of ``image`` after the long-side cap, as the processor tiles it: from the size the
    image had before the pixel budget, as the processor does."""
    from ..anyres import capped_size
    from ..images import source_size

    return capped_size(*source_size(image), processor.config.geometry)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)
