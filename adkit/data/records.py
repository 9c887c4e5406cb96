"""The one record every data source yields and every consumer reads (docs/architecture.md §5).

Loaders (MVTec AD, VisA, generic folders, ELPV), the synthetic generator and the sample
sets all produce :class:`AnomalySample`; stage-1 training and the zero-shot runners only
ever read these fields, so any source plugs into any consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

ImageLike = Union[str, Path, Image.Image, np.ndarray]


class DataError(ValueError):
    """Bad data the user can fix: says which file / record and what is wrong."""


@dataclass
class AnomalySample:
    """One image with its ground truth.

    ``image``: a path (loaded lazily with :func:`adkit.images.load_image`) or an in-memory
    image. ``label``: 0 normal, 1 anomalous. ``mask``: optional pixel mask (path or H×W
    array, nonzero = defect). ``category``: object / texture class ("bottle", "brick").
    ``defect``: defect type ("good" for normals). ``id``: unique within its source.
    ``meta``: anything else (bounding box, location phrase, severity, split, ...).
    """

    image: ImageLike
    label: int
    category: str
    defect: str = "good"
    mask: Any = None
    id: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """The image as RGB PIL (paths go through the kit's safe loader)."""
        from ..images import load_image

        if isinstance(self.image, np.ndarray):
            return load_image(Image.fromarray(self.image))
        return load_image(self.image)

    def load_mask(self, size: tuple[int, int] | None = None,
                  image_size: tuple[int, int] | None = None) -> np.ndarray | None:
        """The mask as a bool H×W array (``size`` = (W, H) resizes, nearest); None if absent.

        ``image_size`` = (W, H) of the image as loaded: the mask must be of that size — or, when
        the loader downscaled the image (pixel budget), larger with the same aspect — else a
        DataError names the mask file (a mask of another image must not be resized into a truth)."""
        if self.mask is None:
            return None
        if isinstance(self.mask, np.ndarray):
            img = Image.fromarray((np.asarray(self.mask) > 0).astype(np.uint8) * 255)
        else:
            path = Path(self.mask)
            if not path.is_file():
                raise DataError(f"{self.id or self.image}: mask file not found: {path}")
            try:
                with Image.open(path) as m:
                    img = m.convert("L")
            except Exception as exc:  # noqa: BLE001 — report which file
                raise DataError(f"{self.id or self.image}: cannot read mask {path}: {exc}") from None
        if image_size is not None and not _fits(img.size, tuple(image_size)):
            where = "the mask array" if isinstance(self.mask, np.ndarray) else f"mask {self.mask}"
            raise DataError(f"{self.id or self.image}: {where} is {img.size[0]}×{img.size[1]} but the image is "
                            f"{image_size[0]}×{image_size[1]} (W×H): a mask must have its image's size")
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.NEAREST)
        return np.asarray(img) > 0


def _fits(mask_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """A mask (W, H) fits an image (W, H) of the same size, or one downscaled from the mask's size
    with its aspect kept (each side within a pixel of the exact scale)."""
    (mw, mh), (w, h) = mask_size, image_size
    if (mw, mh) == (w, h):
        return True
    scale = max(w / mw, h / mh)
    return scale < 1 and abs(mw * scale - w) <= 1 and abs(mh * scale - h) <= 1
