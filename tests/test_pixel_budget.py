"""The pixel budget (adkit.pixel_budget): big images are downscaled on load, and the crop grid,
the token count and the tiles follow the size before the budget exactly as without it.

Real images (smooth random fields, so resampling differences stay small) written as real PNG
and JPEG files, the real processor and the tiny model; no mocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adkit.anyres import capped_size, crop_grid, image_layout
from adkit.config import get_preset
from adkit.images import load_image, source_size
from adkit.pixel_budget import ENV_VAR, PIXEL_BUDGET, budget_size, default_budget
from adkit.processor import anyres_tiles

pytestmark = pytest.mark.usefixtures("one_thread")

# (W, H): square, landscape, portrait, near-ties of aspect, extreme strips, odd sides
SIZES = [(2000, 2000), (2001, 1999), (3000, 1000), (1000, 3000), (2500, 1407), (1407, 2500),
         (4000, 333), (333, 4000), (6000, 90), (90, 6000), (1777, 1333), (2399, 1201), (1201, 2399),
         (3163, 2011), (2011, 3163), (2900, 1450), (1451, 2900), (5000, 701), (1025, 1023), (1600, 1599)]


def _smooth(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB field (h, w, 3) uint8: low-frequency noise upsampled bilinearly."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def test_default_is_the_largest_anyres_canvas_of_any_preset():
    from adkit.geometry import PRESET_GEOMETRY

    assert PIXEL_BUDGET == 2304 * 2304  # 6 x 384 (the paper's tile), the largest canvas anyres can pick
    for g in PRESET_GEOMETRY.values():
        assert max(h * w for h, w in g.pinpoints) <= PIXEL_BUDGET
        if g.max_long_side is not None:
            assert g.max_long_side ** 2 <= PIXEL_BUDGET  # the capped image always fits


@pytest.mark.parametrize("budget", [10_000, 150 ** 2, 1_000_000, PIXEL_BUDGET])
def test_budget_size_keeps_the_aspect_and_the_budget(budget):
    rng = np.random.default_rng(budget)
    sizes = SIZES + [tuple(int(v) for v in rng.integers(1, 9000, 2)) for _ in range(500)]
    for w, h in sizes:
        bw, bh = budget_size(w, h, budget)
        if w * h <= budget:
            assert (bw, bh) == (w, h)
            continue
        assert bw * bh <= budget and bw <= w and bh <= h
        scale = np.sqrt(budget / (w * h))
        if min(w, h) * scale >= 1:  # aspect kept: each side within a pixel of the exact scale
            assert abs(bw - w * scale) < 1 and abs(bh - h * scale) < 1
    assert budget_size(10, 10, None) == (10, 10)


def test_an_8192_square_loads_at_the_budget_and_remembers_its_size(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (8192, 8192), (90, 120, 30)).save(path, compress_level=1)
    img = load_image(path)
    assert img.size == (2304, 2304) and source_size(img) == (8192, 8192)
    assert load_image(path, pixel_budget=None).size == (8192, 8192)
    again = load_image(img)  # the model loads what the CLI loaded: the record survives
    assert again.size == img.size and source_size(again) == (8192, 8192)
    smaller = load_image(img, pixel_budget=1000 * 1000)
    assert smaller.size == (1000, 1000) and source_size(smaller) == (8192, 8192)


def test_jpeg_is_decoded_at_reduced_scale_and_orientation_is_kept(tmp_path):
    arr = _smooth(6000, 3000)
    path = tmp_path / "big.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: the loaded image is 3000 wide, 6000 tall
    Image.fromarray(arr).save(path, quality=92, exif=exif)
    img = load_image(path)
    assert source_size(img) == (6000, 3000)  # (h, w) as displayed
    assert img.size == budget_size(3000, 6000, PIXEL_BUDGET)
    full = load_image(path, pixel_budget=None)
    assert full.size == (3000, 6000)
    ref = np.asarray(full.resize(img.size, Image.BICUBIC), dtype=np.float32)
    assert np.abs(np.asarray(img, dtype=np.float32) - ref).mean() < 2.0  # same picture, up to resampling


def test_environment_variable_configures_the_default(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "40000")
    assert default_budget() == 40000
    assert load_image(np.zeros((400, 400, 3), np.uint8)).size == (200, 200)
    monkeypatch.setenv(ENV_VAR, "none")
    assert load_image(np.zeros((4000, 400, 3), np.uint8)).size == (400, 4000)
    monkeypatch.setenv(ENV_VAR, "-3")
    with pytest.raises(ValueError, match=ENV_VAR):
        load_image(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="pixel_budget"):
        load_image(np.zeros((4, 4, 3), np.uint8), pixel_budget=0)


@pytest.mark.parametrize("preset,budget", [("paper-0.5b", 1400 ** 2), ("paper-0.5b", 700 ** 2),
                                           ("small", 500 ** 2), ("tiny", 120 ** 2)])
def test_tiles_grid_and_tokens_match_the_unbudgeted_path(preset, budget):
    """Over many sizes: the same capped size, crop grid and tile count, and nearly the same tiles,
    whether or not the image was downscaled first — also for a budget below the long-side cap."""
    config = get_preset(preset)
    g = config.geometry
    for i, (w, h) in enumerate(SIZES):
        arr = _smooth(w, h, seed=i)
        full = load_image(arr, pixel_budget=None)
        small = load_image(arr, pixel_budget=budget)
        assert small.width * small.height <= budget and source_size(small) == (h, w)
        t_full, size_full = anyres_tiles(full, config)
        t_small, size_small = anyres_tiles(small, config)
        assert size_small == size_full == capped_size(h, w, g), (w, h)
        assert t_small.shape == t_full.shape, (w, h)  # same grid → same number of tiles
        assert crop_grid(*size_small, g) == crop_grid(*capped_size(h, w, g), g)
        assert image_layout(*source_size(small), g).total == image_layout(h, w, g).total
        diff = (t_small - t_full).abs().mean().item()  # normalised units (std 0.5 → 2/255 per level)
        assert diff < (0.05 if budget >= (g.max_long_side or 0) ** 2 else 0.25), ((w, h), diff)


def test_model_sees_the_same_grid_and_token_count(tiny):
    """End to end on the tiny model: detection grid and the chat's placeholder count are the
    same for a budgeted and an unbudgeted load of the same large image."""
    for i, (w, h) in enumerate(SIZES[:8]):
        arr = _smooth(w, h, seed=i)
        full, small = load_image(arr, pixel_budget=None), load_image(arr, pixel_budget=150 ** 2)
        d_full, d_small = tiny.detect([full, small])
        assert d_small.grid_shape == d_full.grid_shape, (w, h)
        assert d_small.anomaly_map.shape == (small.height, small.width)  # maps at the loaded size
        conv = [{"role": "user", "content": "<image>\nAny defect?"}]
        b_full = tiny.processor([conv], [[full]], add_generation_prompt=True)
        b_small = tiny.processor([conv], [[small]], add_generation_prompt=True)
        assert b_small["input_ids"].shape == b_full["input_ids"].shape, (w, h)
        assert b_small["image_sizes"].tolist() == b_full["image_sizes"].tolist()
        assert b_small["split_sizes"].tolist() == b_full["split_sizes"].tolist()


# VmHWM, the peak RSS of this process's own address space: ru_maxrss would not do, since Linux
# carries the parent's high-water mark over fork + exec (under pytest, the whole suite's peak).
_PEAK = """import re, sys
from adkit.cli import main
rc = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print("PEAK_KB", hwm, "RC", rc)
"""


def _detect_peak_kb(image, maps, env=None) -> int:
    """Peak RSS (KiB) of a real ``adkit detect IMAGE --preset tiny --maps DIR`` process."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _PEAK, "detect", str(image), "--preset", "tiny", "--maps", str(maps)],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("PEAK_KB")]
    assert r.returncode == 0 and line and line[0].endswith("RC 0"), r.stderr
    return int(line[0].split()[1])


def test_an_8192_image_costs_about_what_a_2048_one_does(tmp_path):
    """Memory, measured on real processes: with the budget, detect + maps on 8192² peaks within
    25 % of 2048²; without it (``ADKIT_PIXEL_BUDGET=none``) the same image needs far more."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8).repeat(32, 0).repeat(32, 1)  # 8192², cheap PNG
    Image.fromarray(big).save(tmp_path / "big.png", compress_level=1)
    Image.fromarray(big[::4, ::4]).save(tmp_path / "b2048.png")
    peak_2048 = _detect_peak_kb(tmp_path / "b2048.png", tmp_path / "m1")
    peak_big = _detect_peak_kb(tmp_path / "big.png", tmp_path / "m2")
    peak_unbudgeted = _detect_peak_kb(tmp_path / "big.png", tmp_path / "m3", {ENV_VAR: "none"})
    assert peak_big < 1.25 * peak_2048, (peak_big, peak_2048)
    assert peak_unbudgeted > 1.5 * peak_big, (peak_unbudgeted, peak_big)
    assert np.load(tmp_path / "m2" / "big.npy").shape == (2304, 2304)


def test_the_feature_cache_counts_tiles_from_the_size_before_the_budget(tiny):
    """Stage 1's feature cache sizes its memmap from ``fit_caps``: a budgeted image must get the
    tile count the processor will produce for it, or the cache's rows and the tiles disagree."""
    from adkit.train.features import fit_caps

    proc = tiny.processor
    for i, (w, h) in enumerate(SIZES[:8]):
        small = load_image(_smooth(w, h, seed=i), pixel_budget=150 ** 2)
        assert small.size != (w, h)
        assert fit_caps(proc, small) == capped_size(h, w, proc.config.geometry), (w, h)
        tiles, _ = anyres_tiles(small, proc.config)
        assert proc.layout(*fit_caps(proc, small)).num_tiles == tiles.shape[0], (w, h)
