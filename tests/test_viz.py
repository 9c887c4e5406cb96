"""adkit.viz draws what the geometry says (tiny preset, Agg backend, no network)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import adkit  # noqa: E402
from adkit import viz  # noqa: E402
from adkit.anyres import image_layout  # noqa: E402
from adkit.processor import anyres_tiles  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny():
    return adkit.get_preset("tiny")


@pytest.fixture(scope="module")
def model():
    return adkit.AnomalyOV.from_preset("tiny")


def _photo(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _gid(ax, gid):
    return [p for p in ax.patches if p.get_gid() == gid]


@pytest.mark.parametrize("h, w", [(100, 60), (56, 56), (130, 150), (40, 149)])
def test_draw_crops_one_rectangle_per_tile(tiny, h, w):
    lay = image_layout(h, w, tiny.geometry)
    rows, cols = lay.grid_shape
    fig, ax = viz.draw_crops(_photo(h, w), tiny)
    tiles = _gid(ax, "tile")
    assert len(tiles) == rows * cols
    s = tiny.geometry.tile_size
    assert {(t.get_x(), t.get_y(), t.get_width()) for t in tiles} == {
        (c * s, r * s, s) for r in range(rows) for c in range(cols)}
    assert ax.get_xlim() == (0, cols * s) and ax.get_ylim() == (rows * s, 0)
    assert f"visual {lay.visual_tokens}" in ax.get_title()
    # image + padding bands cover the canvas exactly
    canvas = ax.images[0].get_array()
    assert canvas.shape[:2] == (rows * s, cols * s)
    pad = sum(p.get_width() * p.get_height() for p in _gid(ax, "padding"))
    black = int((canvas.reshape(-1, 3).sum(1) == 0).sum())
    assert pad >= black * 0.9 or pad == 0  # random pixels are almost never exactly black


def test_draw_crops_with_model_processor_reports_total(model):
    lay = model.processor.layout(100, 60)
    _, ax = viz.draw_crops(_photo(100, 60), model)
    assert f"= {lay.total}" in ax.get_title()
    _, ax2 = viz.draw_crops(_photo(100, 60), model.processor, ax=plt.figure().add_subplot())
    assert ax2.get_title() == ax.get_title()


def test_show_tiles_mosaic_places_denormalised_tiles(tiny):
    img = _photo(100, 60)
    tiles, _ = anyres_tiles(img, tiny)
    lay = image_layout(100, 60, tiny.geometry)
    rows, cols = lay.grid_shape
    _, ax = viz.show_tiles(tiles, lay)
    s = tiny.geometry.tile_size
    mosaic = ax.images[0].get_array()
    gap = s // 8
    assert mosaic.shape == (max(s, rows * s), s + gap + cols * s, 3)
    np.testing.assert_allclose(mosaic[:s, :s], (tiles[0].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy(), atol=1e-6)
    last = tiles[rows * cols].permute(1, 2, 0).numpy() * 0.5 + 0.5
    np.testing.assert_allclose(mosaic[(rows - 1) * s : rows * s, -s:], np.clip(last, 0, 1), atol=1e-6)
    with pytest.raises(ValueError):
        viz.show_tiles(tiles[:2], (rows, cols + 5))


def test_overlay_map_resizes_to_image():
    amap = torch.rand(7, 7)
    _, ax = viz.overlay_map(_photo(90, 120), amap, title="t")
    over = ax.images[1].get_array()
    assert over.shape == (90, 120)
    assert over.min() >= amap.min().item() - 1e-5 and over.max() <= amap.max().item() + 1e-5
    assert ax.images[1].get_clim() == (0, 1)
    assert len(ax.figure.axes) == 2  # image + colour bar
    assert ax.get_title() == "t"
    with pytest.raises(ValueError):
        viz.overlay_map(_photo(10, 10), np.zeros((2, 3, 4)))


def test_show_level_maps_one_panel_per_level_plus_fused(model):
    batch = model.processor.images([_photo(100, 60)])
    feats = model.features(batch.pixel_values)
    with torch.no_grad():
        out = model.expert(feats.final, feats.levels, batch.split_sizes)
    fig, axes = viz.show_level_maps(out.level_maps[0], out.anomaly_maps[0])
    g = model.config.geometry.grid
    assert len(axes) == model.config.expert_config().num_levels + 1
    for ax, m in zip(axes, list(out.level_maps[0]) + [out.anomaly_maps[0]]):
        np.testing.assert_allclose(ax.images[0].get_array(), m.numpy())
        assert ax.images[0].get_array().shape == (g, g)
    assert axes[-1].get_title().startswith("fused")
    _, axes2 = viz.show_level_maps(out.level_maps[0], labels=[f"hs[{i}]" for i in model.config.feature_levels])
    assert len(axes2) == 4 and axes2[0].get_title().startswith("hs[1]")


@pytest.mark.parametrize("single_view", [False, True])
def test_token_strip_widths_are_segment_lengths(tiny, single_view):
    lay = image_layout(100, 60, tiny.geometry, single_view=single_view, hint_tokens=6)
    _, ax = viz.token_strip(lay)
    bars = ax.patches
    segs = lay.segments()
    assert [b.get_width() for b in bars] == [n for _, n in segs]
    lefts = [b.get_x() for b in bars]
    assert lefts == list(np.cumsum([0] + [n for _, n in segs])[:-1])
    assert ax.get_xlim() == (0, lay.total)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"{k} ({n})" for k, n in segs]


def test_budget_table_matches_token_budget_and_plot():
    sizes = [(384, 384), (768, 1024), (1000, 1000)]
    rows = viz.budget_table(sizes, "paper-0.5b")
    for r, (h, w) in zip(rows, sizes):
        b = adkit.token_budget(h, w, preset="paper-0.5b")
        assert r == dict(size=(h, w), grid=b.layout.grid_shape, visual=b.visual, hint=b.hint,
                         expert=b.expert, total=b.total)
    assert [r["visual"] for r in rows] == [1485, 4725, 7371]  # docs/architecture.md §2.4 worked counts
    _, ax = viz.plot_budget(rows)
    visual, hint, expert = ax.containers
    assert [p.get_height() for p in visual] == [r["visual"] for r in rows]
    assert [p.get_y() + p.get_height() for p in expert] == [r["total"] for r in rows]
    md = viz.budget_markdown(rows)
    assert md.count("\n") == len(rows) + 1 and "| 768×1024 | 2×3 | 4725 |" in md


def test_label_mask_html_colours_each_token():
    html = viz.label_mask_html(["<|im_start|>", "Ċ", "a<b"], [-100, 198, 5])
    assert html.count("#dddddd") == 1 + 1 and html.count("#9be29b") == 1 + 2  # legend + cells
    assert "a&lt;b" in html and "\\n" in html
    with pytest.raises(ValueError):
        viz.label_mask_html(["a"], [])


# ----------------------------------------------------------------------------- map files


@pytest.mark.parametrize("w,h", [(10000, 50), (50, 10000), (300, 1), (1, 300), (1, 1), (2304, 2304), (40, 30)])
def test_save_overlay_png_is_bounded_whatever_the_shape(tmp_path, w, h):
    from PIL import Image

    img = Image.fromarray(np.full((h, w, 3), 90, np.uint8))
    path = viz.save_overlay(img, np.random.default_rng(0).random((h, w), dtype=np.float32), tmp_path / "o.png",
                            title=f"{w}x{h}: score 0.500")
    with Image.open(path) as png:  # opens without PIL's bomb warning: a bounded picture
        pw, ph = png.size
    assert 150 <= max(pw, ph) <= 1024 + 200 and min(pw, ph) >= 150  # picture ≤ 1024 px + title and colour bar


def test_one_pixel_sides_keep_their_2d_map():
    assert viz.as_2d_map(np.zeros((1, 300))).shape == (1, 300)
    assert viz.as_2d_map(torch.zeros(1, 1, 7, 1)).shape == (7, 1)
    assert viz.as_2d_map(np.zeros((1, 1))).shape == (1, 1)
    _, ax = viz.overlay_map(_photo(1, 300), np.zeros((1, 300)))
    assert ax.images[1].get_array().shape == (1, 300)
    for bad in (np.float32(0.5), np.zeros(300), np.zeros((2, 3, 4)), np.zeros((0, 4))):
        with pytest.raises(ValueError, match="2-D"):
            viz.as_2d_map(bad)


def test_detect_maps_for_thin_and_wide_images(tmp_path):
    """``adkit detect --maps`` (tiny): a 10000×50 strip, 1-pixel sides and a 1×1 image all get a
    map at the loaded image's size and an overlay PNG of bounded size."""
    from PIL import Image

    from adkit.cli import main

    sizes = {"wide": (10000, 50), "row": (300, 1), "col": (1, 300), "dot": (1, 1)}
    paths = []
    for name, (w, h) in sizes.items():
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    out = tmp_path / "maps"
    assert main(["detect", *paths, "--preset", "tiny", "--maps", str(out), "--json", str(tmp_path / "r.json")]) == 0
    for name, (w, h) in sizes.items():
        assert np.load(out / f"{name}.npy").shape == (h, w)
        with Image.open(out / f"{name}.png") as png:
            assert max(png.size) <= 1024 + 200


def test_defect_panel_rows_shared_scale_and_thresholded_mask():
    """image | ground truth | map | map >= threshold, one row per image, one shared [0, 1] scale."""
    from PIL import Image

    img = Image.fromarray(np.full((40, 60, 3), 128, np.uint8))
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:45] = True
    amap = np.zeros((4, 6), np.float32)
    amap[1, 3:5] = 0.9  # coarse map: resized bilinearly to 40×60
    fig, axes = viz.defect_panel([(img, mask, amap, "defect"), (img, None, np.zeros((4, 6)), "clean")], threshold=0.5)
    assert axes.shape == (2, 4)
    shown = axes[0, 3].images[0].get_array()
    assert shown.shape == (40, 60) and shown[15, 37] and not shown[35, 5]  # the hot cells pass the threshold
    assert not np.asarray(axes[1, 1].images[0].get_array()).any()  # a normal image: an empty truth
    assert {ax.images[0].get_clim() for ax in axes[:, 2]} == {(0.0, 1.0)}
    assert "6.2% of pixels" in axes[0, 1].get_title() and len(axes[0, 3].collections) >= 1
    plt.close(fig)
