"""Dataset loaders on synthetic trees of the exact layouts (MVTec AD, VisA, folders) + real ELPV."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkit.data import AnomalySample, DataError
from adkit.data.loaders import load_elpv, load_folder, load_mvtec, load_visa
from adkit.images import ImageLoadError


def _png(path, value=128, size=32, mask=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size), np.uint8)
    if mask:
        arr[8:16, 8:16] = 255
    else:
        arr[:] = value
        arr[4:8, 4:8] = 255 - value
    Image.fromarray(arr).save(path)
    return path


def make_mvtec(root, cats=("bottle", "screw")):
    for c in cats:
        for i in range(2):
            _png(root / c / "train" / "good" / f"{i:03d}.png")
            _png(root / c / "test" / "good" / f"{i:03d}.png")
        for defect in ("broken_large", "crack"):
            for i in range(2):
                _png(root / c / "test" / defect / f"{i:03d}.png", 30)
                _png(root / c / "ground_truth" / defect / f"{i:03d}_mask.png", mask=True)
    (root / "license.txt").write_text("not a category")
    return root


def make_visa(root, cats=("candle", "pcb1"), mask_suffix=""):
    for c in cats:
        _png(root / c / "train" / "good" / "0000.JPG")
        _png(root / c / "test" / "good" / "0001.JPG")
        for i in range(2):
            _png(root / c / "test" / "bad" / f"{i:03d}.JPG", 40)
            _png(root / c / "ground_truth" / "bad" / f"{i:03d}{mask_suffix}.png", mask=True)
    return root


# --- MVTec AD ------------------------------------------------------------------------------

def test_mvtec_test_split(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    samples = load_mvtec(root)
    assert len(samples) == 2 * (2 + 4)
    assert [s.id for s in samples] == sorted(s.id for s in samples)
    s = next(x for x in samples if x.id == "bottle/test/broken_large/000")
    assert s.label == 1 and s.defect == "broken_large" and s.category == "bottle" and s.source == "mvtec"
    assert s.image == root / "bottle/test/broken_large/000.png"
    assert s.mask == root / "bottle/ground_truth/broken_large/000_mask.png"
    assert s.load_mask().sum() == 64 and s.load_image().size == (32, 32)
    good = [x for x in samples if x.label == 0]
    assert len(good) == 4 and all(x.defect == "good" and x.mask is None for x in good)
    assert load_mvtec(root) == samples  # deterministic


def test_mvtec_train_categories_and_single_category_root(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    train = load_mvtec(root, split="train", categories="screw")
    assert [s.id for s in train] == ["screw/train/good/000", "screw/train/good/001"]
    assert all(s.label == 0 and s.meta["split"] == "train" for s in train)
    single = load_mvtec(root / "bottle")  # a root that is one category folder
    assert {s.category for s in single} == {"bottle"} and len(single) == 6


def test_mvtec_errors_name_the_path(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_mvtec(root, split="val")
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        load_mvtec(tmp_path / "nowhere")
    with pytest.raises(DataError, match="category folder not found: .*cable"):
        load_mvtec(root, categories=["cable"])
    (root / "bottle/ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(DataError, match=r"crack/001\.png: anomalous image has no mask; expected .*001_mask\.png"):
        load_mvtec(root)
    assert len(load_mvtec(root, require_masks=False)) == 12  # masks optional on request
    shutil.rmtree(root / "screw/ground_truth")
    with pytest.raises(DataError, match=r"mask folder not found: .*screw/ground_truth/broken_large"):
        load_mvtec(root, categories="screw")
    (root / "empty" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"'empty': no test images in .*empty/test"):
        load_mvtec(root, categories="empty")
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match=r"flat: no MVTec AD categories found \(expected <root>/<category>"):
        load_mvtec(tmp_path / "flat")


def test_corrupt_and_empty_images(tmp_path):
    root = make_mvtec(tmp_path / "mvtec", cats=("bottle",))
    bad = root / "bottle/test/good/001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    sample = next(s for s in load_mvtec(root) if s.image == bad)  # lazy: loading paths is fine
    with pytest.raises(ImageLoadError, match=str(bad)):
        sample.load_image()
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=f"{bad}: empty file"):
        load_mvtec(root)


# --- VisA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", "_mask"])
def test_visa_one_class_split(tmp_path, suffix):
    root = make_visa(tmp_path / "visa", mask_suffix=suffix)
    samples = load_visa(root)
    assert [s.id for s in samples] == [
        "candle/test/bad/000", "candle/test/bad/001", "candle/test/good/0001",
        "pcb1/test/bad/000", "pcb1/test/bad/001", "pcb1/test/good/0001"]
    bad = samples[0]
    assert bad.label == 1 and bad.defect == "bad" and bad.source == "visa"
    assert bad.mask == root / f"candle/ground_truth/bad/000{suffix}.png" and bad.load_mask().any()
    assert [s.id for s in load_visa(root, split="train", categories=["pcb1"])] == ["pcb1/train/good/0000"]


def test_visa_errors(tmp_path):
    root = make_visa(tmp_path / "visa")
    (root / "pcb1/ground_truth/bad/001.png").unlink()
    with pytest.raises(DataError, match=r"pcb1/test/bad/001\.JPG: anomalous image has no mask"):
        load_visa(root)
    with pytest.raises(DataError, match="unknown split"):
        load_visa(root, split="validation")


def test_visa_original_csv(tmp_path):
    root = tmp_path / "VisA"
    _png(root / "candle/Data/Images/Normal/0000.JPG")
    _png(root / "candle/Data/Images/Normal/0001.JPG")
    _png(root / "candle/Data/Images/Anomaly/000.JPG", 40)
    _png(root / "candle/Data/Masks/Anomaly/000.png", mask=True)
    (root / "split_csv").mkdir()
    (root / "split_csv/1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\n"
        "candle,test,normal,candle/Data/Images/Normal/0001.JPG,\n"
        "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n")
    samples = load_visa(root)
    assert [(s.id, s.label) for s in samples] == [("candle/test/bad/000", 1), ("candle/test/good/0001", 0)]
    assert samples[0].mask == root / "candle/Data/Masks/Anomaly/000.png"
    (root / "candle/Data/Masks/Anomaly/000.png").unlink()
    with pytest.raises(DataError, match=r"1cls\.csv:4: mask not found"):
        load_visa(root)


# --- generic folders -----------------------------------------------------------------------

def test_folder_flat(tmp_path):
    root = tmp_path / "widgets"
    _png(root / "good" / "a.png")
    _png(root / "OK" / "sub" / "b.JPEG")
    _png(root / "scratch" / "c.bmp", 10)
    _png(root / "scratch" / "d.tif", 10)
    _png(root / "masks" / "scratch" / "c_mask.png", mask=True)
    (root / "good" / ".hidden.png").write_bytes(b"not an image")
    (root / "good" / "notes.txt").write_text("ignored")
    samples = load_folder(root)
    assert [(s.id, s.label, s.defect) for s in samples] == [
        ("widgets/OK/sub/b", 0, "good"), ("widgets/good/a", 0, "good"),
        ("widgets/scratch/c", 1, "scratch"), ("widgets/scratch/d", 1, "scratch")]
    assert samples[2].mask == root / "masks/scratch/c_mask.png" and samples[3].mask is None
    assert all(s.source == "folder" and s.category == "widgets" for s in samples)
    assert {s.category for s in load_folder(root, category="parts")} == {"parts"}
    with pytest.raises(DataError, match=r"scratch/d\.tif: anomalous image has no mask"):
        load_folder(root, require_masks=True)


def test_folder_nested(tmp_path):
    root = tmp_path / "plant"
    for cat in ("gear", "nut"):
        _png(root / cat / "normal" / "1.png")
        _png(root / cat / "dent" / "2.png", 20)
        _png(root / cat / "ground_truth" / "dent" / "2.png", mask=True)
    samples = load_folder(root)
    assert [s.id for s in samples] == ["gear/dent/2", "gear/normal/1", "nut/dent/2", "nut/normal/1"]
    assert samples[0].category == "gear" and samples[0].mask == root / "gear/ground_truth/dent/2.png"
    assert [s.id for s in load_folder(root, category="nut")] == ["nut/dent/2", "nut/normal/1"]


def test_folder_errors(tmp_path):
    root = tmp_path / "loose"
    _png(root / "x.png")
    with pytest.raises(DataError, match=r"loose: images lie directly in the folder \(x\.png"):
        load_folder(root)
    (root / "x.png").unlink()
    (root / "good").mkdir()
    with pytest.raises(DataError, match=r"loose: no images found in good"):
        load_folder(root)
    _png(root / "good" / "a.png")
    _png(root / "good" / "a.jpg")
    with pytest.raises(DataError, match="duplicate sample id 'loose/good/a'"):
        load_folder(root)
    with pytest.raises(DataError, match="folder root is not a folder"):
        load_folder(root / "good" / "a.png")


# --- ELPV (real package data; test only) ---------------------------------------------------

@functools.lru_cache(maxsize=None)
def _elpv(limit, seed=0):
    return load_elpv(limit=limit, seed=seed)


def test_elpv_stratified_subset():
    samples = _elpv(40)
    assert len(samples) == 40
    labels = [s.label for s in samples]
    assert 0 < sum(labels) < 40
    assert abs(sum(labels) - round(40 * 1116 / 2624)) <= 1  # 1116 of 2,624 cells have p > 0
    for s in samples:
        assert isinstance(s, AnomalySample) and s.source == "elpv" and s.category == "elpv"
        assert s.image.shape == (300, 300) and s.image.dtype == np.uint8
        assert s.label == int(s.meta["probability"] > 0) and s.meta["type"] in ("mono", "poly")
    assert {s.meta["type"] for s in samples} == {"mono", "poly"}
    assert [s.id for s in _elpv(40)] == [s.id for s in load_elpv(limit=40)]  # deterministic
    assert [s.id for s in _elpv(40, 1)] != [s.id for s in samples]  # the seed matters
    assert samples[0].load_image().size == (300, 300)


def test_elpv_matches_package_loader_and_threshold(tmp_path):
    """Our rows equal what ``elpv_dataset.utils.load_dataset`` returns for the same cells (run on a
    five-line copy of its labels.csv beside a link to its images, so it decodes only those)."""
    import elpv_dataset
    from elpv_dataset.utils import load_dataset

    data = Path(elpv_dataset.__file__).parent / "data"
    lines = (data / "labels.csv").read_text().splitlines()
    samples = _elpv(40)[:5]
    (tmp_path / "images").symlink_to(data / "images")
    (tmp_path / "labels.csv").write_text("\n".join(
        next(ln for ln in lines if ln.split()[0] == s.meta["file"]) for s in samples) + "\n")
    images, probs, types = load_dataset(str(tmp_path / "labels.csv"))
    for k, s in enumerate(samples):
        assert np.array_equal(images[k], s.image) and probs[k] == s.meta["probability"]
        assert types[k] == s.meta["type"]
    strict = load_elpv(limit=20, threshold=0.5, by_type=True)
    assert all(s.label == int(s.meta["probability"] > 0.5) and s.category == s.meta["type"] for s in strict)
    with pytest.raises(DataError, match="threshold"):
        load_elpv(limit=2, threshold=1.0)
