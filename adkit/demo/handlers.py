"""The demo's logic as plain functions: no Gradio here, so tests and notebooks call them directly.

What the presenter's app (:mod:`adkit.demo.app`) shows, and where it comes from:

* **score / verdict** — the anomaly score of the chosen method (:data:`adkit.zeroshot.METHODS`:
  the expert, paper §3.3–3.5, or a training-free scorer; ``mutual`` scores the upload against the
  reference images, by default the example gallery) and ``"anomalous"`` when
  ``score >= threshold`` (the CLI's rule; the slider starts at the method's calibrated threshold);
* **overlay** — the fused anomaly map (mean of the base-view map and the stitched crop maps,
  :meth:`AnomalyOV.detect`) blended over the photo with the ``jet`` colour map;
* **crops / selected tokens** — the anyres canvas (:func:`adkit.viz.draw_crops`, docs/architecture.md
  §2.3–2.4) and, per tile, where each of the pool² selector queries looks (paper §3.4 step 8);
* **chat** — :meth:`AnomalyOV.chat` streamed token by token (transformers'
  ``TextIteratorStreamer``), the paper's VisA-D&R prompts as suggestions (docs/architecture.md §5).

Every bad upload ends in a :class:`DemoInputError` whose message a person can act on.
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..images import MAX_PIXELS, ImageLoadError, load_image

#: The paper's prompts (VisA-D&R: detection, then low-level and complex reasoning; docs/architecture.md §5).
PAPER_PROMPTS = (
    "Are there any defects for the object in the image? Please reply with 'Yes' or 'No'.",
    "Describe the anomaly in detail.",
    "What could have caused it?",
    "How can it be prevented?",
)
#: Largest image the demo decodes: the CLI's limit, 8192² (load_image checks the header first; the
#: pixel budget then downscales it on load, so a phone photo costs what a 2304² image does).
DEMO_MAX_PIXELS = MAX_PIXELS
PAPER_PRESETS = {"paper-0.5b": 896, "paper-7b": 3584}  # preset → the LLM width of its llava-hf folder


class DemoInputError(ValueError):
    """An upload the demo cannot use; the message says why, in words for a person."""


# ----------------------------------------------------------------------------- the pipeline


class DemoPipeline:
    """One or more loaded models (one per preset, loaded on first use) and the lock that
    serialises their use across the app's sessions.

    ``loader(preset) -> AnomalyOV`` builds a model for a preset name (default
    ``AnomalyOV.from_preset``); ``gen_kwargs`` go to every ``generate`` call.
    """

    def __init__(self, model, preset: str | None = None, threshold: float | None = None, max_new_tokens: int = 128,
                 gen_kwargs: dict | None = None, presets=None, loader: Callable | None = None,
                 max_pixels: int = DEMO_MAX_PIXELS, reference=()):
        self.preset = preset or model.config.name
        self.models = {self.preset: model}
        self.threshold = None if threshold is None else float(threshold)  # None: each method's calibrated one
        self.reference = list(reference)  # unlabeled images method "mutual" scores an upload against
        self.max_new_tokens = int(max_new_tokens)
        self.gen_kwargs = dict(gen_kwargs or {})
        self.presets = list(presets) if presets is not None else available_presets(self.preset)
        self.loader = loader
        self.max_pixels = int(max_pixels)
        self.lock = threading.Lock()  # one model call at a time (2-core CPUs, shared weights)
        self._load_lock = threading.Lock()

    @property
    def model(self):
        return self.models[self.preset]

    def threshold_for(self, method: str = "expert", preset: str | None = None) -> float:
        """The slider's starting value: the fixed ``threshold`` if one was given, else the
        model's calibrated threshold for ``method``."""
        if self.threshold is not None:
            return self.threshold
        return float(self.model_for(preset).calibration.threshold(method))

    def model_for(self, preset: str | None = None):
        """The model of ``preset`` (default: the one the app was started with), loaded once."""
        preset = preset or self.preset
        if preset not in self.presets and preset not in self.models:
            raise DemoInputError(f"preset {preset!r} is not available here; choose one of {self.presets}")
        with self._load_lock:
            if preset not in self.models:
                if self.loader is None:
                    from ..model import AnomalyOV

                    self.models[preset] = AnomalyOV.from_preset(preset)
                else:
                    self.models[preset] = self.loader(preset)
            return self.models[preset]


def available_presets(current: str = "small", env=None) -> list[str]:
    """``small`` and ``tiny``, plus the paper presets whose weights are on disk
    (``$ADKIT_LLAVA_PATH`` folder and ``$ADKIT_EXPERT_PATH`` file; the folder's LLM width says
    which of the two it is). ``current`` is always listed first."""
    env = os.environ if env is None else env
    names = ["small", "tiny"]
    llava, expert = env.get("ADKIT_LLAVA_PATH"), env.get("ADKIT_EXPERT_PATH")
    if llava and expert and Path(llava).is_dir() and Path(expert).is_file():
        try:
            width = json.loads((Path(llava) / "config.json").read_text())["text_config"]["hidden_size"]
            names += [p for p, w in PAPER_PRESETS.items() if w == width]
        except (OSError, ValueError, KeyError, TypeError):
            names += list(PAPER_PRESETS)
    return [current] + [n for n in names if n != current]


def untrained_note(model) -> str:
    """A visible warning when parts of ``model`` are still random (empty string otherwise)."""
    parts = tuple(getattr(model, "untrained", ()) or ())
    if not parts:
        return ""
    return (f"**Note — preset `{model.config.name}`: untrained {', '.join(parts)}.** Scores, maps and "
            "answers are placeholders until trained weights are loaded; the app shows how the pieces fit.")


# ----------------------------------------------------------------------------- images


def upload_path(value):
    """What Gradio hands over (a file payload dict, a path) → something :func:`load_image` reads."""
    if isinstance(value, dict):  # {"path": ..., "url": ..., "orig_name": ...} (events with preprocess=False)
        if value.get("path"):
            return value["path"]
        url = value.get("url") or ""
        if url.startswith("data:"):  # webcam / clipboard snapshots may arrive inline
            import base64

            return base64.b64decode(url.split(",", 1)[1])
        raise DemoInputError("the upload arrived without a file; please upload it again")
    return value


def load_demo_image(value, max_pixels: int = DEMO_MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """(RGB image, notes) from an upload; notes say what was converted (16-bit, transparency).

    Raises :class:`DemoInputError` with a friendly message for anything unusable.
    """
    if value is None:
        raise DemoInputError("no image yet: upload one, take a webcam snapshot or pick an example")
    source = upload_path(value)
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the upload"
    notes = []
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as probe:
            mode = probe.mode  # header only: PIL opens lazily
        if mode.startswith("I;16") or mode in ("I", "F"):
            notes.append(f"{mode} high-bit-depth image scaled to 8 bits")
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in probe.info):
            notes.append("transparent pixels composited over black (the anyres padding colour)")
    except Exception:  # noqa: BLE001 — load_image below gives the precise reason
        pass
    try:
        return load_image(source, max_pixels=max_pixels), notes
    except ImageLoadError as exc:
        reason = str(exc).split(": ", 1)[-1]
        if "too large" in reason or "over the limit" in reason:  # a decompression bomb or just huge
            reason = (f"the image is too large (the demo decodes at most {max_pixels / 1e6:.1f} megapixels); "
                      "downscale it and try again")
        raise DemoInputError(f"{name} cannot be used: {reason}") from None


def overlay(image, anomaly_map, alpha: float = 0.5, max_side: int | None = 768) -> np.ndarray:
    """The anomaly map blended over ``image``: (1 − α)·photo + α·jet(map), uint8 [H, W, 3].

    The map is shown on the fixed [0, 1] scale when it lies there (the expert's maps are
    probabilities), else min–max scaled; photo and map are first downsized (bilinear) so the
    long side is at most ``max_side`` pixels.
    """
    import matplotlib

    picture = load_image(image)
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape != (picture.height, picture.width):
        raise ValueError(f"anomaly_map {amap.shape} does not match the image {(picture.height, picture.width)}")
    if max_side and max(amap.shape) > max_side:  # shrink first: colouring and encoding cost ∝ pixels
        scale = max_side / max(amap.shape)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))  # (W, H)
        picture = picture.resize(size, Image.BILINEAR)
        amap = np.asarray(Image.fromarray(amap).resize(size, Image.BILINEAR))  # [h, w]
    img = np.asarray(picture, dtype=np.float32) / 255.0  # [h, w, 3]
    lo, hi = float(amap.min()), float(amap.max())
    if lo < 0 or hi > 1:
        amap = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    colours = matplotlib.colormaps["jet"](amap)[..., :3]  # [h, w, 4] RGBA → [h, w, 3]
    return np.rint(((1 - alpha) * img + alpha * colours) * 255).astype(np.uint8)  # [h, w, 3]


# ----------------------------------------------------------------------------- detection


def verdict(score: float, threshold: float) -> str:
    """``"anomalous"`` when ``score >= threshold`` else ``"normal"`` (same rule as ``adkit detect``)."""
    return "anomalous" if float(score) >= float(threshold) else "normal"


def verdict_markdown(score: float, threshold: float) -> str:
    """The verdict as a Markdown heading (a coloured ● and the comparison that decided it)."""
    v = verdict(score, threshold)
    colour, op = ("#c0392b", "≥") if v == "anomalous" else ("#27ae60", "<")
    return (f'### <span style="color:{colour}">●</span> {v} '
            f"(score {float(score):.3f} {op} threshold {float(threshold):.2f})")


@dataclass
class DetectResult:
    score: float
    verdict: str
    overlay: np.ndarray  # [h, w, 3] uint8
    detection: object  # adkit.model.Detection
    image: Image.Image
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        rows, cols = self.detection.grid_shape
        views = f"{rows}×{cols} crops + base view" if rows else "base view"
        cal = "calibrated" if self.detection.calibrated else "uncalibrated"
        text = (f"{self.image.width}×{self.image.height} image, {views}; method {self.detection.method} "
                f"({cal} threshold {self.detection.threshold:.3f}).")
        return text + "".join(f" Note: {n}." for n in self.notes)


def reference_images(pipeline: DemoPipeline, image: Image.Image, uploads=None) -> list[Image.Image]:
    """The images ``mutual`` scores ``image`` against: ``uploads`` (files the presenter added) or
    the pipeline's reference set (the example gallery), without any copy of ``image`` itself."""
    sources = [upload_path(u) for u in uploads] if uploads else list(pipeline.reference)
    refs = []
    for src in sources:
        try:
            ref, _ = load_demo_image(src, pipeline.max_pixels)
        except DemoInputError as exc:
            raise DemoInputError(f"reference image: {exc}") from None
        if ref.size == image.size and ref.tobytes() == image.tobytes():
            continue  # the upload itself (e.g. an example): comparing it with itself would hide everything
        refs.append(ref)
    if not refs:
        raise DemoInputError("method 'mutual' scores the image against other unlabeled images of the same kind: "
                             "add reference images (or pick another method)")
    return refs


def detect(pipeline: DemoPipeline, image, threshold: float | None = None, preset: str | None = None,
           method: str = "expert", reference=None) -> DetectResult:
    """Score, verdict and overlay for one upload by ``method`` (no LLM run); ``reference``:
    uploaded files for ``mutual`` (default: the pipeline's reference set)."""
    from ..zeroshot import METHODS

    if method not in METHODS:
        raise DemoInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    img, notes = load_demo_image(image, pipeline.max_pixels)
    model = pipeline.model_for(preset)
    refs = reference_images(pipeline, img, reference) if method == "mutual" else None
    with pipeline.lock:
        det = model.detect(img, method=method, reference=refs)[0]
    threshold = det.threshold if threshold is None else float(threshold)
    if refs:
        notes.append(f"scored against {len(refs)} reference image(s) (mutual, transductive)")
    return DetectResult(score=float(det.score), verdict=verdict(det.score, threshold),
                        overlay=overlay(img, det.anomaly_map), detection=det, image=img, notes=notes)


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=90)  # no pyplot: thread-safe, no global state


def _pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # [H, W, 4] → [H, W, 3]


def explain(pipeline: DemoPipeline, image, preset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two pictures (uint8 arrays): the anyres crops, and the selected tokens per tile.

    The second runs the tower and expert once more to keep the selector's attention
    ([N, k², P]): each tile shows its g×g anomaly map, the k×k pooling cells and, per cell, the
    patch its query attends to most (the strongest of the tokens averaged into the selected token).
    """
    from ..viz import draw_crops

    img, _ = load_demo_image(image, pipeline.max_pixels)
    model = pipeline.model_for(preset)
    fig = _figure((6, 4.5))
    draw_crops(img, model, ax=fig.add_subplot())
    fig.tight_layout()
    crops = _pixels(fig)
    import torch

    with pipeline.lock, torch.no_grad():
        batch = model.processor.images([img])
        feats = model.features(batch.pixel_values)
        out = model.expert(feats.final, feats.levels, batch.split_sizes.tolist())
    g, k = model.expert.config.grid, model.expert.config.pool_size
    maps = out.anomaly_maps.float().cpu().numpy()  # [N, g, g]
    peaks = out.attention.argmax(-1).cpu().numpy()  # [N, k²] patch index each query attends to most
    cells = out.cell_significance.float().cpu().numpy()  # [N, k²]
    n = maps.shape[0]
    ncols = min(n, 5)
    nrows = -(-n // ncols)
    fig = _figure((2.3 * ncols + 0.6, 2.4 * nrows + 0.5))
    for t in range(n):
        ax = fig.add_subplot(nrows, ncols, t + 1)
        ax.imshow(maps[t], cmap="jet", vmin=0, vmax=1, extent=(0, g, g, 0))
        for b in range(1, k):
            ax.axhline(b * g / k, color="white", lw=0.8)
            ax.axvline(b * g / k, color="white", lw=0.8)
        rows, cols = np.divmod(peaks[t], g)
        ax.scatter(cols + 0.5, rows + 0.5, s=40 + 400 * cells[t], facecolors="none", edgecolors="white", linewidths=2)
        ax.set_title("base view" if t == 0 else f"crop {t}", fontsize=9)
        ax.set(xticks=[], yticks=[])
    fig.suptitle(f"anomaly map per tile; ○ = the patch each of the {k}×{k} selector queries looks at "
                 "(size ∝ cell significance)", fontsize=8)
    return crops, _pixels(fig)


# ----------------------------------------------------------------------------- chat


def history_pairs(messages) -> list[tuple[str, str]]:
    """Chatbot messages ([{role, content}, ...], content a string or a list of text parts) → [(q, a), ...]."""

    def text(content) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, dict):
            return str(content.get("text") or content.get("value") or "")
        if isinstance(content, (list, tuple)):
            return "".join(text(c) for c in content)
        return "" if content is None else str(content)

    pairs, question = [], None
    for m in messages or []:
        if isinstance(m, (list, tuple)) and len(m) == 2:  # already (q, a) pairs
            pairs.append((text(m[0]), text(m[1])))
            continue
        role, content = m.get("role"), text(m.get("content"))
        if role == "user":
            question = content
        elif role == "assistant" and question is not None:
            pairs.append((question, content))
            question = None
    return pairs


def chat_stream(pipeline: DemoPipeline, image, question: str, history=None, preset: str | None = None,
                max_new_tokens: int | None = None) -> Iterator[str]:
    """Yield the growing answer to ``question`` (multi-turn: ``history`` as messages or pairs).

    :meth:`AnomalyOV.chat` runs in a worker thread with a ``TextIteratorStreamer``; the final
    text (stripped) equals what ``model.chat`` returns for the same arguments.
    """
    question = (question or "").strip()
    if not question:
        raise DemoInputError("type a question or pick one of the suggestions")
    img, _ = load_demo_image(image, pipeline.max_pixels)
    model = pipeline.model_for(preset)
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    failure = []

    def work():
        try:
            with pipeline.lock:
                model.chat(img, question, history=history_pairs(history),
                           max_new_tokens=max_new_tokens or pipeline.max_new_tokens, streamer=streamer,
                           **pipeline.gen_kwargs)
        except Exception as exc:  # noqa: BLE001 — re-raised in the caller's thread
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=work, name="adkit-demo-chat", daemon=True)
    worker.start()
    answer = ""
    for piece in streamer:
        answer += piece
        yield answer.strip()
    worker.join()
    if failure:
        raise failure[0]
    yield answer.strip()
