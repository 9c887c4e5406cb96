"""Normal-image categories (adkit.data.normals, adkit.data.objects) and make_samples."""

from __future__ import annotations

import socket
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from adkit.data.normals import (
    CATEGORIES, PROVENANCE, SPLITS, Category, categories, make_samples, normal_image,
)
from adkit.data.objects import OBJECTS, render_object
from adkit.data.records import AnomalySample, DataError
from adkit.data.synth import DEFECT_FAMILIES


@pytest.fixture()
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_category_table():
    assert len(CATEGORIES) >= 16
    assert len(categories(kind="texture")) >= 6 and len(categories(kind="object")) >= 6
    for name, cat in CATEGORIES.items():
        assert isinstance(cat, Category) and cat.name == name
        assert cat.kind in ("texture", "object", "photo") and cat.split in SPLITS
        assert cat.hint.startswith(("a ", "an ")) and cat.license and cat.source
    by_split = [set(categories(split=s)) for s in SPLITS]
    assert set().union(*by_split) == set(CATEGORIES)
    assert sum(map(len, by_split)) == len(CATEGORIES)  # disjoint
    for kind in ("texture", "object"):
        assert len(categories("test", kind)) >= 2
        assert len(categories("val", kind)) >= 1
        assert len(categories("train", kind)) >= 3
    with pytest.raises(DataError, match="valid splits"):
        categories("holdout")
    with pytest.raises(DataError, match="valid kinds"):
        categories(kind="painting")


def test_provenance_covers_every_category():
    import skimage.data

    covered = {c for entry in PROVENANCE.values() for c in entry["categories"]}
    assert covered == set(CATEGORIES)
    for name, cat in CATEGORIES.items():
        assert cat.source in PROVENANCE
        entry = PROVENANCE[cat.source]
        assert name in entry["categories"] and entry["license"] and entry["package"]
    for key, entry in PROVENANCE.items():
        if entry["package"] == "scikit-image":  # what we quote is what the docstring says
            doc = " ".join(getattr(skimage.data, key.rsplit(".", 1)[1]).__doc__.split())
            assert "Creative Commons CC0 License" in doc and entry["license"] == "CC0"


@pytest.mark.parametrize("name", list(CATEGORIES))
def test_every_category_renders_offline(offline, name):
    kind = CATEGORIES[name].kind
    for size in (224, 96, 301):
        img, fg = normal_image(name, 0, size)
        arr = np.asarray(img)
        assert img.mode == "RGB" and img.size == (size, size)
        assert arr.std() > 4, "image is flat"
        if kind == "object":
            assert fg.dtype == bool and fg.shape == (size, size)
            assert 0.05 < fg.mean() < 0.8, fg.mean()
            # the object differs from its background
            assert np.abs(arr[fg].mean(0) - arr[~fg].mean(0)).max() > 10
        else:
            assert fg is None
    a, _ = normal_image(name, 5, 128)
    b, _ = normal_image(name, 5, 128)
    c, _ = normal_image(name, 6, 128)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_object_renderer():
    assert len(OBJECTS) >= 6
    img, fg = render_object("nut", 128, np.random.default_rng(0))
    assert img.dtype == np.uint8 and img.shape == (128, 128, 3)
    assert not fg[64, 64] or not fg[60:68, 60:68].all()  # the nut's hole is not foreground
    with pytest.raises(ValueError, match="valid objects"):
        render_object("spaceship", 64, np.random.default_rng(0))


def test_normal_image_errors():
    with pytest.raises(DataError) as exc:
        normal_image("granite", 0)
    assert "granite" in str(exc.value) and "brick" in str(exc.value)
    with pytest.raises(DataError, match="size"):
        normal_image("brick", 0, size=8)


def test_make_samples_balance_and_ids():
    cats = ["brick", "capsule", "wood"]
    samples = make_samples(cats, 3, 8, seed=1, size=96)
    assert len(samples) == 3 * 11 and all(isinstance(s, AnomalySample) for s in samples)
    assert Counter(s.label for s in samples) == {0: 9, 1: 24}
    assert len({s.id for s in samples}) == len(samples)
    assert samples[0].id == "brick/train/0000" and samples[13].id == "capsule/train/0002"
    for cat in cats:
        fams = Counter(s.defect for s in samples if s.category == cat and s.label == 1)
        assert set(fams) == set(DEFECT_FAMILIES) and set(fams.values()) == {1}  # 8 = one each
    for s in samples:
        assert s.source == "adkit-synth" and isinstance(s.image, Image.Image)
        assert s.meta["split"] == CATEGORIES[s.category].split and s.image.size == (96, 96)
        mask = s.load_mask()
        assert mask.shape == (96, 96)
        if s.label == 0:
            assert s.defect == "good" and not mask.any()
        else:
            assert mask.any() and s.defect in DEFECT_FAMILIES
            assert set(s.meta) >= {"bbox", "location", "severity", "area", "seed"}
            # the record regenerates: same base image outside the mask, defect on the object
            base, fg = normal_image(s.category, s.meta["seed"], 96)
            out, ref = np.asarray(s.image), np.asarray(base)
            assert np.array_equal(out[~mask], ref[~mask])
            if fg is not None:
                assert not (mask & ~fg).any()


def test_make_samples_deterministic():
    a = make_samples(["gravel", "pill"], 2, 3, seed=4, size=64, families=("crack", "hole"))
    b = make_samples(["gravel", "pill"], 2, 3, seed=4, size=64, families=("crack", "hole"))
    c = make_samples(["gravel", "pill"], 2, 3, seed=5, size=64, families=("crack", "hole"))
    assert [s.id for s in a] == [s.id for s in b]
    assert all(x.image.tobytes() == y.image.tobytes() and x.meta == y.meta for x, y in zip(a, b))
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert any(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, c))
    assert {s.defect for s in a if s.label} == {"crack", "hole"}
    assert make_samples("tile", 1, 0, seed=0, size=64)[0].id == "tile/train/0000"


def test_make_samples_errors():
    with pytest.raises(DataError, match="valid categories"):
        make_samples(["brick", "marble"], 1, 1, seed=0)
    with pytest.raises(DataError, match="valid families"):
        make_samples(["brick"], 1, 1, seed=0, families=("dent",))
    with pytest.raises(DataError, match="n_normal"):
        make_samples(["brick"], -1, 1, seed=0)
    with pytest.raises(DataError, match="seed"):
        make_samples(["brick"], 1, 1, seed=-3)


def test_photo_categories_are_real_licensed_photos_kept_apart_from_the_check_photos():
    from adkit.data.photos import CHECK_PHOTOS, PHOTO_SOURCES, photo

    assert not set(PHOTO_SOURCES) & set(CHECK_PHOTOS)
    for name in PHOTO_SOURCES:
        arr = photo(name)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 100
    assert photo("china").std(axis=2).mean() > 5  # a colour photograph, not grey
    cats = {n: CATEGORIES[n] for n in categories(kind="photo")}
    assert {c.split for c in cats.values()} == {"train", "val"}
    assert "CC BY 2.0" in cats["photo"].license and "danielbuechele" in cats["photo"].license
    s = make_samples("photo", 2, 2, seed=3, size=96)
    assert [x.label for x in s] == [0, 0, 1, 1] and s[2].mask.any()
    with pytest.raises(DataError, match="unknown photo"):
        photo("astronaut")


def test_domain_variation_is_seeded_per_sample():
    a = make_samples(["tile", "pill"], 3, 3, seed=2, size=[64, 96, 128], grey=0.5)
    b = make_samples(["tile", "pill"], 3, 3, seed=2, size=[64, 96, 128], grey=0.5)
    assert [x.image.tobytes() for x in a] == [x.image.tobytes() for x in b]
    assert {x.image.width for x in a} <= {64, 96, 128} and len({x.image.width for x in a}) > 1
    for x in a:
        arr = np.asarray(x.image)
        assert x.meta["size"] == arr.shape[0] == x.mask.shape[0]
        assert x.meta["grey"] == bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    assert any(x.meta["grey"] for x in a) and not all(x.meta["grey"] for x in a)
    plain = make_samples("tile", 1, 1, seed=2, size=64)
    assert "grey" not in plain[0].meta  # no variation asked: the records are what they always were
    with pytest.raises(DataError, match="grey must be a fraction"):
        make_samples("tile", 1, 1, seed=2, grey=2)
