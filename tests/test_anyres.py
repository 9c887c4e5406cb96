"""Anyres geometry: the one layout function against transformers and against the packing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.image_processing_utils import select_best_resolution as hf_select_best_resolution
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches, unpad_image

from adkit import get_preset, image_layout, token_budget
from adkit.anyres import capped_size, crop_grid, select_best_resolution, unpadded_shape
from adkit.assembly import assemble_block
from adkit.processor import anyres_tiles

PAPER = get_preset("paper-0.5b").geometry
TINY = get_preset("tiny").geometry
sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000))


@pytest.mark.parametrize("hw, visual", [((384, 384), 1485), ((768, 1024), 4725), ((1000, 1000), 7371)])
def test_design_worked_counts(hw, visual):
    assert image_layout(*hw, PAPER, expert=False).total == visual
    budget = token_budget(*hw, preset="paper-0.5b")
    assert budget.visual == visual and budget.hint == 6
    rows, cols = budget.layout.grid_shape
    assert budget.expert == 1 + 4 + 2 * rows * (2 * cols + 1)
    assert budget.total == visual + 6 + budget.expert


def test_single_view_counts():
    lay = image_layout(500, 300, PAPER, single_view=True, hint_tokens=6)
    assert (lay.visual_tokens, lay.hint_tokens, lay.expert_tokens, lay.num_tiles) == (730, 6, 6, 1)


@settings(max_examples=300, deadline=None)
@given(sizes)
def test_best_resolution_matches_transformers(hw):
    assert select_best_resolution(hw, PAPER.pinpoints) == tuple(hf_select_best_resolution(hw, PAPER.pinpoints))


@settings(max_examples=200, deadline=None)
@given(sizes)
def test_cap_keeps_grid_within_3x3_and_tiles_match_transformers(hw):
    h, w = capped_size(*hw, PAPER)
    assert max(h, w) <= 1024 and (max(hw) <= 1024) == ((h, w) == hw)
    rows, cols = crop_grid(h, w, PAPER)
    assert rows <= 3 and cols <= 3
    n = image_size_to_num_patches((h, w), [list(p) for p in PAPER.pinpoints], PAPER.tile_size)
    assert image_layout(*hw, PAPER).num_tiles == n


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.integers(1, 1024), st.integers(1, 1024)))
def test_unpad_matches_transformers(hw):
    rows, cols = crop_grid(*hw, PAPER)
    g = PAPER.grid
    grid = torch.zeros(1, rows * g, cols * g)
    assert unpadded_shape(*hw, rows, cols, g) == tuple(unpad_image(grid, list(hw)).shape[1:])


@settings(max_examples=150, deadline=None)
@given(sizes, st.booleans(), st.booleans())
def test_processor_count_equals_packed_length(hw, expert, single):
    """What the processor writes as placeholders is exactly what the model packs."""
    geo = TINY
    lay = image_layout(*hw, geo, single_view=single, expert=expert, hint_tokens=5 if expert else 0)
    h = 3
    visual = torch.randn(lay.num_tiles, geo.num_patches, h)
    kw = {}
    if expert:
        kw = dict(hint=torch.randn(5, h), global_token=torch.randn(h),
                  selected=torch.randn(lay.num_tiles, geo.pool_size ** 2, h))
    block = assemble_block(lay, visual, torch.randn(h), **kw)
    assert block.shape == (lay.total, h)


def test_block_order_follows_design():
    """Segments appear in docs/architecture.md §3's order, each holding what it should."""
    geo = TINY
    lay = image_layout(100, 140, geo, hint_tokens=4)
    rows, cols = lay.grid_shape
    assert (rows, cols) == (2, 3)
    hdim = 2
    visual = torch.randn(lay.num_tiles, geo.num_patches, hdim)
    hint, glob = torch.randn(4, hdim), torch.randn(hdim)
    selected = torch.randn(lay.num_tiles, 4, hdim)
    newline = torch.tensor([7.0, 7.0])
    block = assemble_block(lay, visual, newline, hint, glob, selected)
    spans, start = {}, 0
    for name, n in lay.segments():
        spans[name] = block[start:start + n]
        start += n
    assert torch.equal(spans["base_view"], visual[0])
    assert torch.equal(spans["hint"], hint) and torch.equal(spans["global_token"][0], glob)
    assert torch.equal(spans["base_selected"], selected[0])
    crop_sel = spans["crop_selected"].view(2 * rows, 2 * cols + 1, hdim)
    assert torch.equal(crop_sel[:, -1], newline.expand(2 * rows, hdim))  # newline at every row end
    # crop (r, c), cell (a, b) → row 2r + a, column 2c + b
    for r in range(rows):
        for c in range(cols):
            for a in range(2):
                for b in range(2):
                    assert torch.equal(crop_sel[2 * r + a, 2 * c + b], selected[1 + r * cols + c, 2 * a + b])
    th, tw = lay.crop_token_shape
    crops = spans["crops"].view(th, tw + 1, hdim)
    assert torch.equal(crops[:, -1], newline.expand(th, hdim))


@pytest.mark.parametrize("hw", [(384, 384), (768, 1024), (500, 300), (1000, 1000), (200, 900), (37, 1024)])
def test_tiles_equal_transformers_image_processor(hw):
    """Our PIL anyres tiling is pixel-identical to transformers' LLaVA-OneVision processor."""
    import numpy as np
    from PIL import Image

    cfg = get_preset("paper-0.5b")
    proc = LlavaOnevisionImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                           size={"height": 384, "width": 384},
                                           image_grid_pinpoints=[list(p) for p in PAPER.pinpoints], do_pad=False)
    img = Image.fromarray((np.random.default_rng(0).random((*hw, 3)) * 255).astype("uint8"))
    ref = proc(img, return_tensors="pt")
    ours, size = anyres_tiles(img, cfg)
    assert size == hw and ref["image_sizes"][0].tolist() == list(hw)
    assert torch.equal(ref["pixel_values"][0], ours)


def test_long_side_cap_resizes_before_tiling():
    from PIL import Image

    cfg = get_preset("paper-0.5b")
    tiles, size = anyres_tiles(Image.new("RGB", (3000, 1500), (200, 10, 10)), cfg)
    assert size == (512, 1024)
    assert tiles.shape[0] == image_layout(1500, 3000, PAPER).num_tiles


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="positive"):
        image_layout(0, 10, PAPER)


def _official_cap(h, w):
    """The official cap, as written in Anomaly-OneVision's scripts/eval/test_detection.py,
    test_reasoning.py and llava/train/train.py (PIL sizes are (width, height))."""
    if max(w, h) > 1024:
        if w > h:
            return int(1024 * h / w), 1024
        return 1024, int(1024 * w / h)
    return h, w


def _rounded_cap(h, w):
    """The kit's default: scale the long side to 1024, round the short side to the nearest integer."""
    if max(h, w) <= 1024:
        return h, w
    scale = 1024 / max(h, w)
    return round(h * scale), round(w * scale)


# every (h, w) on a grid whose long side is above the cap, both orientations and squares
CAP_GRID = [(h, w) for h in range(1025, 3100, 9) for w in range(300, 3100, 11)]
CAP_GRID += [(w, h) for h, w in CAP_GRID] + [(s, s) for s in range(1000, 1100)]


def test_cap_rounding_floor_is_the_official_formula_and_round_the_kit_default():
    assert len(CAP_GRID) > 100_000
    floor = [capped_size(h, w, PAPER, "floor") for h, w in CAP_GRID]
    assert floor == [_official_cap(h, w) for h, w in CAP_GRID]
    assert [capped_size(h, w, PAPER) for h, w in CAP_GRID] == [_rounded_cap(h, w) for h, w in CAP_GRID]
    assert [capped_size(h, w, PAPER, "round") for h, w in CAP_GRID] == [_rounded_cap(h, w) for h, w in CAP_GRID]
    differ = [hw for hw, f in zip(CAP_GRID, floor) if f != _rounded_cap(*hw)]
    assert 0 < len(differ) < len(CAP_GRID)  # the two rules really differ, on some sizes only
    assert all(abs(a - b) <= 1 for hw in differ for a, b in zip(_official_cap(*hw), _rounded_cap(*hw)))


def test_cap_rounding_changes_token_counts_for_some_sizes():
    """image_layout(cap_rounding=...) = the layout of the capped image: the official protocol's
    token counts are those of its int()-capped image, and some differ from the kit default's."""
    sample = CAP_GRID[::37]
    changed = 0
    for h, w in sample:
        official = image_layout(h, w, PAPER, cap_rounding="floor")
        assert official == image_layout(*_official_cap(h, w), PAPER)  # cap of a capped image: unchanged
        assert official.image_size == _official_cap(h, w)
        changed += official.total != image_layout(h, w, PAPER).total
    assert changed > 0
    with pytest.raises(ValueError, match="unknown cap rounding 'ceil'"):
        capped_size(2000, 1000, PAPER, "ceil")
