"""The presenter's app: ``build_demo(pipeline) -> gr.Blocks`` (docs/architecture.md §8 "Gradio").

Left: preset, image (upload / webcam / clipboard / examples), threshold. Right: anomaly
score, verdict, and three views — the anomaly map overlay, the anyres crops, the selected
tokens. Below: a multi-turn chat about the image, streamed, with the paper's prompts as
suggestion buttons. All logic lives in :mod:`adkit.demo.handlers`; here are only the wiring
and the safety defaults:

* nothing happens at import: Gradio is imported (with ``GRADIO_ANALYTICS_ENABLED=False``
  set first) only when :func:`build_demo` runs;
* ``launch()`` of the returned Blocks binds 127.0.0.1, never makes a share link, uses a
  theme with system fonts only (no web fonts), caps uploads at ``MAX_FILE_SIZE``;
* a queue with a concurrency limit; ``api_name`` on every event (``/detect``, ``/explain``,
  ``/verdict``, ``/chat``, ``/ask_0``…``/ask_3``, ``/clear_chat``, ``/load_preset``,
  ``/method_threshold``, ``/detect_method``);
* file payloads are vetted (:mod:`adkit.demo.uploads`): only files uploaded to the app and the
  gallery's own files are read, never another path on the server;
* a bad upload becomes a warning and a status line, never a crash;
* output pictures go to a bounded temp folder that is removed on exit (:mod:`adkit.demo.outputs`);
  Gradio's copies of uploads and outputs are swept after an hour (:data:`UPLOAD_SWEEP_S`);
* the example gallery comes from a folder (``data_samples/`` by default) or, offline and
  without one, from public-domain ``skimage.data`` photos (:func:`example_images`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..zeroshot import METHODS, SETTINGS
from . import handlers as H
from .outputs import OutputFolder, release_freed_memory
from .uploads import MAX_UPLOAD_MB, UploadGuard

MAX_FILE_SIZE = f"{MAX_UPLOAD_MB}mb"  # Gradio's upload cap (HTTP 413 above it)
SCORE_DECIMALS = 4  # the score box's precision
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "DejaVu Sans", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "DejaVu Sans Mono", "Menlo", "Consolas", "monospace")
#: Gradio's cache sweep, (every, older than) in seconds: uploads and the cached copies of outputs
#: are deleted an hour after they were made (and all of them when the server stops), so the
#: upload folder does not grow with every request.
UPLOAD_SWEEP_S = (600, 3600)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FALLBACK_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")  # offline skimage.data photos (public domain)
_BLOCKS_CLASS = None


def _gradio():
    """Import Gradio with its analytics off (must be set before the first import)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    return gr


def theme():
    """Gradio's default look with system fonts only: the page loads no font from anywhere."""
    gr = _gradio()
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


def _blocks_class():
    """``gr.Blocks`` whose ``launch`` has the demo's safe defaults (built once, lazily)."""
    global _BLOCKS_CLASS
    if _BLOCKS_CLASS is None:
        gr = _gradio()

        class DemoBlocks(gr.Blocks):
            def launch(self, **kwargs):
                """``gr.Blocks.launch`` on 127.0.0.1, no share link, system-font theme, upload cap."""
                if kwargs.get("share"):
                    raise ValueError("the adkit demo never creates a public share link (share=True refused)")
                kwargs.update(share=False, ssr_mode=False, mcp_server=False, pwa=False)
                kwargs.setdefault("server_name", "127.0.0.1")
                kwargs.setdefault("theme", theme())
                kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
                kwargs.setdefault("show_error", True)
                kwargs.setdefault("footer_links", ["api", "settings"])
                return super().launch(**kwargs)

        _BLOCKS_CLASS = DemoBlocks
    return _BLOCKS_CLASS


# ----------------------------------------------------------------------------- the example gallery


def _repo_samples() -> list[Path]:
    here = Path(__file__).resolve().parents[2]  # the checkout holding adkit/ (editable installs)
    return [Path.cwd() / "data_samples", here / "data_samples"]


def _spread(files: list[Path], limit: int) -> list[Path]:
    """Up to ``limit`` files taken round-robin over their folders, and over the folders'
    parents first (``<category>/test/<defect>/``: one per category, then one per defect);
    training images (``<category>/train/<label>/``) only when nothing else is there."""
    tests = [f for f in files if "train" not in f.parts[-3:-1]]  # not <category>/train/<label>/x.png
    groups: dict[Path, list[Path]] = {}
    for f in tests or files:
        groups.setdefault(f.parent, []).append(f)
    parents = sorted({g.parent for g in groups})
    rank = {}
    for g in groups:  # each parent starts at a different child folder: defects vary across categories
        siblings = sorted(x for x in groups if x.parent == g.parent)
        rank[g] = (siblings.index(g) - parents.index(g.parent)) % len(siblings)
    order = sorted(groups, key=lambda g: (rank[g], str(g.parent), str(g)))
    picked = [group[i] for i in range(max(map(len, groups.values()))) for g in order
              for group in [groups[g]] if i < len(group)]
    return picked[:limit]


def example_images(source=None, limit: int = 6) -> list[Path]:
    """Example images for the gallery.

    ``source``: a folder (searched recursively) or a list of files. Default: ``data_samples/``
    (in the working folder or the checkout) when it holds images, else a few public-domain
    ``skimage.data`` photos written once to ``<adkit cache>/demo_examples`` (offline).
    """
    if source is not None and not isinstance(source, (str, os.PathLike)):
        return [Path(p) for p in source][:limit]
    if source is not None and not Path(source).is_dir():
        raise H.DemoInputError(f"{source}: no such folder (--examples wants a folder of images)")
    folders = [Path(source)] if source is not None else _repo_samples()
    for folder in folders:
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                           and not p.stem.endswith("_mask") and "ground_truth" not in p.relative_to(folder).parts)
            if files:
                return _spread(files, limit)
    if source is not None:
        raise H.DemoInputError(f"{source}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    from ..cache import cache_folder

    out = cache_folder("demo_examples")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FALLBACK_PHOTOS[:limit]:
        path = out / f"{name}.png"
        if not path.exists():
            try:
                from skimage import data as skdata

                arr = getattr(skdata, name)()
            except ImportError:  # no scikit-image: a synthetic photo with one bright defect
                yy, xx = np.mgrid[0:240, 0:320]
                arr = np.stack([xx * 0.7, yy * 1.0, 128 + 60 * np.sin(xx / 9.0 + len(name))], -1)
                arr[100:130, 180:220] = 255
                arr = np.clip(arr, 0, 255).astype(np.uint8)
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(arr).save(tmp)
            tmp.replace(path)  # atomic: concurrent demos never read half a file
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- the app


def build_demo(pipeline, examples=None, concurrency_limit: int = 2, queue_size: int = 64,
               title: str = "adkit · Anomaly-OV demo", delete_cache: tuple[int, int] = UPLOAD_SWEEP_S):
    """The app for ``pipeline`` (a :class:`~adkit.demo.handlers.DemoPipeline` or an ``AnomalyOV``).

    ``examples``: a folder or a list of image files for the gallery (default:
    :func:`example_images`). ``delete_cache``: (every, older than) seconds for Gradio's sweep of
    the files this app received or served (:data:`UPLOAD_SWEEP_S`). Launch it with ``demo.launch()``
    (127.0.0.1) or ``demo.launch(prevent_thread_lock=True)`` in a notebook or test.
    """
    gr = _gradio()
    if not isinstance(pipeline, H.DemoPipeline):
        pipeline = H.DemoPipeline(pipeline)
    example_files = [str(p) for p in example_images(examples)]
    if not pipeline.reference:  # method "mutual" scores an upload against the gallery unless others are given
        pipeline.reference = list(example_files)
    outputs = OutputFolder()  # bounded (newest KEEP_FILES kept), removed on close, exit and SIGTERM
    guard = UploadGuard(files=example_files)  # requests may name only uploads and the gallery's files

    def as_file(picture):
        """Output pictures go to Gradio as files with unique names: Gradio copies a file into its
        cache atomically, while a returned PIL image is re-encoded and rewritten in place under a
        content hash, so two concurrent requests with the same picture could truncate the file
        one of them is downloading (seen in the 8-client load test)."""
        return None if picture is None else outputs.write_preview(picture)

    def blank(status: str):
        return None, "", None, status

    def on_detect(image, threshold, preset, method, reference):
        if image is None:
            return blank("Upload an image, take a webcam snapshot or pick an example.")
        try:
            image, reference = guard.vet(image), guard.vet_many(reference)
            r = H.detect(pipeline, image, threshold, preset, method=method, reference=reference)
        except H.DemoInputError as exc:
            gr.Warning(str(exc))
            return blank(f"⚠ {exc}")
        release_freed_memory()  # RSS stays flat over long runs (adkit.demo.outputs)
        shown = round(r.score, SCORE_DECIMALS)  # judge the score the page shows (and /verdict gets back)
        return shown, H.verdict_markdown(shown, threshold), as_file(r.overlay), r.status

    def on_explain(image, preset):
        if image is None:
            return None, None
        try:
            return tuple(as_file(p) for p in H.explain(pipeline, guard.vet(image), preset))
        except H.DemoInputError:  # already reported by on_detect
            return None, None

    def on_threshold(score, threshold):
        return "" if score is None else H.verdict_markdown(score, threshold)

    def on_preset(preset, method):
        try:
            return H.untrained_note(pipeline.model_for(preset)), pipeline.threshold_for(method, preset)
        except (H.DemoInputError, FileNotFoundError, ValueError) as exc:
            raise gr.Error(f"preset {preset}: {exc}") from None

    def on_method(method, preset):
        return pipeline.threshold_for(method, preset)

    def on_chat(image, question, messages, preset):
        messages = list(messages or [])
        question = (question or "").strip()
        try:
            stream = H.chat_stream(pipeline, guard.vet(image), question, messages, preset)
            turn = [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
            for answer in stream:
                turn[1]["content"] = answer
                yield messages + turn, ""
        except H.DemoInputError as exc:
            raise gr.Error(str(exc)) from None

    def asker(prompt):
        def ask(image, messages, preset):
            yield from on_chat(image, prompt, messages, preset)

        return ask

    with _blocks_class()(title=title, analytics_enabled=False, delete_cache=delete_cache) as demo:
        gr.Markdown(f"# {title}\nZero-shot anomaly detection and reasoning (Anomaly-OV, CVPR 2025): the "
                    "anomaly expert scores the image and maps where it looks wrong; the LLM answers questions.")
        note = gr.Markdown(H.untrained_note(pipeline.model), elem_id="untrained-note")
        with gr.Row():
            with gr.Column(scale=1):
                preset = gr.Dropdown(pipeline.presets, value=pipeline.preset, label="preset",
                                     info="small: DINOv2-S + SmolLM2-135M with the kit's trained expert (MODEL_CARD); tiny: random, for tests")
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                 label="image", elem_id="input-image", height=320)
                if example_files:
                    gr.Examples([[p] for p in example_files], inputs=image, label="examples", examples_per_page=8)
                method = gr.Radio(list(METHODS), value="expert", label="method", elem_id="method",
                                  info="; ".join(f"{m}: {SETTINGS[m]}" for m in METHODS))
                reference = gr.File(file_count="multiple", file_types=["image"], label="reference images (mutual)",
                                    elem_id="reference", height=80)
                threshold = gr.Slider(0, 1, value=pipeline.threshold_for("expert"), step=0.001, label="threshold",
                                      info="anomalous when score ≥ threshold; starts at the method's calibrated "
                                           "threshold (chosen on validation data)")
                run = gr.Button("Detect", variant="primary", elem_id="detect-button")
            with gr.Column(scale=1):
                score = gr.Number(label="anomaly score", precision=SCORE_DECIMALS, interactive=False, elem_id="score")
                verdict = gr.Markdown(elem_id="verdict")
                status = gr.Markdown(elem_id="status")
                with gr.Tabs():
                    with gr.Tab("anomaly map"):
                        overlay = gr.Image(label="anomaly map over the image (jet: blue 0 → red 1)",
                                           interactive=False, elem_id="overlay", format="png")
                    with gr.Tab("anyres crops"):
                        crops = gr.Image(label="base view + crops (draw_crops)", interactive=False, format="png")
                    with gr.Tab("selected tokens"):
                        tokens = gr.Image(label="selector queries per tile", interactive=False, format="png")
        gr.Markdown("## Chat about the image")
        chatbot = gr.Chatbot(label="Anomaly-OV", height=300, elem_id="chatbot")
        with gr.Row():
            suggestions = [gr.Button(p, size="sm") for p in H.PAPER_PROMPTS]
        with gr.Row():
            question = gr.Textbox(placeholder="Ask about the image…", show_label=False, scale=5)
            send = gr.Button("Send", scale=1)
            clear = gr.Button("Clear chat", scale=1)

        # preprocess=False: uploads reach the events as raw file payloads, which Gradio does NOT
        # check; `guard` admits only files in Gradio's upload folder and the gallery's own files,
        # then adkit.images.load_image alone decodes them (adkit.demo.uploads)
        gr.on([run.click, image.change], on_detect, [image, threshold, preset, method, reference],
              [score, verdict, overlay, status], api_name="detect", preprocess=False).then(
            on_explain, [image, preset], [crops, tokens], api_name="explain", preprocess=False)
        threshold.release(on_threshold, [score, threshold], verdict, api_name="verdict")
        preset.change(on_preset, [preset, method], [note, threshold], api_name="load_preset")
        method.change(on_method, [method, preset], threshold, api_name="method_threshold").then(
            on_detect, [image, threshold, preset, method, reference], [score, verdict, overlay, status],
            api_name="detect_method", preprocess=False)
        gr.on([send.click, question.submit], on_chat, [image, question, chatbot, preset], [chatbot, question],
              api_name="chat", preprocess=False)
        for i, (button, prompt) in enumerate(zip(suggestions, H.PAPER_PROMPTS)):
            button.click(asker(prompt), [image, chatbot, preset], [chatbot, question], api_name=f"ask_{i}",
                         preprocess=False)
        clear.click(lambda: ([], ""), None, [chatbot, question], api_name="clear_chat")
        image.clear(lambda: [], None, chatbot, api_name="clear_image")
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=queue_size)
    demo.pipeline = pipeline
    demo.guard = guard
    demo.output_dir = outputs  # an OutputFolder: demo.output_dir.close() removes it (adkit demo does on exit)
    return demo
