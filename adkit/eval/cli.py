"""``adkit eval zero-shot`` and ``adkit eval visa-dr`` (docs/architecture.md §7; runners in adkit/eval/runners.py).

Imports cheaply: the model, loaders and metrics are imported inside the handlers.

Every protocol prints a human summary, or with ``--json`` one JSON object on stdout instead: the
same metrics and rows (floats unrounded, NaN/inf as null) plus the paths of any files written.
While a ``--json`` run works, anything else written to stdout goes to stderr, so stdout parses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys

from .. import validate
from ..zeroshot import METHODS

_ZS_DESC = """Zero-shot detection without the LLM (paper Table 2 protocol): image AUROC per
class, then macro over classes; AP and F1-max; where masks exist (e.g. an MVTec AD tree's
ground_truth/) pixel AUROC, AP, F1-max and AUPRO (MVTec AD's per-region overlap up to FPR 0.3).
Metric names are anomalib's (image_AUROC, pixel_AUPRO, ...). Score with the expert
and/or the training-free scorers (--method, several at once). Prints a summary and the paper's
Table 2 with one "adkit <preset> · <method> (<setting>)" row per method; --out writes CSV,
markdown and figures. One source: --dataset elpv, --mvtec DIR, --visa DIR, --folder DIR or
--heldout.

ELPV is reported under two named labelling rules: "ELPV (clear)" = defect probability 0 vs 1
(the paper's column), "ELPV (graded)" = 0 vs any graded defect. --method mutual is
transductive: each image is scored against the other unlabeled test images of its class (for
ELPV: of its cell type, mono or poly) in batches of --mutual-batch."""

_DR_DESC = """VisA-D&R detection (greedy Yes/No answers, accuracy/precision/recall/F1 per class
then macro, both parser rules) and reasoning (multi-turn, the model's own answers as history;
ROUGE-L, Sentence-BERT, and a GPT-score when --judge-url is given), next to the paper's Table 4.
--out also writes the official scripts' detection_results_<size>.json and
reasoning_results_<size>.json (with --limit: the subset, in file order; the answers.csv files
name each item's image). A reasoning file without reference answers (the official
visa_dr.json holds questions only) is asked but not scored.

Protocols (--protocol; default auto = official when every image path starts with VisA/, the
paper's <data_dir>/VisA layout, else kit):
  official  the official Anomaly-OneVision scripts (commit d85bec0):{official}
  kit       the kit's own choices; they differ from the official ones in:{kit}
Under either protocol the kit still differs in:{residual}
--detection-tokens, --max-new-tokens and --batch-size override a protocol's choice (listed as
deviations in the report)."""


_PHOTO_DESC = """Score ten public-domain scikit-image photos (astronaut, camera, chelsea, coffee,
rocket, coins, moon, hubble_deep_field, immunohistochemistry, retina; never trained or
calibrated on) and a visibly damaged copy of each (a severe synthetic defect). A well
calibrated detector calls the clean photos normal at its threshold and scores every damaged
copy above its original. mutual scores each photo against the other nine."""

_CAL_DESC = """Choose the verdict threshold of each method on the kit's validation categories
(never on a test set): score them with every method, take the threshold of maximal balanced
accuracy and fit a logistic for score averaging, write one calibration JSON. The shipped
small weights carry one (adkit/weights/small/calibration.json); AnomalyOV.from_preset loads it."""


_FACTS_DESC = """Ask every image the VisA-D&R Yes/No question and every anomalous one "Describe the
anomaly in the image."; score whether each description names the right defect family (its name
or a synonym) and the right place on a 3×3 grid (from the mask), and its ROUGE-L against the
template writer's fact-based reference. Rates per class, then macro over classes."""


JSON_HELP = ("print one JSON object on stdout instead of the text summary: the same metrics and rows, "
             "unrounded, plus the paths of the files written")


def register(subparsers, tools) -> None:
    ev = subparsers.add_parser("eval", help="evaluate a model (zero-shot AUROC, VisA-D&R)",
                               description="Evaluation protocols of the paper (docs/architecture.md §7).")
    sub = ev.add_subparsers(dest="eval_command", metavar="PROTOCOL", parser_class=tools.Parser)
    sub.required = True

    z = sub.add_parser("zero-shot", formatter_class=tools.fmt, epilog=tools.PRESET_HELP, description=_ZS_DESC,
                       help="expert-only image AUROC against the paper's Table 2")
    src = z.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=("elpv",), help="a packaged dataset: elpv (2,624 solar-cell images)")
    src.add_argument("--mvtec", metavar="DIR", help="an MVTec AD folder (<cat>/test/..., ground_truth/...)")
    src.add_argument("--visa", metavar="DIR", help="a VisA folder after its 1-class split")
    src.add_argument("--folder", metavar="DIR", help="a generic folder of normal/anomalous images")
    src.add_argument("--heldout", action="store_true", help="the kit's held-out synthetic categories")
    z.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate N images (seeded random subset)")
    z.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    z.add_argument("--categories", nargs="+", default=None, metavar="CAT", help="only these classes")
    z.add_argument("--method", nargs="+", choices=METHODS, default=["expert"], metavar="METHOD",
                   help=f"scoring method(s): {', '.join(METHODS)} (default: expert)")
    z.add_argument("--mutual-batch", type=int, default=64, metavar="N",
                   help="--method mutual: at most N images scored against each other (default: 64)")
    z.add_argument("--pixel-size", type=int, default=224, metavar="PX",
                   help="pixel metrics (AUROC, AP, F1-max, AUPRO) on maps and masks resized to at most PX on the "
                        "long side (default: 224)")
    z.add_argument("--name", default=None, metavar="NAME",
                   help="the dataset's name in the tables (default: by source, e.g. 'MVTec AD' for --mvtec; "
                        "name your own MVTec-style tree so it is not filed under the paper's MVTec AD column)")
    _common(z, tools)
    _add_json(z)

    from . import official

    bullets = "\n    - ".join
    dr_desc = _DR_DESC.format(official=bullets(["", *official.describe("official")]),
                              kit=bullets(["", *official.deviations("kit")[:-len(official.RESIDUAL)]]),
                              residual=bullets(["", *official.RESIDUAL]))
    d = sub.add_parser("visa-dr", formatter_class=tools.fmt, epilog=tools.PRESET_HELP, description=dr_desc,
                       help="VisA-D&R detection and reasoning against the paper's Table 4")
    d.add_argument("benchmark", metavar="PATH", help="the VisA-D&R benchmark (folder or file)")
    d.add_argument("--limit", type=int, default=None, metavar="N", help="N detection and N reasoning items (seeded)")
    d.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    d.add_argument("--protocol", choices=("auto", "official", "kit"), default="auto",
                   help="evaluation protocol (see above; default: auto)")
    d.add_argument("--rule", choices=("first_word", "official_substring"), default=None,
                   help="headline Yes/No parser (both are reported; default: official_substring under "
                        "--protocol official, first_word under kit)")
    d.add_argument("--no-reasoning", action="store_true", help="detection only")
    d.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="longest reasoning answer (default: 4096 official, 128 kit)")
    d.add_argument("--detection-tokens", type=int, default=None, metavar="N",
                   help="longest detection answer (default: 4096 official, 8 kit)")
    d.add_argument("--size", default=None, metavar="TAG",
                   help="<size> in the official file names (default: 7b for paper-7b, 05b for paper-0.5b, "
                        "else the preset's name)")
    d.add_argument("--judge-url", metavar="URL", default=None,
                   help="GPT-score judge: an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)")
    d.add_argument("--judge-model", metavar="NAME", default=None, help="the judge's model name (with --judge-url)")
    d.add_argument("--judge-key-env", metavar="VAR", default="OPENAI_API_KEY",
                   help="environment variable holding the judge's API key (default: OPENAI_API_KEY)")
    _common(d, tools)
    d.set_defaults(batch_size=None)  # the protocol's: 1 (official, one image at a time) or 8 (kit)
    next(a for a in d._actions if a.dest == "batch_size").help = "images per model call (default: 1 official, 8 kit)"
    _add_json(d)
    c = sub.add_parser("calibrate", formatter_class=tools.fmt, epilog=tools.PRESET_HELP, description=_CAL_DESC,
                       help="choose each method's verdict threshold on the validation categories")
    c.add_argument("--out", required=True, metavar="FILE", help="calibration JSON to write (e.g. calibration.json)")
    c.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                   help=f"methods to calibrate (default: all: {', '.join(METHODS)})")
    c.add_argument("--n-normal", type=int, default=48, help="normal images per val category (default: 48)")
    c.add_argument("--n-anomalous", type=int, default=48, help="anomalous images per val category (default: 48)")
    c.add_argument("--seed", type=int, default=1, help="seed of the validation images (default: 1)")
    tools.add_model_options(c, dtype="float32")
    c.add_argument("--load", action="append", default=[], metavar="FILE",
                   help="trained-parts file(s) to load into the preset first (repeatable)")
    c.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_json(c)
    c.set_defaults(func=_handler(cmd_calibrate, tools), no_expert=False, limit=None)
    ph = sub.add_parser("photo-check", formatter_class=tools.fmt, epilog=tools.PRESET_HELP, description=_PHOTO_DESC,
                        help="verdicts on ten clean everyday photos and damaged copies of them")
    ph.add_argument("--method", nargs="+", choices=METHODS, default=["expert"], metavar="METHOD",
                    help=f"scoring method(s): {', '.join(METHODS)} (default: expert)")
    tools.add_model_options(ph, dtype="float32")
    ph.add_argument("--load", action="append", default=[], metavar="FILE",
                    help="trained-parts file(s) to load into the preset first (repeatable)")
    _add_json(ph)
    ph.set_defaults(func=_handler(cmd_photo_check, tools), no_expert=False)
    f = sub.add_parser("facts", formatter_class=tools.fmt, epilog=tools.PRESET_HELP, description=_FACTS_DESC,
                       help="do descriptions name the right defect family and location? (+ Yes/No F1)")
    f.add_argument("--mvtec", metavar="DIR", required=True,
                   help="an MVTec-layout folder with masks, e.g. from 'adkit data synth --split test'")
    f.add_argument("--limit", type=int, default=None, metavar="N", help="N samples (seeded random subset)")
    f.add_argument("--seed", type=int, default=0, help="seed of the subset and of the references (default: 0)")
    f.add_argument("--max-new-tokens", type=int, default=96, metavar="N",
                   help="tokens per description (default: 96)")
    _common(f, tools)
    _add_json(f)
    f.set_defaults(func=_handler(cmd_facts, tools))
    z.set_defaults(func=_handler(cmd_zero_shot, tools))
    d.set_defaults(func=_handler(cmd_visa_dr, tools))


def _common(p, tools) -> None:
    tools.add_model_options(p, dtype="float32")  # the card's numbers are fp32; --dtype auto for speed
    p.add_argument("--load", action="append", default=[], metavar="FILE",
                   help="trained-parts file(s) from 'adkit train' to load into the preset (repeatable; "
                        "with --preset small they replace the shipped weights)")
    p.add_argument("--no-expert", action="store_true",
                   help="run without the anomaly expert (plain LLaVA-OneVision: the paper's ablation)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    p.add_argument("--out", metavar="DIR", default=None, help="write CSV, markdown and figures to DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_json(p) -> None:
    """``--json`` for a protocol whose handler is ``_handler(cmd, tools)`` and prints via ``_output``."""
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def jsonable(value):
    """``value`` as plain JSON types: numpy scalars and arrays, tuples, paths; NaN and inf → None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _handler(cmd, tools):
    """``cmd(args, tools)`` as a subcommand handler. Under --json, stdout is kept for the JSON
    object alone: whatever else writes to it while the command runs goes to stderr."""
    def run(args):
        if not getattr(args, "json", False):
            return cmd(args, tools)
        args.json_stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return cmd(args, tools)

    return run


@contextlib.contextmanager
def _output(args):
    """Yield ``say`` (print; nothing under --json) and a dict to fill, printed under --json as
    one JSON object on the command's stdout when the block ends without an error."""
    if not getattr(args, "json", False):
        yield print, {}
        return
    doc = {}
    yield (lambda *a, **k: None), doc
    print(json.dumps(jsonable(doc), indent=2), file=getattr(args, "json_stdout", sys.stdout), flush=True)


def _table(table) -> dict:
    return {"title": table.title, "columns": table.columns, "rows": table.rows, "notes": table.notes,
            "source": table.source}


def _files(files) -> dict:
    return {k: os.fspath(v) for k, v in files.items()}


def _check(args, tools) -> None:
    validate.count(args.batch_size, "--batch-size")  # adkit/validate.py: one line, exit 2
    validate.optional_count(args.limit, "--limit")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise tools.UsageError(f"--out {args.out}: exists and is not a folder")


def _model(args, tools):
    """The preset, with --load parts (on the untrained base) and --no-expert applied."""
    from ..weights.parts import base_with_parts

    model = tools.load_model(args) if not args.load else base_with_parts(
        args.preset, args.load, model_path=args.model_path, expert_path=args.expert_path).set_dtype(getattr(args, "dtype", None))
    if args.no_expert:
        model.use_expert = False
    return model


def _folder(path: str, flag: str, tools) -> str:
    if not os.path.isdir(path):
        raise tools.UsageError(f"{flag} {path}: no such folder")
    return path


def cmd_zero_shot(args, tools) -> int:
    import numpy as np

    from .paper import compare_zero_shot
    from .report import markdown_table, write_report
    from .runners import ALIASES, load_samples, zero_shot_methods

    _check(args, tools)
    if args.dataset:
        source, path = args.dataset, None
    elif args.heldout:
        source, path = "heldout", None
    else:
        source = "mvtec" if args.mvtec else "visa" if args.visa else "folder"
        flag = f"--{source}"
        path = _folder(getattr(args, source), flag, tools)
    validate.count(args.mutual_batch, "--mutual-batch", 2)
    validate.count(args.pixel_size, "--pixel-size")
    if args.no_expert:
        raise tools.UsageError("--no-expert: zero-shot detection is the expert's own score; use it with visa-dr")
    name, samples = load_samples(source, path, limit=args.limit, seed=args.seed, categories=args.categories)
    name = args.name or name
    if not samples:
        raise tools.UsageError(f"no images found for {source}" + (f" in {path}" if path else ""))
    model = _model(args, tools)
    elpv = source == "elpv"
    group = (lambda s: s.meta["type"]) if elpv else None  # MuSc batches per category: ELPV per cell type
    results = []
    by_method = zero_shot_methods(model, samples, tuple(dict.fromkeys(args.method)), batch_size=args.batch_size,
                                  progress=not args.no_progress, dataset=f"{name} (graded)" if elpv else name,
                                  group=group, mutual_batch=args.mutual_batch, seed=args.seed,
                                  pixel_size=args.pixel_size)  # one tower pass for the single-image methods
    for result in by_method.values():
        if elpv:  # both labelling rules from the same scores; "clear" first, it is the paper's column
            clear = np.array([s.meta["probability"] in (0.0, 1.0) for s in samples])
            results.append(result.restrict(clear, f"{name} (clear)"))
        results.append(result)
    with _output(args) as (say, doc):
        doc.update(command="eval zero-shot", preset=args.preset, results=[])
        for result in results:
            rows, cols, summary = result.per_class_rows(), result.columns(), result.summary()
            say(f"zero-shot {result.dataset}: {result.n} images ({int(result.labels.sum())} anomalous), "
                f"{result.label}; averaging: {result.averaging}")
            say(markdown_table(cols, [[r[c] for c in cols] for r in rows]))
            say(f"image AUROC (macro over classes) {result.image_auroc_macro:.4f}; F1-max (macro) "
                f"{result.f1_max_macro:.4f}; AP (macro) {result.image_ap_macro:.4f}"
                + ("" if result.pixel_auroc_macro is None else f"; pixel AUROC (macro) {result.pixel_auroc_macro:.4f}")
                + ("" if summary["pixel_AUPRO"] is None else f"; pixel AUPRO (macro) {summary['pixel_AUPRO']:.4f}"))
            say()
            doc["results"].append({
                "dataset": result.dataset, "method": result.method, "label": result.label, "n": result.n,
                "anomalous": int(result.labels.sum()), "averaging": result.averaging, **summary,
                # the keys before anomalib's names, kept as aliases (runners.ALIASES)
                "image_auroc_macro": result.image_auroc_macro, "f1_max_macro": result.f1_max_macro,
                "pixel_auroc_macro": result.pixel_auroc_macro, "pooled_auroc": result.pooled_auroc,
                "per_class": [{**r, **{old: r[new] for old, new in ALIASES.items()}} for r in rows]})
        table = compare_zero_shot(results)
        say(table.to_markdown())
        say("\n".join(f"- {n}" for n in table.notes))
        doc.update(paper_table=_table(table), report=None, files={})
        if args.out:
            files = write_report(results if len(results) > 1 else results[0], args.out)
            say(f"\nreport: {files['markdown']}")
            doc.update(report=files["markdown"], files=_files(files))
    return 0


def cmd_photo_check(args, tools) -> int:
    from .report import markdown_table
    from .runners import photo_check

    model = _model(args, tools)
    header = ["photo", "clean", "damaged", "clean flagged", "damage raises"]
    with _output(args) as (say, doc):
        doc.update(command="eval photo-check", preset=args.preset, results=[])
        for method in dict.fromkeys(args.method):
            r = photo_check(model, method)
            cal = "calibrated" if r.calibrated else "uncalibrated"
            say(f"{method}: threshold {r.threshold:.3f} ({cal}); clean photos called anomalous: "
                f"{len(r.clean_flagged)} of {len(r.names)}; damaged copies above their original: {r.raised} of "
                f"{len(r.names)}")
            say(markdown_table(header, r.rows()))
            say()
            doc["results"].append({
                "method": method, "threshold": r.threshold, "calibrated": r.calibrated, "n": len(r.names),
                "clean_flagged": r.clean_flagged, "raised": r.raised,
                "photos": [{"photo": n, "clean": float(c), "damaged": float(d), "clean_flagged": bool(c >= r.threshold),
                            "damage_raises": bool(d > c)} for n, c, d in zip(r.names, r.clean, r.damaged)]})
    return 0


def cmd_calibrate(args, tools) -> int:
    from .calibrate import calibrate, validation_samples

    for flag in ("--n-normal", "--n-anomalous", "--batch-size"):
        validate.count(getattr(args, flag[2:].replace("-", "_")), flag)
    if os.path.isdir(args.out):
        raise tools.UsageError(f"--out {args.out}: is a folder; give a file name")
    samples = validation_samples(args.n_normal, args.n_anomalous, args.seed)
    model = _model(args, tools)
    cal = calibrate(model, samples, args.method, batch_size=args.batch_size, progress=not args.no_progress)
    path = cal.save(args.out)
    with _output(args) as (say, doc):
        for name, m in cal.methods.items():
            say(f"{name:12s} threshold {m.threshold:.4f}  logistic centre {m.centre:.4f} scale {m.scale:.4f}")
        say(f"{cal.source}\n→ {path}")
        doc.update(command="eval calibrate", preset=args.preset, source=cal.source, path=path,
                   methods={name: {"threshold": m.threshold, "centre": m.centre, "scale": m.scale}
                            for name, m in cal.methods.items()})
    return 0


def cmd_visa_dr(args, tools) -> int:
    from . import official
    from .judge import OpenAIJudge
    from .paper import compare_visa_dr
    from .report import write_report
    from .runners import VisaDRResult, load_benchmark, visa_dr_detection, visa_dr_reasoning

    for flag in ("--max-new-tokens", "--detection-tokens", "--batch-size"):
        if getattr(args, flag[2:].replace("-", "_")) is not None:
            validate.count(getattr(args, flag[2:].replace("-", "_")), flag)
    batch = args.batch_size  # None: the protocol's (official 1, kit 8)
    args.batch_size = batch or 1  # _check wants a number
    _check(args, tools)
    if bool(args.judge_url) != bool(args.judge_model):
        raise tools.UsageError("--judge-url and --judge-model go together")
    if not os.path.exists(args.benchmark):
        raise tools.UsageError(f"{args.benchmark}: no such benchmark file or folder")
    # references are needed only to score reasoning: a questions-only file is read, its answers not scored
    bench = load_benchmark(args.benchmark, limit=args.limit, seed=args.seed, require_answers=False)
    name = official.choose_protocol(bench) if args.protocol == "auto" else args.protocol
    p = official.with_overrides(name, rule=args.rule, detection_tokens=args.detection_tokens,
                                reasoning_tokens=args.max_new_tokens, batch_size=batch)
    judge = None
    if args.judge_url:
        judge = OpenAIJudge(args.judge_url, args.judge_model, api_key=os.environ.get(args.judge_key_env))
    print(f"VisA-D&R protocol {p.name}" + (" (auto: the benchmark's layout)" if args.protocol == "auto" else "")
          + f": at most {p.detection_tokens}/{p.reasoning_tokens} new tokens (detection/reasoning), "
          f"{p.batch_size} image(s) per call", file=sys.stderr)
    model = _model(args, tools)
    progress = not args.no_progress
    det = visa_dr_detection(model, bench, progress=progress, protocol=p) if list(bench.detection) else None
    rea = None
    if not args.no_reasoning and list(bench.reasoning):
        if all(official.skipped(it, p) for it in bench.reasoning):
            print(f"reasoning: all {len(bench.reasoning)} items are on the skip list ({', '.join(p.skip)}); "
                  "none asked", file=sys.stderr)
        else:
            rea = visa_dr_reasoning(model, bench, judge=judge, progress=progress, protocol=p, batch_size=p.batch_size)
    if det is None and rea is None:
        raise tools.UsageError(f"{args.benchmark}: nothing to evaluate (no detection items"
                               + (")" if args.no_reasoning else " and no reasoning item left to ask)"))
    with _output(args) as (say, doc):
        say(f"protocol {p.name}" + (" (auto: the benchmark's layout)" if args.protocol == "auto" else ""))
        if det is not None:
            for rule, m in det.macro.items():
                say(f"detection [{rule}] " + " ".join(f"{k} {v:.3f}" for k, v in m.items()) + " (macro over classes)")
            say(f"answers the two parsers read differently: {len(det.differences)}")
        doc.update(command="eval visa-dr", preset=args.preset, benchmark=str(args.benchmark), protocol=p.name,
                   deviations=official.deviations(p, sum(r.clipped for r in (det, rea) if r is not None),
                                                  any(r.single_view for r in (det, rea) if r is not None)),
                   detection=None if det is None else {
                       "rule": det.rule, "n": len(det.answers), "averaging": det.averaging, "macro": det.macro,
                       "per_class": det.per_class, "differences": len(det.differences)},
                   reasoning=None)
        if rea is not None:
            for kind, s in rea.summary.items():
                vals = " ".join(f"{k} {'-' if s[k] is None else format(s[k], '.3f')}" for k in ("rouge_l", "sbert", "gpt"))
                say(f"reasoning [{kind}] {vals} n {s['n']}")
            if rea.skipped:
                say(f"reasoning items skipped ({', '.join(p.skip)}): {len(rea.skipped)}")
            if rea.unscored:
                say(f"reasoning answers without a reference (not scored): {rea.unscored}")
            say(f"GPT-score judge: {rea.judge_name or 'none'}")
            doc["reasoning"] = {"n": len(rea.records), "averaging": rea.averaging, "summary": rea.summary,
                                "judge": rea.judge_name, "judge_failures": rea.judge_failures,
                                "skipped": rea.skipped, "unscored": rea.unscored}
        say()
        table = compare_visa_dr(det, rea)
        say(table.to_markdown())
        doc.update(paper_table=_table(table), report=None, files={})
        if args.out:
            result = VisaDRResult(det, rea, source=str(args.benchmark), protocol=p,
                                  size=args.size or official.size_tag(args.preset))
            files = write_report(result, args.out)
            say(f"\nreport: {files['markdown']}")
            doc.update(report=files["markdown"], files=_files(files))
    return 0


def cmd_facts(args, tools) -> int:
    import random

    from ..data.loaders import load_mvtec
    from .facts import fact_check
    from .report import markdown_table

    _check(args, tools)
    validate.count(args.max_new_tokens, "--max-new-tokens")
    samples = load_mvtec(_folder(args.mvtec, "--mvtec", tools), split="test")
    if args.limit is not None and args.limit < len(samples):
        samples = sorted(random.Random(args.seed).sample(samples, args.limit), key=lambda s: str(s.id))
    model = _model(args, tools)
    res = fact_check(model, samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                     progress=not args.no_progress, seed=args.seed)
    d = res.detection
    summary = {"detection": d, "family_rate": res.family_rate, "location_rate": res.location_rate,
               "rouge_l": res.rouge_l, "per_class": res.per_class}
    with _output(args) as (say, doc):
        say(f"{len(res.rows)} images ({sum('answer' in r for r in res.rows)} described), "
            f"macro over {len(res.per_class)} classes:")
        say(f"  Yes/No detection: accuracy {d['accuracy']:.3f}  precision {d['precision']:.3f}  "
            f"recall {d['recall']:.3f}  F1 {d['f1']:.3f}")
        say(f"  descriptions naming the defect family {res.family_rate:.1%}, the location {res.location_rate:.1%}; "
            f"ROUGE-L {res.rouge_l:.3f}")
        say(markdown_table(["class", "F1", "accuracy"], [[c, f"{m['f1']:.3f}", f"{m['accuracy']:.3f}"]
                                                          for c, m in res.per_class.items()]))
        doc.update(command="eval facts", preset=args.preset, n=len(res.rows), **summary)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, "facts.json")
            with open(path, "w") as fh:
                json.dump(jsonable({**summary, "rows": res.rows}), fh, indent=1)
            say(f"→ {path}")
            doc["files"] = [path]
    return 0
