"""Dataset loaders: MVTec AD, VisA (1-class split), generic user folders, ELPV (docs/architecture.md §5, §6).

Every loader returns ``list[AnomalySample]`` (``adkit.data.records``) sorted by ``id``, so two
runs over the same files give the same order. Images are ``Path``s (decoded lazily by
``AnomalySample.load_image``) except ELPV, which the PyPI package holds in memory. Anything
the user can fix raises :class:`DataError` naming the path and the problem.

Layouts (docs/architecture.md §5 "Folder layouts users will bring"):

* MVTec AD  ``<root>/<cat>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}``
* VisA 1-class split (``prepare_data.py --split-type 1cls`` of amazon-science/spot-diff)
  ``<root>/<cat>/{train/good, test/good, test/bad, ground_truth/bad/<name>.png}``: the script
  copies the original ``Data/Masks/Anomaly/<name>.png`` beside ``test/bad/<name>.JPG``, so the
  mask has the image's stem and a ``.png`` suffix; ``<name>_mask.png`` is accepted too. The
  original download with ``split_csv/1cls.csv`` (columns object,split,label,image,mask, paths
  relative to the root) is read when no ``<cat>/train|test`` folders exist.
* generic folder: see :func:`load_folder`.
* ELPV: :mod:`adkit.data.elpv` (test only: never train or tune on it, docs/architecture.md §6).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

from .records import AnomalySample, DataError

__all__ = ["IMAGE_EXTENSIONS", "NORMAL_NAMES", "load_mvtec", "load_visa", "load_folder", "load_elpv"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
NORMAL_NAMES = ("good", "normal", "ok")
MASK_DIRS = ("masks", "ground_truth")
SPLITS = ("train", "test")
_MVTEC_HINT = "<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}"
_VISA_HINT = "<root>/<category>/{train/good, test/good, test/bad, ground_truth/bad/<name>.png}"


# --- small file-system helpers -------------------------------------------------------------

def _listdir(folder: Path) -> list[Path]:
    """Visible entries of ``folder``, sorted (hidden names starting with '.' are skipped)."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in _listdir(folder) if p.is_dir()]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (recursively: skipping anything under a hidden folder)."""
    if not recursive:
        return [p for p in _listdir(folder) if _is_image(p)]
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if _is_image(Path(dirpath) / f)]
    return sorted(found)


def _check_file(path: Path) -> None:
    """Cheap readability checks (a stat, no decoding): empty or unreadable files fail early."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: file is not readable (permission denied)")


def _check_root(root, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{what} root not found: {path}")
    if not path.is_dir():
        raise DataError(f"{what} root is not a folder: {path}")
    return path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(map(repr, SPLITS))}")


def _finish(samples: list[AnomalySample]) -> list[AnomalySample]:
    """Sort by id and refuse duplicate ids (e.g. ``000.png`` beside ``000.jpg``)."""
    samples.sort(key=lambda s: s.id)
    for a, b in zip(samples, samples[1:]):
        if a.id == b.id:
            raise DataError(f"duplicate sample id {a.id!r}: {a.image} and {b.image} (rename one)")
    return samples


# --- MVTec AD and VisA (one tree shape, two mask conventions) ------------------------------

def _categories(root: Path, categories, what: str, hint: str) -> list[tuple[str, Path]]:
    if categories is not None:
        names = [categories] if isinstance(categories, str) else list(categories)
        if not names:
            raise DataError(f"{what}: categories is empty")
        for name in names:
            if not (root / name).is_dir():
                raise DataError(f"{what} category folder not found: {root / name}")
        return [(name, root / name) for name in names]
    found = [d for d in _subdirs(root) if (d / "train").is_dir() or (d / "test").is_dir()]
    if found:
        return [(d.name, d) for d in found]
    if (root / "train").is_dir() or (root / "test").is_dir():  # root is one category folder
        return [(root.name, root)]
    raise DataError(f"{root}: no {what} categories found (expected {hint})")


def _load_tree(root, split, categories, require_masks, *, what, source, hint, mask_names):
    """Shared walk of ``<root>/<cat>/<split>/<defect>/<image>`` + ``ground_truth/<defect>``."""
    _check_split(split)
    root = _check_root(root, what)
    samples: list[AnomalySample] = []
    for cat, cat_dir in _categories(root, categories, what, hint):
        split_dir = cat_dir / split
        if not split_dir.is_dir():
            raise DataError(f"{what} category {cat!r}: split folder not found: {split_dir}")
        before = len(samples)
        for defect_dir in _subdirs(split_dir):
            defect = defect_dir.name
            label = 0 if defect == "good" else 1
            gt_dir = cat_dir / "ground_truth" / defect
            images = _images(defect_dir)
            if label and images and require_masks and not gt_dir.is_dir():
                raise DataError(f"{what} category {cat!r}: mask folder not found: {gt_dir} (needed for "
                                f"the anomalous images in {defect_dir}; pass require_masks=False to skip masks)")
            for img in images:
                _check_file(img)
                mask = None
                if label:
                    mask = next((gt_dir / n for n in mask_names(img.stem) if (gt_dir / n).is_file()), None)
                    if mask is None and require_masks:
                        raise DataError(f"{img}: anomalous image has no mask; expected "
                                        f"{gt_dir / mask_names(img.stem)[0]} (pass require_masks=False to skip masks)")
                samples.append(AnomalySample(
                    image=img, label=label, category=cat, defect=defect, mask=mask,
                    id=f"{cat}/{split}/{defect}/{img.stem}", source=source, meta={"split": split}))
        if len(samples) == before:
            raise DataError(f"{what} category {cat!r}: no {split} images in {split_dir}")
    return _finish(samples)


def load_mvtec(root, split: str = "test", categories=None, require_masks: bool = True) -> list[AnomalySample]:
    """MVTec AD ``<root>/<cat>/{train/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}``.

    ``categories``: a name or list of names (default: every sub-folder holding ``train/`` or
    ``test/``; a root that is itself one category folder is accepted). ``id`` is
    ``"<cat>/<split>/<defect>/<stem>"``, e.g. ``"bottle/test/broken_large/000"``.
    """
    return _load_tree(root, split, categories, require_masks, what="MVTec AD", source="mvtec",
                      hint=_MVTEC_HINT, mask_names=lambda stem: [f"{stem}_mask.png"])


def load_visa(root, split: str = "test", categories=None, require_masks: bool = True,
              split_csv=None) -> list[AnomalySample]:
    """VisA after its 1-class split: ``<root>/<cat>/{train/good, test/good, test/bad, ground_truth/bad}``.

    Masks: ``ground_truth/bad/<stem>.png`` (the spot-diff ``prepare_data.py`` convention) or
    ``<stem>_mask.png``. Without split folders, or with ``split_csv`` given, the original
    download is read through its split CSV (default ``<root>/split_csv/1cls.csv``).
    """
    root_path = Path(root).expanduser()
    default_csv = root_path / "split_csv" / "1cls.csv"
    has_tree = root_path.is_dir() and any((d / "train").is_dir() or (d / "test").is_dir()
                                          for d in _subdirs(root_path))
    if split_csv is not None or (not has_tree and default_csv.is_file()):
        return _load_visa_csv(root_path, Path(split_csv) if split_csv else default_csv,
                              split, categories, require_masks)
    return _load_tree(root, split, categories, require_masks, what="VisA", source="visa",
                      hint=_VISA_HINT, mask_names=lambda stem: [f"{stem}.png", f"{stem}_mask.png"])


def _load_visa_csv(root: Path, csv_path: Path, split, categories, require_masks):
    """The original VisA download + ``split_csv/1cls.csv`` (object,split,label,image,mask)."""
    _check_split(split)
    root = _check_root(root, "VisA")
    if not csv_path.is_file():
        raise DataError(f"VisA split file not found: {csv_path}")
    wanted = None if categories is None else set([categories] if isinstance(categories, str) else categories)
    samples = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"object", "split", "label", "image", "mask"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if row["split"] != split or (wanted is not None and row["object"] not in wanted):
                continue
            label = {"normal": 0, "anomaly": 1}.get(row["label"])
            if label is None:
                raise DataError(f"{csv_path}:{line}: unknown label {row['label']!r} (expected normal/anomaly)")
            img = root / row["image"]
            if not img.is_file():
                raise DataError(f"{csv_path}:{line}: image not found: {img}")
            _check_file(img)
            mask = root / row["mask"] if row["mask"] else None
            if label and (mask is None or not mask.is_file()):
                if require_masks:
                    raise DataError(f"{csv_path}:{line}: mask not found for anomalous image {img}: {mask}")
                mask = None
            defect = "bad" if label else "good"
            samples.append(AnomalySample(
                image=img, label=label, category=row["object"], defect=defect, mask=mask,
                id=f"{row['object']}/{split}/{defect}/{img.stem}", source="visa",
                meta={"split": split, "csv_line": line}))
    if wanted is not None and wanted - {s.category for s in samples}:
        raise DataError(f"{csv_path}: no {split} rows for categories {sorted(wanted - {s.category for s in samples})}")
    if not samples:
        raise DataError(f"{csv_path}: no rows for split {split!r}")
    return _finish(samples)


# --- generic user folders ------------------------------------------------------------------

def load_folder(root, category=None, require_masks: bool = False,
                normal_names: Sequence[str] = NORMAL_NAMES) -> list[AnomalySample]:
    """A user's own folder of images.

    Flat form: ``<root>/good|normal|ok/**`` are normal (case-insensitive), every other sub-folder
    ``<root>/<defect>/**`` is anomalous with ``defect`` = that folder's name (images are found
    recursively). Optional masks: ``<root>/masks/<defect>/<sub-path>/<stem>.png`` or
    ``<stem>_*.png`` (``ground_truth/`` instead of ``masks/`` works too). ``category`` = the
    ``category`` argument or the root folder's name.

    Nested form ``<root>/<category>/<good|defect>/...``, autodetected by this rule: the root
    has no normal-named sub-folder but at least one of its sub-folders has one. Each
    sub-folder is then loaded as a flat folder with its own name as category, and a
    ``category`` argument (name or list) selects categories.

    ``id`` = ``"<category>/<folder>/<path without suffix>"``. Images lying directly in the root
    (or a category folder) are an error: a label must come from a folder name.
    """
    root = _check_root(root, "folder")
    normal = {n.lower() for n in normal_names}
    groups = [d for d in _subdirs(root) if d.name.lower() not in MASK_DIRS]
    nested = (not any(d.name.lower() in normal for d in groups)
              and any(g.name.lower() in normal for d in groups for g in _subdirs(d)))
    if not nested:
        return _finish(_load_flat(root, category or root.name, require_masks, normal))
    wanted = None if category is None else ([category] if isinstance(category, str) else list(category))
    if wanted is not None:
        unknown = [c for c in wanted if not (root / c).is_dir()]
        if unknown:
            raise DataError(f"{root}: category folder(s) not found: {unknown}")
        groups = [root / c for c in wanted]
    _refuse_loose_images(root)
    samples = []
    for cat_dir in groups:
        samples += _load_flat(cat_dir, cat_dir.name, require_masks, normal)
    return _finish(samples)


def _refuse_loose_images(folder: Path) -> None:
    loose = _images(folder)
    if loose:
        raise DataError(f"{folder}: images lie directly in the folder ({loose[0].name}, ...); put normal "
                        f"images in {folder}/good/ and each defect type in {folder}/<defect>/")


def _load_flat(root: Path, category: str, require_masks: bool, normal: set) -> list[AnomalySample]:
    _refuse_loose_images(root)
    groups = [d for d in _subdirs(root) if d.name.lower() not in MASK_DIRS]
    if not groups:
        raise DataError(f"{root}: no image sub-folders (expected {root}/good/ for normal images and "
                        f"{root}/<defect>/ for each defect type)")
    mask_roots = [root / m for m in MASK_DIRS if (root / m).is_dir()]
    samples = []
    for group in groups:
        is_normal = group.name.lower() in normal
        for img in _images(group, recursive=True):
            _check_file(img)
            rel = img.relative_to(group)
            mask = None if is_normal else _folder_mask(mask_roots, group.name, rel)
            if mask is None and not is_normal and require_masks:
                raise DataError(f"{img}: anomalous image has no mask; expected "
                                f"{root / 'masks' / group.name / rel.parent / (rel.stem + '.png')}")
            samples.append(AnomalySample(
                image=img, label=0 if is_normal else 1, category=category,
                defect="good" if is_normal else group.name, mask=mask,
                id=f"{category}/{group.name}/{rel.with_suffix('').as_posix()}", source="folder",
                meta={"folder": group.name}))
    if not samples:
        raise DataError(f"{root}: no images found in {', '.join(g.name for g in groups)} "
                        f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return samples


def _folder_mask(mask_roots: Iterable[Path], defect: str, rel: Path) -> Path | None:
    """The mask of ``<defect>/<rel>``: exact stem first, then ``<stem>_*`` (must be unique)."""
    for mask_root in mask_roots:
        folder = mask_root / defect / rel.parent
        if not folder.is_dir():
            continue
        found = [p for p in _images(folder) if p.stem == rel.stem or p.stem.startswith(rel.stem + "_")]
        exact = [p for p in found if p.stem == rel.stem]
        if exact or len(found) == 1:
            return (exact or found)[0]
        if len(found) > 1:
            raise DataError(f"{folder}: several masks match {rel.name}: {[p.name for p in found]}")
    return None



from .elpv import load_elpv  # noqa: E402  (ELPV has its own module; re-exported beside the others)
