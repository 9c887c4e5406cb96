"""License-clean real photographs, for normal images of the "photo" categories.

Why: the kit's other normals are textures and procedural renders, so an expert trained on them
alone has never seen a natural photograph and calls everyday photos anomalous (a clean coffee
cup scored 0.708 with the first shipped expert). A few real photos teach it that the varied
structure of a scene is normal. They come with installed packages (offline) and may be used
with the licenses below; crops of them are made in memory and never written into
``data_samples/``.

The photos the kit uses to *check* its calibration — scikit-image's astronaut, camera,
chelsea, coffee, rocket, coins, moon, hubble_deep_field, immunohistochemistry and retina
(:data:`CHECK_PHOTOS`) — are never among them.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .records import DataError

__all__ = ["PHOTO_SOURCES", "CHECK_PHOTOS", "photo"]

#: name → (package, loader or file, license, attribution)
PHOTO_SOURCES = {
    "china": ("scikit-learn", "sklearn/datasets/images/china.jpg", "CC BY 2.0",
              "'china.jpg' by danielbuechele (Flickr), via scikit-learn's sample images"),
    "flower": ("scikit-learn", "sklearn/datasets/images/flower.jpg", "CC BY 2.0",
               "'flower.jpg' by vultilion (Flickr), via scikit-learn's sample images"),
    "clock": ("scikit-image", "skimage.data.clock", "public domain (skimage.data docstring)", ""),
    "text": ("scikit-image", "skimage.data.text", "public domain (skimage.data docstring)", ""),
    "cell": ("scikit-image", "skimage.data.cell", "CC0 (skimage.data docstring)", ""),
}
#: bundled scikit-image photos kept out of training: the calibration check (adkit eval photo-check)
CHECK_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "hubble_deep_field",
                "immunohistochemistry", "retina")


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """The photo ``name`` as uint8 RGB (H, W, 3), read from its installed package (offline)."""
    if name not in PHOTO_SOURCES:
        raise DataError(f"unknown photo {name!r}; available: {', '.join(PHOTO_SOURCES)}")
    package, where, _, _ = PHOTO_SOURCES[name]
    if where.startswith("skimage.data."):
        import skimage.data

        arr = np.asarray(getattr(skimage.data, where.rsplit(".", 1)[1])())
    else:
        spec = importlib.util.find_spec(where.split("/")[0])
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"photo {name!r} needs the {package!r} package: pip install {package}")
        path = Path(list(spec.submodule_search_locations)[0]).parent / where
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)  # grey → RGB
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))
