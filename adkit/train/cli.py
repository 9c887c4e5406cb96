"""``adkit train stage1|stage2``: the two training stages from the command line (docs/architecture.md §4).

Every field of :class:`Stage1Config` / :class:`Stage2Config` is a flag of the same name
(``micro_batch_size`` → ``--micro-batch-size``), so ``config.launch_command(...)`` and this
parser agree by construction. The same parser runs under torchrun / accelerate through
``python -m adkit.train.launch`` (see :mod:`adkit.train.launch`). Imports stay cheap here:
torch, transformers and the data modules load inside the handlers.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

STAGE1_HELP = """data (--data / --val-data):
  synthetic   the kit's license-clean categories (adkit.data.normals): train on the 'train'
              categories, validate on the held-out 'val' categories (zero-shot protocol)
  DIR         a folder of images, <DIR>/<category>/<good|defect>/*.png (adkit.data.loaders.load_folder);
              hold categories out for validation with --val-categories or give --val-data DIR
  none        (--val-data only) no validation"""


def _config_arguments(p, config_cls) -> None:
    """One flag per config field; the type comes from the default or ``metadata["type"]``."""
    for f in dataclasses.fields(config_cls):
        default = f.default
        name = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = f.metadata.get("type", type(default))
            p.add_argument(name, type=kind, default=default, metavar=f.name.upper(),
                           help=f"(default: {default})")


def _config_from(args, config_cls):
    """The config from the flags; a value the config refuses (adkit/validate.py) is reported by its flag."""
    from ..validate import ValidationError

    try:
        return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
    except ValidationError as exc:
        field, _, rest = str(exc).partition(" ")
        raise ValidationError(f"--{field.replace('_', '-')} {rest}") from None


def register(subparsers, tools) -> None:
    from .launch import Stage1Config, Stage2Config

    t = subparsers.add_parser("train", help="train the expert (stage1) or instruction-tune (stage2)",
                              description="Training stages of Anomaly-OV (paper §5.1). Multi-GPU: "
                                          "torchrun --nproc_per_node N -m adkit.train.launch stage1|stage2 ...")
    sub = t.add_subparsers(dest="stage", metavar="STAGE", parser_class=tools.Parser)
    sub.required = True
    epilog = tools.PRESET_HELP
    s1 = sub.add_parser("stage1", formatter_class=tools.fmt, epilog=STAGE1_HELP + "\n\n" + epilog,
                        help="train the anomaly expert on a frozen tower (balanced BCE)",
                        description="Stage 1: only the expert trains; writes OUT/expert.safetensors, checkpoints, "
                                    "steps.csv/epochs.csv/metrics.json and training.png.")
    s1.add_argument("--data", required=True, metavar="synthetic|DIR", help="training images (see 'data' below)")
    s1.add_argument("--val-data", default=None, metavar="synthetic|DIR|none",
                    help="validation images (default: synthetic val categories with --data synthetic, else none)")
    s1.add_argument("--val-categories", default=None, metavar="A,B", help="hold these categories of --data out for validation")
    s1.add_argument("--n-normal", type=int, default=32, help="synthetic: normal images per category (default: 32)")
    s1.add_argument("--n-anomalous", type=int, default=32, help="synthetic: anomalous images per category (default: 32)")
    s1.add_argument("--image-size", type=_sizes, default=[224], metavar="PX[,PX...]",
                    help="synthetic: image side in pixels; several (224,336,448) draw one per image: scale jitter, "
                         "larger images get more anyres crops (default: 224)")
    s1.add_argument("--grey", type=float, default=0.0, metavar="FRACTION",
                    help="synthetic: turn this fraction of the images grey (default: 0)")
    s1.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s1.add_argument("--load", action="append", default=[], metavar="FILE", help="trained-parts file(s) to load first")
    tools.add_model_options(s1)
    _config_arguments(s1, Stage1Config)
    s1.set_defaults(func=lambda args: cmd_stage1(args, tools))

    s2 = sub.add_parser("stage2", formatter_class=tools.fmt, epilog=epilog,
                        help="visual instruction tuning with transformers.Trainer",
                        description="Stage 2: tune projector, image_newline and the LLM (full or --llm lora) on LLaVA "
                                    "JSON; tower and expert frozen. Writes OUT/trained.safetensors (trained parts only).")
    s2.add_argument("--data", required=True, metavar="JSON", help="LLaVA conversation file (.json or .jsonl)")
    s2.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s2.add_argument("--load", action="append", default=[], metavar="FILE",
                    help="trained-parts file(s) to load first, e.g. a stage-1 expert.safetensors")
    tools.add_model_options(s2)
    _config_arguments(s2, Stage2Config)
    s2.set_defaults(func=lambda args: cmd_stage2(args, tools))
    _register_reader(sub, tools)


def _register_reader(sub, tools) -> None:
    r = sub.add_parser("reader", formatter_class=tools.fmt, epilog=tools.PRESET_HELP,
                       help="fit the expert notes' defect reader (the '+ notes' variant, adkit/notes.py)",
                       description="Fit the defect reader that names the family in the expert's note line: a "
                                   "logistic regression on frozen mid-level tower features over the most "
                                   "self-dissimilar patches, fitted on synthetic train categories, measured on the val "
                                   "categories (printed). Writes one safetensors file; load it with --load before a "
                                   "stage 2 run with --notes.")
    r.add_argument("--out", required=True, metavar="FILE", help="the reader file to write (e.g. runs/reader.safetensors)")
    r.add_argument("--load", action="append", default=[], metavar="FILE",
                   help="trained-parts file(s) to load first: the stage-1 expert.safetensors gives the verdict's scores")
    r.add_argument("--calibration", default=None, metavar="JSON",
                   help="calibration.json whose expert threshold the note's verdict uses (adkit eval calibrate); "
                        "default: the model's own (0.5 when uncalibrated)")
    r.add_argument("--per-family", type=int, default=12, help="anomalous training images per family and category (default: 12)")
    r.add_argument("--levels", default=None, metavar="I[,I...]",
                   help="hidden_states indices to read (default: the preset's second expert level, 6 for small)")
    r.add_argument("--share", type=float, default=None, help="share of patches pooled (default: 0.03)")
    r.add_argument("--c", type=float, default=None, help="inverse L2 strength of the regression (default: 0.02)")
    r.add_argument("--seed", type=int, default=21, help="synthetic data seed (default: 21)")
    tools.add_model_options(r)
    r.set_defaults(func=lambda args: cmd_reader(args, tools))


def cmd_reader(args, tools) -> int:
    from ..validate import count, probability, positive
    from . import reader as R

    count(args.per_family, "--per-family")
    share = probability(R.SHARE if args.share is None else args.share, "--share")
    c = positive(R.C if args.c is None else args.c, "--c")
    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()] if args.levels else None
    except ValueError:
        raise tools.UsageError(f"--levels: expected hidden_states indices like 6 or 6,9, got {args.levels!r}") from None
    model = _model(args, tools)
    bad = [lv for lv in levels or () if not 0 <= lv <= model.config.vision.num_hidden_layers]
    if bad:
        raise tools.UsageError(f"--levels {bad}: the {model.config.name} tower has hidden_states[0..."
                               f"{model.config.vision.num_hidden_layers}]")
    if args.calibration:
        from ..calibration import Calibration

        model.calibration = Calibration.load(args.calibration)
    reader, report = R.train_reader(model, per_family=args.per_family, seed=args.seed, levels=levels, share=share, c=c)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reader.save(out)
    print(f"defect reader: hidden_states{list(reader.levels)}, top {100 * share:g} % of patches, C {c:g}, "
          f"verdict threshold {reader.threshold:.3f}; val categories ({report.images} anomalous images): family "
          f"{100 * report.family_accuracy:.1f} % (chance {100 * report.chance:.1f} %), 3×3 location "
          f"{100 * report.location_accuracy:.1f} % → {out}")
    return 0


def _model(args, tools):
    """Training starts from the preset's *base* weights (so the shipped ``small`` checkpoint is
    reproducible from its card's commands); ``--load`` adds earlier stages' parts."""
    from ..weights.parts import base_with_parts

    return base_with_parts(args.preset, args.load, model_path=args.model_path, expert_path=args.expert_path)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixel sizes like 224 or 224,336,448, got {text!r}") from None
    if not sizes or min(sizes) < 32:
        raise argparse.ArgumentTypeError(f"image sizes must be >= 32 px, got {text!r}")
    return sizes


def _split_names(text):
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


def stage1_data(args, tools):
    """(train, val) AnomalySample lists from --data / --val-data / --val-categories."""
    def load(spec, split):
        if spec == "synthetic":
            from ..data.normals import categories, make_samples

            if not 0.0 <= args.grey <= 1.0:
                raise tools.UsageError(f"--grey must be a fraction in [0, 1], got {args.grey}")
            return make_samples(categories(split), args.n_normal, args.n_anomalous, args.seed + (split == "val"),
                                size=args.image_size, grey=args.grey)
        if not Path(spec).is_dir():
            raise tools.UsageError(f"--data {spec}: not 'synthetic' and not a folder")
        from ..data.loaders import load_folder

        return load_folder(spec)

    train = load(args.data, "train")
    held = set(_split_names(args.val_categories))
    val_spec = args.val_data or ("synthetic" if args.data == "synthetic" else "none")
    val = [] if val_spec == "none" else load(val_spec, "val")
    if held:
        unknown = held - {s.category for s in train}
        if unknown:
            raise tools.UsageError(f"--val-categories: {sorted(unknown)} not in --data")
        val += [s for s in train if s.category in held]
        train = [s for s in train if s.category not in held]
    overlap = {s.category for s in train} & {s.category for s in val}
    if overlap:
        raise tools.UsageError(f"zero-shot protocol: validation categories {sorted(overlap)} are also trained on")
    return train, val


def cmd_stage1(args, tools) -> int:
    from .launch import Stage1Config
    from .stage1 import train_stage1

    config = _config_from(args, Stage1Config)
    train, val = stage1_data(args, tools)
    model = _model(args, tools)
    res = train_stage1(model, train, val, config, args.out)
    last = res.epochs[-1] if res.epochs else {}
    print(f"stage 1: {res.global_step} steps, {len(train)} train / {len(val)} val images; "
          f"val AUROC {last.get('val_auroc', float('nan')):.4f}; expert → {res.expert_path} "
          f"({res.expert_path.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_stage2(args, tools) -> int:
    from .launch import Stage2Config
    from .stage2 import train_stage2

    config = _config_from(args, Stage2Config)
    data = Path(args.data)
    if not data.is_file():
        raise tools.UsageError(f"--data {data}: file not found")
    try:
        from ..data.llava import read_llava_json

        records = read_llava_json(data, image_root=config.image_folder)
    except ImportError:  # the data module is optional here
        import json

        records = json.loads(data.read_text())
    if config.image_folder is None:
        config = dataclasses.replace(config, image_folder=str(data.parent))
    model = _model(args, tools)
    res = train_stage2(model, records, config, args.out)
    n = sum(res.trainable.values())
    print(f"stage 2: {res.global_step} steps on {len(records)} records, {n:,} trained parameters → "
          f"{res.weights_path} ({res.weights_path.stat().st_size / 1e6:.2f} MB)")
    return 0
