"""ELPV: 2,624 electroluminescence images of solar cells (docs/architecture.md §6), for zero-shot TESTS only.

One of the paper's nine zero-shot benchmarks (Table 2; their expert: 83.0 AUROC). The images
come from the ``elpv-dataset`` PyPI package and stay in memory: they are CC BY-NC-SA 4.0, so
the kit never writes them into the repository. Never train or tune on ELPV.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .records import AnomalySample, DataError


def _finish(samples):
    from .loaders import _finish as finish  # sorted by id, duplicate ids refused

    return finish(samples)

__all__ = ["load_elpv", "PROTOCOLS"]

#: the two labelling rules the kit reports side by side (cells carry a defect probability)
PROTOCOLS = {
    "clear": "p = 0 vs p = 1 (cells graded 1/3 or 2/3 left out)",
    "graded": "p = 0 vs p > 0 (every graded defect counts)",
}


@functools.lru_cache(maxsize=1)
def _elpv_index() -> tuple[Path, tuple[tuple[str, float, str], ...]]:
    """(data folder, rows of (relative path, defect probability, cell type)) of the package."""
    try:
        import elpv_dataset
    except ImportError:
        raise DataError("ELPV needs the 'elpv-dataset' package: pip install elpv-dataset") from None
    data_dir = Path(elpv_dataset.__file__).parent / "data"
    labels = data_dir / "labels.csv"  # the file elpv_dataset.utils.load_dataset() parses
    rows = []
    for line_no, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                path, prob, kind = line.split()
                rows.append((path, float(prob), kind))
            except ValueError:
                raise DataError(f"{labels}:{line_no}: expected '<path> <probability> <type>'") from None
    return data_dir, tuple(rows)


def _allocate(sizes: dict, n: int) -> dict:
    """Split ``n`` over groups in proportion to their sizes (largest remainder, ties by key)."""
    total = sum(sizes.values())
    quota = {k: n * v / total for k, v in sizes.items()}
    alloc = {k: int(q) for k, q in quota.items()}
    for k in sorted(sizes, key=lambda k: (-(quota[k] - alloc[k]), k))[: n - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def load_elpv(limit: int | None = None, seed: int = 0, threshold: float = 0.0,
              by_type: bool = False, protocol: str = "graded") -> list[AnomalySample]:
    """ELPV solar-cell electroluminescence images (``elpv-dataset`` package; docs/architecture.md §6).

    **Test only: never train or tune on ELPV** (it is one of the paper's zero-shot benchmarks;
    data CC BY-NC-SA 4.0: never write these images into the repository).

    2,624 grey 300×300 cells; each ``image`` is an in-memory ``uint8`` array. The package grades
    each cell with a defect probability in {0, 1/3, 2/3, 1}; ``label = 1`` iff probability >
    ``threshold`` (default 0: any graded defect counts). ``category`` = ``"elpv"``, or the cell
    type ``"mono"``/``"poly"`` with ``by_type=True``; ``meta`` holds probability, type and file.
    ``protocol="clear"`` keeps only the cells graded 0 or 1 (clear defects; the images in between
    are left out), ``"graded"`` (default) keeps all (:data:`PROTOCOLS`).
    ``limit``: a deterministic stratified subset (``seed``): split over the labels in proportion
    (at least one of each when ``limit >= 2``), then over (probability, type) groups.
    Rows come from the package's ``labels.csv`` — the file ``elpv_dataset.utils.load_dataset()``
    reads — and only the selected images are decoded.
    """
    if not 0.0 <= threshold < 1.0:
        raise DataError(f"ELPV threshold must lie in [0, 1), got {threshold!r}")
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown ELPV protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    data_dir, rows = _elpv_index()
    if protocol == "clear":
        rows = tuple(r for r in rows if r[1] in (0.0, 1.0))
    labels = [int(prob > threshold) for _, prob, _ in rows]
    chosen = list(range(len(rows)))
    if limit is not None:
        if int(limit) < 1:
            raise DataError(f"ELPV limit must be >= 1, got {limit!r}")
        chosen = _stratified(rows, labels, int(limit), seed) if limit < len(rows) else chosen
    from PIL import Image

    samples = []
    for i in chosen:
        rel, prob, kind = rows[i]
        path = data_dir / rel
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("L"), dtype=np.uint8)  # (300, 300) grey
        except OSError as exc:
            raise DataError(f"{path}: cannot read ELPV image ({exc})") from None
        samples.append(AnomalySample(
            image=array, label=labels[i], category=kind if by_type else "elpv",
            defect="defective" if labels[i] else "good", mask=None, id=f"elpv/{Path(rel).stem}",
            source="elpv", meta={"probability": prob, "type": kind, "file": rel}))
    return _finish(samples)


def _stratified(rows, labels: list[int], limit: int, seed: int) -> list[int]:
    by_label = {lab: sum(1 for x in labels if x == lab) for lab in sorted(set(labels))}
    per_label = _allocate(by_label, limit)
    if limit >= 2 and len(by_label) == 2:
        for lab in by_label:  # guarantee both classes (AUROC needs both)
            if per_label[lab] == 0:
                per_label[lab], per_label[1 - lab] = 1, per_label[1 - lab] - 1
    rng = np.random.default_rng(seed)
    chosen = []
    for lab in sorted(by_label):
        groups: dict = {}
        for i, (_, prob, kind) in enumerate(rows):
            if labels[i] == lab:
                groups.setdefault((round(prob, 4), kind), []).append(i)
        alloc = _allocate({k: len(v) for k, v in groups.items()}, per_label[lab])
        for key in sorted(groups):
            chosen += [int(i) for i in rng.permutation(groups[key])[: alloc[key]]]
    return sorted(chosen)
