"""``adkit data ...``: build the sample sets, synthesise anomalies, write instruction data.

Registered by :mod:`adkit.cli` (see ``EXTENSIONS``); heavy imports stay inside the handlers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATA_HELP = """sources for 'instruct' and 'synth':
  --mvtec DIR / --visa DIR / --folder DIR   a dataset you bring (MVTec AD, VisA 1-class split, or
                                            <root>/{good,<defect>}/... with optional masks/)
  --categories A,B                          the kit's own categories (default: the train split)
exit codes: 0 ok, 1 --check found differences, 2 bad input"""


def register(sub, tools) -> None:
    p = sub.add_parser("data", formatter_class=tools.fmt, help="sample sets, anomaly synthesis, instruction data",
                       description="Data for Anomaly-OV (docs/architecture.md §5): the kit's sample sets, synthetic anomalies on\n"
                                   "license-clean images, and the paper's instruction-data pipeline.",
                       epilog=DATA_HELP)
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=tools.Parser)
    dsub.required = True

    m = dsub.add_parser("make-samples", formatter_class=tools.fmt, help="(re)build data_samples/ byte-identically",
                        description="Generate data_samples/: MVTec-style train / val / held-out test sets, LLaVA\n"
                                    "instruction JSON and a VisA-D&R-style benchmark, with PROVENANCE.md and a\n"
                                    "sha256 manifest. --check rebuilds in a temp folder and compares every byte.")
    m.add_argument("--out", default="data_samples", metavar="DIR", help="output folder (default: data_samples)")
    m.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    m.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    m.add_argument("--check", action="store_true", help="verify DIR regenerates identically; exit 1 if not")
    m.set_defaults(func=cmd_make_samples)

    s = dsub.add_parser("synth", formatter_class=tools.fmt, help="write synthetic anomalies as an MVTec-style tree",
                        description="Render normal images of the kit's categories and draw defects on some of them;\n"
                                    "writes <out>/<category>/{train/good,test/good,test/<defect>,ground_truth/...}.")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    s.add_argument("--categories", default=None, help="comma-separated categories (default: all of --split)")
    s.add_argument("--split", default="train", choices=("train", "val", "test"),
                   help="which fixed split's categories (default: train)")
    s.add_argument("--normal", type=int, default=20, help="normal images per category (default: 20)")
    s.add_argument("--anomalous", type=int, default=20, help="anomalous images per category (default: 20)")
    s.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    s.add_argument("--size", type=int, default=224, help="image side (default: 224)")
    s.set_defaults(func=cmd_synth)

    i = dsub.add_parser("instruct", formatter_class=tools.fmt, epilog=DATA_HELP,
                        help="build LLaVA instruction JSON from images with masks (paper §4.1 pipeline)",
                        description="Run the instruction pipeline: hint → (red boxes) → description → multi-round\n"
                                    "conversations → balance → LLaVA JSON. Writers: template (offline default),\n"
                                    "openai (any OpenAI-compatible server: --url, --model).")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--mvtec", metavar="DIR")
    src.add_argument("--visa", metavar="DIR")
    src.add_argument("--folder", metavar="DIR")
    i.add_argument("--out", required=True, metavar="FILE", help="LLaVA JSON to write")
    i.add_argument("--writer", choices=("template", "openai"), default="template", help="default: template")
    i.add_argument("--url", default=None, help="openai writer: server root, e.g. http://127.0.0.1:8000")
    i.add_argument("--model", default=None, help="openai writer: model name")
    i.add_argument("--send-images", action="store_true", help="openai writer: send the boxed image")
    i.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    i.set_defaults(func=cmd_instruct)


def cmd_make_samples(args) -> int:
    from .samples import check_sample_sets, make_sample_sets

    if args.check:
        diff = check_sample_sets(args.out)
        if diff:
            print(f"{args.out}: {len(diff)} file(s) differ from a fresh build:", *diff[:20], sep="\n  ")
            return 1
        print(f"{args.out}: regenerates byte-identically")
        return 0
    manifest = make_sample_sets(args.out, seed=args.seed, size=args.size)
    total = sum((Path(args.out) / f).stat().st_size for f in manifest["files"])
    print(f"wrote {len(manifest['files'])} files ({total / 1e6:.1f} MB) to {args.out}")
    return 0


def cmd_synth(args) -> int:
    from tqdm.auto import tqdm

    from .normals import categories, make_samples
    from .records import DataError
    from .samples import write_tree

    names = args.categories.split(",") if args.categories else categories(args.split)
    if args.normal + args.anomalous == 0:
        raise DataError("nothing to write: --normal and --anomalous are both 0")
    out = Path(args.out)
    for name in tqdm(names, desc="categories", disable=not sys.stderr.isatty()):
        write_tree(make_samples(name, args.normal, args.anomalous, args.seed, args.size), out,
                   train_good=args.normal // 2)  # half the normals are training images
    print(f"wrote {len(names) * (args.normal + args.anomalous)} images to {out}")
    return 0


def cmd_instruct(args) -> int:
    from .instruct import build_instructions
    from .llava import write_llava_json
    from .loaders import load_folder, load_mvtec, load_visa
    from .writers import OpenAIWriter, TemplateWriter

    if args.mvtec:
        samples = load_mvtec(args.mvtec, split="test", require_masks=False)
    elif args.visa:
        samples = load_visa(args.visa, split="test", require_masks=False)
    else:
        samples = load_folder(args.folder)
    if args.writer == "openai":
        if not args.url or not args.model:
            raise ValueError("--writer openai needs --url and --model")
        writer = OpenAIWriter(args.url, args.model, send_images=args.send_images)
    else:
        writer = TemplateWriter(args.seed)
    out = Path(args.out)
    records = build_instructions(samples, writer, seed=args.seed, image_root=out.parent.resolve(),
                                 progress=sys.stderr.isatty())
    write_llava_json(records, out)
    print(json.dumps({"records": len(records), "out": str(out), "writer": writer.name}))
    return 0
