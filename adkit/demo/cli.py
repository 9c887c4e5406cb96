"""``adkit demo``: start the presenter's web app on this machine (docs/architecture.md §8 "Gradio").

Registered by :mod:`adkit.cli` through ``register(subparsers, tools)``. The app listens on
127.0.0.1 by default; any other address must be asked for with ``--allow-remote``, and a
public share link is never made. Gradio is imported only when the command runs.
"""

from __future__ import annotations

import ipaddress

DESCRIPTION = """\
Start the Anomaly-OV web app (Gradio) and serve it until Ctrl+C.

Upload an image (or take a webcam snapshot, or pick an example) to see its anomaly score,
the verdict at an adjustable threshold, the anomaly map as an overlay, the anyres crops and
the expert's selected tokens; then chat about the image (answers are streamed; the paper's
prompts are one click away). Everything runs locally and offline.

The app listens on 127.0.0.1 (this machine only). Binding any other address exposes the
model to your network: it is refused unless --allow-remote is given. No public share link is
ever created. Other presets appear in the app's selector when their weights are present
(paper presets: $ADKIT_LLAVA_PATH and $ADKIT_EXPERT_PATH)."""

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def register(subparsers, tools) -> None:
    p = subparsers.add_parser("demo", formatter_class=tools.fmt, epilog=tools.PRESET_HELP, description=DESCRIPTION,
                              help="start the web app (Gradio) on 127.0.0.1")
    tools.add_model_options(p, dtype="auto")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; non-loopback needs --allow-remote)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 = any free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (anyone who can reach it can use the model)")
    p.add_argument("--examples", metavar="DIR", default=None,
                   help="folder of example images (default: data_samples/ if present, else skimage photos)")
    p.add_argument("--threshold", type=float, default=None,
                   help="fixed initial threshold of the verdict, in [0, 1] (default: each method's calibrated threshold)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest chat answer in tokens (default: 128)")
    p.add_argument("--concurrency", type=int, default=2, help="requests processed at once (default: 2)")
    p.set_defaults(func=lambda args: cmd_demo(args, tools))


def check_args(args, tools) -> None:
    """Refuse what would be unsafe or cannot work, before any model is loaded."""
    if not is_loopback(args.host) and not args.allow_remote:
        raise tools.UsageError(f"--host {args.host} is not a loopback address: the app would be reachable from "
                               "other machines; pass --allow-remote if that is what you want")
    if not 0 <= args.port <= 65535:
        raise tools.UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # NaN fails this too
        raise tools.UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.max_new_tokens < 1 or args.concurrency < 1:
        raise tools.UsageError("--max-new-tokens and --concurrency must be >= 1")


def cmd_demo(args, tools) -> int:
    check_args(args, tools)
    from .outputs import limit_malloc_arenas, remove_on_sigterm

    limit_malloc_arenas()  # before Gradio's worker threads exist: RSS stays flat under load
    remove_on_sigterm()  # SIGTERM stops the server like Ctrl+C, so the finally below runs
    from ..model import AnomalyOV
    from .app import example_images
    from .handlers import DemoPipeline

    examples = example_images(args.examples)  # a bad --examples folder fails before the model loads
    model = tools.load_model(args)

    def loader(preset):
        return AnomalyOV.from_preset(preset, model_path=args.model_path, expert_path=args.expert_path, dtype=args.dtype)

    pipeline = DemoPipeline(model, preset=args.preset, threshold=args.threshold,
                            max_new_tokens=args.max_new_tokens, loader=loader)
    from .app import build_demo

    demo = build_demo(pipeline, examples=examples, concurrency_limit=args.concurrency)
    port = args.port or None  # None: Gradio picks a free port
    try:
        demo.launch(server_name=args.host, server_port=port)  # blocks until Ctrl+C or SIGTERM
    finally:
        demo.close()
        demo.output_dir.close()  # the adkit-demo-* folder of output pictures
    return 0
