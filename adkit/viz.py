"""Pictures of the anatomy: crop grids, tiles, anomaly maps, token strips, budgets (matplotlib).

Every plotting function takes an optional ``ax`` (or ``axes``) and returns ``(fig, ax)``, so
it works inline in Jupyter and headless under the Agg backend; nothing happens at import.
Geometry comes from :mod:`adkit.anyres` (the same functions the processor and model use), so
what is drawn is what the model packs (paper §3, docs/architecture.md §2.3–2.4 and §3 "Into the LLM").
"""

from __future__ import annotations

from html import escape

import numpy as np
from PIL import Image

from .anyres import ImageLayout, capped_size, fit_size, image_layout, unpadded_shape
from .config import AnomalyOVConfig, get_preset
from .images import load_image

__all__ = ["SEGMENT_COLORS", "budget_markdown", "budget_table", "draw_crops", "label_mask_html", "overlay_map",
           "as_2d_map", "defect_panel", "plot_budget", "save_overlay", "show_level_maps", "show_tiles", "token_strip"]

#: One colour per part of an image block (names of :meth:`ImageLayout.segments`).
SEGMENT_COLORS = {
    "base_view": "#4C72B0", "crops": "#55A868", "hint": "#C44E52",
    "global_token": "#8172B2", "base_selected": "#CCB974", "crop_selected": "#64B5CD",
}
_BUDGET_PARTS = (("visual", "#4C72B0"), ("hint", "#C44E52"), ("expert", "#8172B2"))


def _axes(ax=None, figsize=(6, 4)):
    """(fig, ax): the given axes and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _numpy(x) -> np.ndarray:
    """A torch tensor or array-like as a float numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _config_and_layout(config_or_processor, height: int, width: int) -> tuple[AnomalyOVConfig, ImageLayout]:
    """Accept a preset name, an AnomalyOVConfig, a processor or a model; return its layout."""
    proc = getattr(config_or_processor, "processor", config_or_processor)  # AnomalyOV → processor
    if hasattr(proc, "layout") and hasattr(proc, "config"):
        return proc.config, proc.layout(height, width)
    config = get_preset(config_or_processor)
    try:  # the hint's length needs the preset's (offline) tokenizer
        from . import token_budget

        return config, token_budget(height, width, preset=config).layout
    except ValueError:  # no offline tokenizer for this config: hint length unknown → 0
        return config, image_layout(height, width, config.geometry)


# ----------------------------------------------------------------------------- anyres


def draw_crops(image, config_or_processor, ax=None):
    """Draw the anyres canvas of ``image``: the capped image resized-to-fit and centred on
    rows×cols S×S tiles, the black padding bands hatched, and (dashed) the token region kept
    by ``spatial_unpad`` (docs/architecture.md §2.3–2.4). Tiles are patches with ``gid="tile"``, padding
    bands ``gid="padding"``. ``config_or_processor``: preset name, config, processor or model.
    """
    img = load_image(image)
    config, lay = _config_and_layout(config_or_processor, img.height, img.width)
    geo = config.geometry
    s, (rows, cols) = geo.tile_size, lay.grid_shape
    if rows == 0:
        raise ValueError("draw_crops needs an anyres layout (single-view images have no crops)")
    h, w = capped_size(img.height, img.width, geo)  # step 1: long-side cap
    ch, cw = rows * s, cols * s  # canvas (H, W) in pixels
    nh, nw = fit_size(h, w, (ch, cw))  # image resized into the canvas, aspect kept
    top, left = (ch - nh) // 2, (cw - nw) // 2
    canvas = np.zeros((ch, cw, 3), dtype=np.uint8)  # [H, W, 3] black padding
    canvas[top : top + nh, left : left + nw] = np.asarray(img.resize((w, h), Image.BICUBIC).resize((nw, nh), Image.BICUBIC))
    fig, ax = _axes(ax, figsize=(1.8 * cols + 2, 1.8 * rows + 1))
    from matplotlib.patches import Rectangle

    ax.imshow(canvas, extent=(0, cw, ch, 0))
    bands = [(0, 0, cw, top), (0, top + nh, cw, ch - top - nh), (0, 0, left, ch), (left + nw, 0, cw - left - nw, ch)]
    for x, y, bw, bh in bands:
        if bw > 0 and bh > 0:
            ax.add_patch(Rectangle((x, y), bw, bh, facecolor="0.35", alpha=0.6, hatch="//", edgecolor="0.8",
                                   linewidth=0, gid="padding"))
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((c * s, r * s), s, s, fill=False, edgecolor="yellow", linewidth=2, gid="tile"))
            ax.text(c * s + 0.04 * s, r * s + 0.12 * s, f"crop {1 + r * cols + c}", color="yellow", fontsize=9,
                    bbox=dict(facecolor="black", alpha=0.5, pad=1, linewidth=0))
    uh, uw = unpadded_shape(h, w, rows, cols, geo.grid)  # token grid kept after unpadding
    ph = geo.patch_size
    ax.add_patch(Rectangle(((cw - uw * ph) / 2, (ch - uh * ph) / 2), uw * ph, uh * ph, fill=False,
                           edgecolor="cyan", linestyle="--", linewidth=1.5, gid="unpadded"))
    ax.set(xlim=(0, cw), ylim=(ch, 0), xlabel="canvas x (px)", ylabel="canvas y (px)")
    th, tw = lay.crop_token_shape
    extra = f" + hint {lay.hint_tokens} + expert {lay.expert_tokens} = {lay.total}" if lay.expert_tokens else ""
    ax.set_title(f"{img.height}×{img.width} → capped {h}×{w} → {rows}×{cols} crops of {s} px\n"
                 f"tokens: base {lay.base_tokens} + crops {th}×({tw}+1) = visual {lay.visual_tokens}{extra}",
                 fontsize=9)
    return fig, ax


def show_tiles(pixel_values, split, ax=None, mean=0.5, std=0.5):
    """Mosaic of one image's tiles: the base view (left) and its rows×cols crops (right).

    ``pixel_values`` [≥1+rows·cols, 3, S, S] normalised tiles, tile 0 the base view (as the
    processor makes them); ``split`` the crop grid (rows, cols) — e.g. ``layout.grid_shape``
    or an :class:`ImageLayout` itself. Tiles are denormalised with ``mean``/``std`` (paper 0.5).
    The mosaic array is kept as ``ax.images[0]`` ([max(S, rows·S), S + S/8 + cols·S, 3]).
    """
    rows, cols = split.grid_shape if isinstance(split, ImageLayout) else (int(split[0]), int(split[1]))
    px = _numpy(pixel_values)  # [N, 3, S, S]
    n = 1 + rows * cols
    if px.ndim != 4 or px.shape[0] < n:
        raise ValueError(f"need ≥ {n} tiles [N, 3, S, S] for a {rows}×{cols} grid, got {px.shape}")
    tiles = np.clip(px[:n].transpose(0, 2, 3, 1) * std + mean, 0, 1)  # [n, S, S, 3] in [0, 1]
    s, gap = tiles.shape[1], max(1, tiles.shape[1] // 8)
    mosaic = np.ones((max(s, rows * s), s + gap + cols * s, 3), dtype=np.float32)  # white background
    mosaic[:s, :s] = tiles[0]
    for k in range(rows * cols):  # crops row by row
        r, c = divmod(k, cols)
        mosaic[r * s : (r + 1) * s, s + gap + c * s : s + gap + (c + 1) * s] = tiles[1 + k]
    fig, ax = _axes(ax, figsize=(1.5 * (cols + 1) + 1, 1.5 * max(rows, 1) + 0.6))
    ax.imshow(mosaic)
    ax.text(s / 2, -s * 0.04, "base view", ha="center", va="bottom", fontsize=9)
    if rows:
        ax.text(s + gap + cols * s / 2, -s * 0.04, f"{rows}×{cols} crops", ha="center", va="bottom", fontsize=9)
        x0 = s + gap - 0.5  # thin white seams between crops
        ax.vlines([x0 + c * s for c in range(1, cols)], -0.5, rows * s - 0.5, color="white", linewidth=1)
        ax.hlines([r * s - 0.5 for r in range(1, rows)], x0, x0 + cols * s, color="white", linewidth=1)
    ax.set_axis_off()
    return fig, ax


# ----------------------------------------------------------------------------- anomaly maps


def overlay_map(image, anomaly_map, ax=None, alpha=0.5, cmap="jet", title=None):
    """An anomaly map (H'×W', any resolution) resized bilinearly onto ``image``, with a colour bar.

    The resized map is ``ax.images[1]``; values are shown on a fixed [0, 1] scale when they
    lie there (the expert's maps are softmax probabilities), else on their own range.
    """
    img = np.asarray(load_image(image))  # [H, W, 3]
    amap = as_2d_map(anomaly_map)
    h, w = img.shape[:2]
    if amap.shape != (h, w):
        amap = np.asarray(Image.fromarray(amap.astype(np.float32)).resize((w, h), Image.BILINEAR))  # [H, W]
    in_unit = amap.min() >= 0 and amap.max() <= 1
    fig, ax = _axes(ax, figsize=(5, 4))
    ax.imshow(img)
    im = ax.imshow(amap, cmap=cmap, alpha=alpha, vmin=0 if in_unit else None, vmax=1 if in_unit else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="anomaly").solids.set_alpha(1)
    ax.set_title(title or "")
    ax.set_axis_off()
    return fig, ax


def as_2d_map(anomaly_map) -> np.ndarray:
    """The map as H×W float32: leading size-1 axes dropped ([1, 1, H, W] → [H, W]), never a
    side of the map itself, so a 1-pixel-tall image's [1, W] map stays 2-D."""
    amap = _numpy(anomaly_map)
    while amap.ndim > 2 and amap.shape[0] == 1:
        amap = amap[0]
    if amap.ndim != 2 or 0 in amap.shape:
        raise ValueError(f"anomaly_map must be 2-D (H×W), got shape {amap.shape}")
    return amap


def _resized_map(amap, size):
    """An H'×W' map resized bilinearly to ``size`` = (W, H)."""
    amap = as_2d_map(amap)
    if amap.shape != (size[1], size[0]):
        amap = np.asarray(Image.fromarray(amap.astype(np.float32)).resize(size, Image.BILINEAR))
    return amap


def defect_panel(rows, threshold: float = 0.5, axes=None, cmap="jet"):
    """The standard localisation panel, one row per image: image | ground truth | map | map ≥ threshold.

    ``rows``: a list of ``(image, mask, anomaly_map, title)``; ``mask`` is an H×W bool array or
    None (a normal image: an empty truth), ``anomaly_map`` any resolution (resized bilinearly to
    the image). All map panels share one [0, 1] colour scale and one colour bar; the thresholded
    panel outlines the ground truth in white so hits and misses can be read off. Returns (fig, axes).
    """
    import matplotlib.pyplot as plt

    rows = list(rows)
    if axes is None:
        fig, axes = plt.subplots(len(rows), 4, figsize=(11, 2.7 * len(rows)), squeeze=False, layout="constrained")
    else:
        axes = np.asarray(axes).reshape(len(rows), 4)
        fig = axes[0, 0].figure
    im = None
    for r, (image, mask, amap, title) in enumerate(rows):
        img = np.asarray(load_image(image))  # [H, W, 3]
        h, w = img.shape[:2]
        truth = np.zeros((h, w), bool) if mask is None else np.asarray(mask, bool)
        m = _resized_map(amap, (w, h))  # [H, W]
        axes[r, 0].imshow(img)
        axes[r, 0].set_title(title, fontsize=9)
        axes[r, 1].imshow(truth, cmap="gray", vmin=0, vmax=1)
        axes[r, 1].set_title(f"ground truth ({truth.mean():.1%} of pixels)", fontsize=9)
        im = axes[r, 2].imshow(m, cmap=cmap, vmin=0, vmax=1)
        axes[r, 2].set_title(f"anomaly map (max {m.max():.2f})", fontsize=9)
        axes[r, 3].imshow(m >= threshold, cmap="gray", vmin=0, vmax=1)
        if truth.any():
            axes[r, 3].contour(truth, levels=[0.5], colors="w", linewidths=0.8)
            axes[r, 3].contour(truth, levels=[0.5], colors="r", linewidths=0.8, linestyles="dotted")
        axes[r, 3].set_title(f"map ≥ {threshold:g} (outline: truth)", fontsize=9)
        for ax in axes[r]:
            ax.set(xticks=[], yticks=[])
    fig.colorbar(im, ax=list(axes[:, 2]), fraction=0.05, pad=0.02, label="anomaly (shared 0–1 scale)")
    return fig, axes


def save_overlay(image, anomaly_map, path, title=None, max_side: int = 1024, min_side: int = 512, dpi: int = 100):
    """Write :func:`overlay_map` as a PNG whose picture is at most ``max_side`` pixels on its
    long side (at least ``min_side``, so small images stay legible), whatever the image's size
    or aspect; the PNG adds only a title and a colour bar around it. Checks the map before
    writing anything. Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = load_image(image)
    amap = as_2d_map(anomaly_map)
    long = max(img.size)
    shown = min(max_side, max(long, min_side))  # pixels of the picture's long side in the PNG
    width_in, height_in = shown * img.width / long / dpi, shown * img.height / long / dpi
    if long > shown:  # shrink first: drawing and encoding cost ∝ pixels
        size = (max(1, round(img.width * shown / long)), max(1, round(img.height * shown / long)))  # (W, H)
        img = img.resize(size, Image.BILINEAR)
        amap = np.asarray(Image.fromarray(amap).resize(size, Image.BILINEAR))  # [h, w]
    fig = Figure(figsize=(max(2.0, width_in + 1.4), max(2.0, height_in + 0.6)), dpi=dpi)  # + colour bar, title
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)
    ax = fig.add_subplot()
    overlay_map(img, amap, ax=ax, title=title)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def show_level_maps(level_maps, fused=None, axes=None, labels=None, cmap="jet"):
    """A row of per-level g×g maps ([L, g, g], e.g. ``out.level_maps[0]``) and the fused map.

    ``labels`` names the levels (default ``level 1..L``; pass e.g. ``[f"hs[{i}]" for i in
    config.feature_levels]``). All panels share one [0, 1] colour scale. Returns (fig, axes).
    """
    maps = _numpy(level_maps)
    if maps.ndim != 3:
        raise ValueError(f"level_maps must be [L, g, g], got shape {maps.shape}")
    panels = list(maps) + ([_numpy(fused).squeeze()] if fused is not None else [])
    names = list(labels) if labels is not None else [f"level {i + 1}" for i in range(len(maps))]
    names += ["fused (mean)"] if fused is not None else []
    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 0.8, 2.4), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes).ravel()
        if len(axes) < len(panels):
            raise ValueError(f"{len(panels)} panels but {len(axes)} axes")
    for ax, m, name in zip(axes, panels, names):
        im = ax.imshow(m, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(f"{name}\n{m.shape[0]}×{m.shape[1]}", fontsize=9)
        ax.set(xticks=[], yticks=[])
    axes[0].figure.colorbar(im, ax=list(axes[: len(panels)]), fraction=0.02, pad=0.02)
    return axes[0].figure, axes


# ----------------------------------------------------------------------------- tokens


def token_strip(layout: ImageLayout, ax=None, annotate: bool = True):
    """One image's LLM block as a horizontal strip: a bar per :meth:`ImageLayout.segments`
    entry, in sequence order, its width the segment's token count (docs/architecture.md §3 table).

    The bars are ``ax.patches`` in that order. Segments too thin to read (the hint and expert
    tokens are ~1 % of the block) are labelled in a zoomed inset of the block's tail.
    """
    segments = layout.segments()
    total = sum(n for _, n in segments)
    fig, ax = _axes(ax, figsize=(10, 2.2))
    starts = np.cumsum([0] + [n for _, n in segments])[:-1]
    for k, ((name, n), x) in enumerate(zip(segments, starts)):
        ax.barh(0, n, left=x, height=0.6, color=SEGMENT_COLORS.get(name, f"C{k}"), edgecolor="white",
                linewidth=0.5, label=f"{name} ({n})")
        if annotate and n >= 0.06 * total:
            ax.text(x + n / 2, 0, str(n), ha="center", va="center", color="white", fontsize=9, fontweight="bold")
    first = next((k for k, (_, n) in enumerate(segments) if n < 0.06 * total), None)  # first thin segment
    if annotate and first is not None and len(segments) > 1:  # zoom on the tail that holds the thin segments
        inset = ax.inset_axes([0.45, 1.25, 0.55, 0.8])
        for k in range(first, len(segments)):
            name, n = segments[k]
            inset.barh(0, n, left=starts[k], height=0.6, color=SEGMENT_COLORS.get(name, f"C{k}"),
                       edgecolor="white", linewidth=0.5)
            inset.text(starts[k] + n / 2, 0.4 if (k - first) % 2 == 0 else -0.4, str(n), ha="center",
                       va="bottom" if (k - first) % 2 == 0 else "top", fontsize=7)
        inset.set(xlim=(max(0, starts[first] - 0.15 * (total - starts[first])), total), ylim=(-0.9, 0.9), yticks=[])
        inset.tick_params(labelsize=6)
        inset.set_title("zoom: block tail", fontsize=7)
        ind = ax.indicate_inset_zoom(inset, edgecolor="0.4")  # frame only: the connectors cross the strip
        for line in (ind[1] if isinstance(ind, tuple) else ind.connectors) or []:
            line.set_visible(False)
    ax.set(xlim=(0, total), ylim=(-0.9, 0.9), yticks=[], xlabel="token position in the image block")
    h, w = layout.image_size
    ax.set_title(f"{h}×{w} image → {total} tokens", fontsize=10, loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=min(3, len(segments)), fontsize=8, frameon=False)
    return fig, ax


def label_mask_html(tokens: list[str], labels: list[int], ignore_index: int = -100) -> str:
    """An HTML table of tokens coloured by their label: grey = −100 (ignored), green = learned.

    ``tokens`` are display strings (e.g. ``tokenizer.convert_ids_to_tokens(ids)``); show the
    result with ``IPython.display.HTML``.
    """
    if len(tokens) != len(labels):
        raise ValueError(f"{len(tokens)} tokens but {len(labels)} labels")
    cells = []
    for tok, lab in zip(tokens, labels):
        shown = escape(tok.replace("Ċ", "\\n").replace("Ġ", "␣"))
        colour = "#dddddd" if lab == ignore_index else "#9be29b"
        cells.append(f'<span style="background:{colour};padding:1px 3px;margin:1px;display:inline-block;'
                     f'font-family:monospace;font-size:11px;border-radius:3px" title="label {lab}">{shown}</span>')
    legend = ('<div style="font-size:11px;margin-bottom:4px"><span style="background:#9be29b;padding:1px 4px">'
              'learned (label = token id)</span> <span style="background:#dddddd;padding:1px 4px">'
              f'ignored (label {ignore_index})</span></div>')
    return legend + '<div style="line-height:1.9">' + "".join(cells) + "</div>"


# ----------------------------------------------------------------------------- budgets


def budget_table(sizes, preset: str = "paper-0.5b") -> list[dict]:
    """Rows ``{size, grid, visual, hint, expert, total}`` from :func:`adkit.token_budget`
    for each (height, width) in ``sizes`` (``size`` is the input size, before the cap).
    """
    from . import token_budget

    budgets = [((int(h), int(w)), token_budget(int(h), int(w), preset=preset)) for h, w in sizes]
    return [dict(size=size, grid=b.layout.grid_shape, visual=b.visual, hint=b.hint, expert=b.expert, total=b.total)
            for size, b in budgets]


def budget_markdown(rows: list[dict]) -> str:
    """A Markdown table of :func:`budget_table` rows (display with ``IPython.display.Markdown``)."""
    lines = ["| image (h×w) | crop grid | visual | hint | expert | total |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size'][0]}×{r['size'][1]} | {r['grid'][0]}×{r['grid'][1]} | {r['visual']} | "
                     f"{r['hint']} | {r['expert']} | {r['total']} |")
    return "\n".join(lines)


def plot_budget(rows: list[dict], ax=None):
    """Stacked bars per image size: visual, hint and expert tokens, the total written on top.

    The bars are ``ax.containers`` in the order visual, hint, expert.
    """
    fig, ax = _axes(ax, figsize=(1.2 * len(rows) + 2.5, 3.5))
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for part, colour in _BUDGET_PARTS:
        vals = np.array([r[part] for r in rows], dtype=float)
        ax.bar(x, vals, bottom=bottom, color=colour, label=part, width=0.6)
        bottom += vals
    for xi, r in zip(x, rows):
        ax.text(xi, r["total"], f"{r['total']}\n(+{r['hint'] + r['expert']} hint/expert)", ha="center",
                va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{r['size'][0]}×{r['size'][1]}\n({r['grid'][0]}×{r['grid'][1]})" for r in rows], fontsize=8)
    ax.set(ylabel="LLM tokens per image", ylim=(0, bottom.max() * 1.18 if len(rows) else 1))
    ax.legend(fontsize=8)
    ax.set_title("token budget per image (h×w, crop grid)", fontsize=10)
    return fig, ax
