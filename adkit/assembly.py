"""Sequence assembly: one image's block of LLM embeddings, in docs/architecture.md §3's order (paper §3.2, §3.4).

    base view (g²) │ crops, unpadded, newline per row │ hint phrase │ global token │
    base-view selected tokens (k²) │ crop selected tokens on a (k·rows)×(k·cols) grid + newlines

Lengths come from :func:`adkit.anyres.image_layout`, the same function the processor uses to
count placeholders; :func:`assemble_block` checks the result against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .anyres import ImageLayout, unpadded_shape


def with_newlines(grid: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """[H, h, w] → [h·(w+1), H]: append ``newline`` after every row, flatten row-major."""
    col = newline.to(grid)[:, None, None].expand(-1, grid.shape[1], 1)  # [H, h, 1]
    return torch.cat([grid, col], dim=2).flatten(1).T  # [H, h, w+1] → [h·(w+1), H]


def crop_visual_tokens(tiles: torch.Tensor, layout: ImageLayout, newline: torch.Tensor) -> torch.Tensor:
    """Projected crop tokens [rows·cols, g², H] → [h·(w+1), H] (spatial_unpad, docs/architecture.md §2.4)."""
    rows, cols = layout.grid_shape
    n, p, hdim = tiles.shape
    g = int(round(p ** 0.5))
    grid = tiles.view(rows, cols, g, g, hdim).permute(4, 0, 2, 1, 3)  # [H, rows, g, cols, g]
    grid = grid.reshape(hdim, rows * g, cols * g)  # [H, rows·g, cols·g]
    uh, uw = unpadded_shape(*layout.image_size, rows, cols, g)
    top, left = (rows * g - uh) // 2, (cols * g - uw) // 2
    grid = grid[:, top : top + uh, left : left + uw]  # strip the black padding bands
    if (uh, uw) != layout.crop_token_shape:  # anyres_max_N downscale
        grid = F.interpolate(grid[None], list(layout.crop_token_shape), mode="bilinear")[0]
    return with_newlines(grid, newline)


def crop_selected_tokens(selected: torch.Tensor, layout: ImageLayout, newline: torch.Tensor) -> torch.Tensor:
    """Projected selected tokens of the crops [rows·cols, k², H] → [k·rows·(k·cols+1), H].

    Crop (r, c), cell (a, b) lands at row k·r + a, column k·c + b; not unpadded.
    """
    rows, cols = layout.grid_shape
    _, kk, hdim = selected.shape
    k = int(round(kk ** 0.5))
    grid = selected.view(rows, cols, k, k, hdim).permute(4, 0, 2, 1, 3)  # [H, rows, k, cols, k]
    return with_newlines(grid.reshape(hdim, rows * k, cols * k), newline)  # [H, k·rows, k·cols]


def assemble_block(
    layout: ImageLayout,
    visual: torch.Tensor,
    newline: torch.Tensor,
    hint: torch.Tensor | None = None,
    global_token: torch.Tensor | None = None,
    selected: torch.Tensor | None = None,
) -> torch.Tensor:
    """The [layout.total, H] embeddings of one image.

    visual [tiles, g², H] projected features (tile 0 = base view); hint [T_h, H] embedded hint
    phrase; global_token [H] and selected [tiles, k², H] projected expert tokens (all ``None``
    without the expert).
    """
    nl = newline.to(visual)[None]  # [1, H]
    parts = [visual[0]]  # base view, no newline
    parts.append(nl if layout.grid_shape == (0, 0) else crop_visual_tokens(visual[1:], layout, newline))
    if layout.expert_tokens:
        parts += [hint.to(visual), global_token.to(visual)[None], selected[0].to(visual)]
        parts.append(nl if layout.grid_shape == (0, 0) else crop_selected_tokens(selected[1:].to(visual), layout, newline))
    block = torch.cat(parts)
    if block.shape[0] != layout.total:
        raise RuntimeError(f"assembled {block.shape[0]} tokens for an image whose layout says {layout.total}")
    return block
