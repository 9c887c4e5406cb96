"""Evaluation reports: CSV + markdown + figures for each runner's result (docs/architecture.md §7).

    write_report(result, out_dir) → {name: path}

    ZeroShotResult   scores.csv (one row per image), per_class.csv, paper_table2.csv,
                     roc.png and pr.png (image ROC and precision-recall per class),
                     per_class.png (AUROC bars), report.md (summary under anomalib's metric
                     names, per-class table, the paper's Table 2 with an "adkit <preset>" row);
                     with masks also pixel_curves.png (pixel ROC, PR and the PRO curve up to
                     its FPR limit, per class) and localisation.png (the best and the worst
                     localised image: image | map | mask predicted at the pixel-F1-max
                     threshold | ground truth)
    DetectionResult  answers.csv, per_class.csv (both parser rules), confusion.png,
                     per_class.png, report.md (rules side by side, answers where they differ)
    ReasoningResult  answers.csv (every turn: answer, reference, ROUGE-L, SBERT, GPT-score),
                     summary.csv, turns.png, report.md (summary, best / worst answers)
    VisaDRResult     detection/ and reasoning/ as above + paper_table4.csv, report.md (the
                     protocol and its deviations from the official scripts, the paper's Table 4
                     with an "adkit <preset>" row) and the official scripts' result files
                     detection_results_<size>.json, reasoning_results_<size>.json (adkit/eval/official.py)

Figures are built as bare matplotlib ``Figure`` objects (no pyplot, no display needed, the
caller's backend untouched) and written as PNG.

The paper's GPT-score columns hold only scores from a real judge model. A judge whose name marks
it as a toy or offline stand-in (`is_toy_judge`: "toy", "offline", "overlap", "not a gpt") gets its
own, labelled columns ("... toy judge (not GPT-4)") in `visa_dr_table` and a labelled column in
the reasoning report, never the paper's "GPT" ones.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import paper
from .runners import DetectionResult, ReasoningResult, VisaDRResult, ZeroShotResult

__all__ = ["write_report", "markdown_table", "is_toy_judge", "visa_dr_table", "TOY_JUDGE_LABEL"]

TOY_JUDGE_MARKERS = ("toy", "offline", "overlap", "not a gpt")
TOY_JUDGE_LABEL = "toy judge (not GPT-4)"


def is_toy_judge(name: str | None) -> bool:
    """True when a judge's name marks it as a toy / offline stand-in, whose scores are no GPT-score."""
    return bool(name) and any(m in str(name).casefold() for m in TOY_JUDGE_MARKERS)


def visa_dr_table(detection: Any = None, reasoning: Any = None, label: str | None = None) -> paper.PaperTable:
    """`paper.compare_visa_dr`, except that a toy judge's scores move out of the paper's GPT columns
    into their own columns labelled `TOY_JUDGE_LABEL` (blank for the paper's rows)."""
    table = paper.compare_visa_dr(detection, reasoning, label)
    if reasoning is None or not is_toy_judge(getattr(reasoning, "judge_name", None)):
        return table
    moves = {f"{kind} GPT": f"{kind} {TOY_JUDGE_LABEL}" for kind in ("low-level", "complex")}
    columns = list(table.columns) + [new for new in moves.values() if new not in table.columns]
    rows = [{c: r.get(c) for c in columns} for r in table.rows]
    ours = rows[-1]
    for old, new in moves.items():
        ours[new], ours[old] = ours.get(old), None
    note = (f"{ours[table.columns[0]]}: the judge {reasoning.judge_name!r} is a toy stand-in, not GPT-4: its scores "
            f"sit in the '{TOY_JUDGE_LABEL}' columns and the paper's GPT columns stay blank")
    notes = [n.replace(f"GPT-score judge {reasoning.judge_name}", f"judge {reasoning.judge_name}") for n in table.notes]
    return paper.PaperTable(table.title, columns, rows, table.source, notes + [note])


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub markdown table; floats to ``digits`` decimals, None as a blank cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def _subplots(*grid, figsize, **kw):
    """``(figure, axes)`` like pyplot's ``subplots``, built without pyplot: the caller's backend is
    never switched (a notebook keeps drawing inline) and no figure stays registered."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _bars(names: Sequence[str], values: Sequence[float], title: str, ylabel: str, path: Path, ref: float | None = None):
    fig, ax = _subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.2))
    ax.bar(range(len(names)), values, color="#4C72B0")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    if ref is not None:
        ax.axhline(ref, color="grey", ls="--", lw=1, label=f"chance {ref:g}")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- zero-shot

def _zero_shot(r: ZeroShotResult, out: Path) -> dict[str, Path]:
    files = {"scores": _csv(out / "scores.csv", ["id", "category", "label", "score"],
                            [[i, c, int(y), float(s)] for i, c, y, s in zip(r.ids, r.categories, r.labels, r.scores)])}
    rows = r.per_class_rows()
    cols = r.columns()
    files["per_class"] = _csv(out / "per_class.csv", cols, [[row[c] for c in cols] for row in rows])
    table = paper.compare_zero_shot(r)
    files["paper_table"] = out / "paper_table2.csv"
    files["paper_table"].write_text(table.to_csv(), encoding="utf-8")

    fig, ax = _subplots(figsize=(4.6, 4.2))
    for c, (fpr, tpr, _) in r.roc.items():
        ax.plot(fpr, tpr, drawstyle="steps-post", label=f"{c} ({r.image_auroc[c]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC per class, {r.dataset} (adkit {r.preset})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    files["roc"] = _save(fig, out / "roc.png")
    fig, ax = _subplots(figsize=(4.6, 4.2))
    for c, (precision, recall, _) in r.pr.items():
        # steps-pre: precision P_k over (R_k-1, R_k], the rectangles that AP sums
        ax.plot(recall, precision, drawstyle="steps-pre", label=f"{c} (AP {r.image_ap[c]:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"precision-recall per class, {r.dataset}", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    files["pr"] = _save(fig, out / "pr.png")
    names = list(r.image_auroc)
    files["per_class_fig"] = _bars(names, [r.image_auroc[c] for c in names], f"image AUROC per class, {r.dataset}",
                                   "AUROC", out / "per_class.png", ref=0.5)
    figures = "![ROC curves](roc.png) ![precision-recall curves](pr.png) ![AUROC per class](per_class.png)"
    if r.pixel:
        files["pixel_curves"] = _pixel_curves(r, out / "pixel_curves.png")
        figures += "\n\n## Localisation\n\n![pixel ROC, PR and PRO curves](pixel_curves.png)"
    if r.examples:
        files["localisation"] = _localisation_panel(r, out / "localisation.png")
        figures += ("\n\nBest and worst localised anomalous image (pixel F1 of the mask predicted at the class's "
                    "pixel-F1-max threshold):\n\n![localisation panel](localisation.png)")

    summary = r.summary()
    lines = [f"# Zero-shot detection: {r.dataset} ({r.label})", "",
             f"`model.detect(method={r.method!r})`, {r.n} images ({int(r.labels.sum())} anomalous), "
             f"{len(set(r.categories))} class(es). Averaging: {r.averaging}.", "",
             markdown_table(["metric", "key", "value"], [
                 *[[_DESCRIBE[k], f"`{k}`", v] for k, v in summary.items() if v is not None],
                 ["image AUROC, all images pooled (not the paper's averaging)", "`pooled_auroc`", r.pooled_auroc]]), "",
             *([f"Pixel metrics on maps and masks at most {_px(r)} px on the long side; AUPRO up to FPR "
                f"{next(iter(r.pixel.values())).fpr_limit:g}, {next(iter(r.pixel.values())).connectivity}-connected "
                "ground-truth regions (MVTec AD).", ""] if r.pixel else []),
             "## Per class", "", markdown_table(cols, [[row[c] for c in cols] for row in rows]), "",
             figures, "",
             "## Against the paper (Table 2, image AUROC %)", "", table.to_markdown(), "",
             *[f"- {n}" for n in table.notes], f"- source: {table.source}", ""]
    if "expert" in getattr(r, "untrained", ()):
        lines += [f"Note: the `{r.preset}` preset's expert was untrained (random weights) in this run, so an AUROC "
                  "near 0.5 is expected; the paper's figures are for trained experts.", ""]
    files["markdown"] = out / "report.md"
    files["markdown"].write_text("\n".join(lines), encoding="utf-8")
    return files


_DESCRIBE = {
    "image_AUROC": "image AUROC (macro over classes)", "image_AP": "image AP (macro over classes)",
    "image_F1Max": "image F1-max (macro over classes)", "pixel_AUROC": "pixel AUROC (macro over classes with masks)",
    "pixel_AP": "pixel AP (macro over classes with masks)",
    "pixel_F1Max": "pixel F1-max (macro over classes with masks)",
    "pixel_AUPRO": "pixel AUPRO (macro over classes with masks)",
}


def _px(r: ZeroShotResult) -> int:
    """The long side the pixel metrics were computed at (the examples' map size)."""
    return max(max(e.anomaly_map.shape) for ex in r.examples.values() for e in ex) if r.examples else 0


def _pixel_curves(r: ZeroShotResult, path: Path) -> Path:
    """Pixel ROC, pixel precision-recall and PRO curves per class with masks (thinned points)."""
    fig, axes = _subplots(1, 3, figsize=(12.0, 3.9))
    limit = next(iter(r.pixel.values())).fpr_limit
    for c, p in r.pixel.items():
        axes[0].plot(*p.roc, label=f"{c} ({p.auroc:.3f})")
        axes[1].plot(*p.pr, label=f"{c} (AP {p.ap:.3f})")
        axes[2].plot(*p.pro, label=f"{c} (AUPRO {p.aupro:.3f})")
    axes[0].plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    axes[2].axvline(limit, color="grey", ls="--", lw=1)
    axes[2].set_xlim(0, min(1.0, 2 * limit))
    for ax, (x, y, title) in zip(axes, (("false positive rate", "true positive rate", "pixel ROC"),
                                        ("recall", "precision", "pixel precision-recall"),
                                        ("false positive rate", "per-region overlap",
                                         f"PRO (AUPRO: area to FPR {limit:g})"))):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title}, {r.dataset}", fontsize=9)
        ax.legend(fontsize=6)
    return _save(fig, path)


def _localisation_panel(r: ZeroShotResult, path: Path) -> Path:
    """Rows: the best and the worst localised image over all classes; columns: image | map |
    predicted mask (map >= the class's pixel-F1-max threshold) | ground truth."""
    examples = [e for ex in r.examples.values() for e in ex]
    picks = [max(examples, key=lambda e: e.f1), min(examples, key=lambda e: e.f1)]
    fig, axes = _subplots(len(picks), 4, figsize=(9.6, 2.6 * len(picks)), squeeze=False)
    for row, (e, kind) in zip(axes, zip(picks, ("best", "worst"))):
        vmin, vmax = float(e.anomaly_map.min()), float(e.anomaly_map.max())
        panels = ((e.image, None, f"{kind}: {e.id}"), (e.anomaly_map, "inferno", "anomaly map"),
                  (e.predicted, "gray", f"predicted (>= {e.threshold:.3g}), F1 {e.f1:.2f}"),
                  (e.mask, "gray", f"ground truth ({e.category})"))
        for ax, (img, cmap, title) in zip(row, panels):
            ax.imshow(img, cmap=cmap, vmin=(vmin if cmap == "inferno" else 0 if cmap else None),
                      vmax=(vmax if cmap == "inferno" else 1 if cmap else None), interpolation="nearest")
            ax.set_title(title if len(title) <= 42 else "…" + title[-41:], fontsize=7)
            ax.set_axis_off()
    fig.suptitle(f"localisation, {r.dataset} ({r.label})", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------- detection

_METRICS = ("accuracy", "precision", "recall", "f1")


def _detection(r: DetectionResult, out: Path, title: bool = True) -> tuple[dict[str, Path], str]:
    from .metrics import parse_yes_no

    images = r.images or [""] * len(r.answers)
    files = {"answers": _csv(out / "answers.csv", ["index", "image", "category", "label", "answer", "first_word",
                                                   "official_substring"],
                             [[i, im, c, int(y), a, parse_yes_no(a, "first_word"),
                               parse_yes_no(a, "official_substring")]
                              for i, (im, c, y, a) in enumerate(zip(images, r.categories, r.labels, r.answers))])}
    rows = [[rule, c, *[s[k] for k in _METRICS], s["tp"], s["fp"], s["tn"], s["fn"], s["unparsed"], s["n"]]
            for rule, by_class in r.per_class.items() for c, s in by_class.items()]
    header = ["rule", "class", *_METRICS, "tp", "fp", "tn", "fn", "unparsed", "n"]
    files["per_class"] = _csv(out / "per_class.csv", header, rows)

    per = r.per_class[r.rule]
    tp, fp, tn, fn = (sum(s[k] for s in per.values()) for k in ("tp", "fp", "tn", "fn"))
    fig, ax = _subplots(figsize=(3.4, 3.0))
    cm = np.array([[tn, fp], [fn, tp]])  # rows: truth normal/anomalous; cols: predicted
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set_xticks([0, 1], ["normal", "anomalous"])
    ax.set_yticks([0, 1], ["normal", "anomalous"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(f"confusion, rule {r.rule}", fontsize=9)
    files["confusion"] = _save(fig, out / "confusion.png")
    names = list(per)
    files["per_class_fig"] = _bars(names, [per[c]["f1"] for c in names], f"F1 per class (rule {r.rule})", "F1",
                                   out / "per_class.png")

    lines = ([f"# VisA-D&R detection (adkit {r.preset})", ""] if title else ["## Detection", ""])
    lines += [f"{len(r.answers)} answers, greedy decoding. Headline rule `{r.rule}`. Averaging: {r.averaging}.", "",
              markdown_table(["rule", *_METRICS, "unparsed"],
                             [[rule, *[m[k] for k in _METRICS], sum(s["unparsed"] for s in r.per_class[rule].values())]
                              for rule, m in r.macro.items()]), "",
              f"The rules parse {len(r.differences)} answer(s) differently (`official_substring` matches "
              "\"yes\" anywhere, e.g. inside \"eyes\"; `first_word` reads only the first word):", ""]
    if r.differences:
        lines += [markdown_table(["index", "class", "label", "answer", "first_word", "official_substring"],
                                 [[d["index"], d["category"], d["label"], d["answer"], d["first_word"],
                                   d["official_substring"]] for d in r.differences[:20]]), ""]
    lines += ["![confusion](confusion.png) ![F1 per class](per_class.png)", ""]
    return files, "\n".join(lines)


# ---------------------------------------------------------------------------- reasoning

def _reasoning(r: ReasoningResult, out: Path, title: bool = True, examples: int = 3) -> tuple[dict[str, Path], str]:
    cols = ["item", "image", "category", "turn", "kind", "question", "reference", "answer", "rouge_l", "sbert", "gpt",
            "judge_raw"]
    files = {"answers": _csv(out / "answers.csv", cols, [[rec.get(c) for c in cols] for rec in r.records])}
    kinds = list(r.summary)
    files["summary"] = _csv(out / "summary.csv", ["kind", "rouge_l", "sbert", "gpt", "n", "judge"],
                            [[k, r.summary[k]["rouge_l"], r.summary[k]["sbert"], r.summary[k]["gpt"], r.summary[k]["n"],
                              r.judge_name] for k in kinds])
    turns = sorted({rec["turn"] for rec in r.records})
    fig, ax = _subplots(figsize=(4.5, 3.0))
    for key in ("rouge_l", "sbert"):
        means = [[x[key] for x in r.records if x["turn"] == t and x[key] is not None] for t in turns]
        ax.plot(turns, [np.mean(m) if m else np.nan for m in means], marker="o", label=key)  # unscored: no point
    ax.set_xticks(turns)
    ax.set_xlabel("turn (0 = low-level, later = complex)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("mean score per turn", fontsize=10)
    files["turns"] = _save(fig, out / "turns.png")

    key = "gpt" if r.judge_name and any(x["gpt"] is not None for x in r.records) else "sbert"
    toy = is_toy_judge(r.judge_name)
    judge_col = f"judge score, {TOY_JUDGE_LABEL}" if toy else "GPT-score"
    shown = "toy judge" if toy and key == "gpt" else key  # a toy judge's score is never called "gpt"
    ranked = sorted((x for x in r.records if x[key] is not None), key=lambda x: x[key])
    lines = ([f"# VisA-D&R reasoning (adkit {r.preset})", ""] if title else ["## Reasoning", ""])
    lines += [f"{len(r.records)} answers (multi-turn, the model's own answers as history). Averaging: {r.averaging}. "
              + (f"Judge: {r.judge_name}, a {TOY_JUDGE_LABEL}: its scores are no GPT-score" if toy
                 else f"GPT-score judge: {r.judge_name or 'none'}")
              + (f" ({r.judge_failures} failed call(s))" if r.judge_failures else "") + ".", "",
              markdown_table(["kind", "ROUGE-L", "SBERT", judge_col, "answers"],
                             [[k, r.summary[k]["rouge_l"], r.summary[k]["sbert"], r.summary[k]["gpt"], r.summary[k]["n"]]
                              for k in kinds]), "", "![scores per turn](turns.png)", ""]
    for name, picks in (("Best", ranked[::-1][:examples]), ("Worst", ranked[:examples])):
        lines += [f"### {name} answers (by {shown})", ""]
        for x in picks:
            lines += [f"- **item {x['item']} ({x['category']}), turn {x['turn']}** — {shown} {x[key]:.3f}",
                      f"  - question: {_fmt(x['question'])}", f"  - reference: {_fmt(x['reference'])}",
                      f"  - answer: {_fmt(x['answer']) or '(empty)'}"]
        lines.append("")
    return files, "\n".join(lines)


def write_report(result, out_dir) -> dict[str, Path]:
    """Write CSVs, figures and ``report.md`` for a runner's result into ``out_dir`` (created)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(result, ZeroShotResult):
        return _zero_shot(result, out)
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, ZeroShotResult) for r in result):
        return _zero_shot_runs(list(result), out)
    if isinstance(result, (DetectionResult, ReasoningResult)):
        files, text = (_detection if isinstance(result, DetectionResult) else _reasoning)(result, out)
        files["markdown"] = out / "report.md"
        files["markdown"].write_text(text, encoding="utf-8")
        return files
    if isinstance(result, VisaDRResult):
        files: dict[str, Path] = {}
        from .official import official_size, protocol_header, write_official

        parts = [f"# VisA-D&R (adkit {(result.detection or result.reasoning).preset})", ""]
        if result.source:
            parts += [f"Benchmark: `{result.source}`", ""]
        parts += protocol_header(result)  # the protocol and every deviation from the official scripts
        files.update(write_official(result, out, result.size or official_size(result)))
        table = visa_dr_table(result.detection, result.reasoning)
        files["paper_table"] = out / "paper_table4.csv"
        files["paper_table"].write_text(table.to_csv(), encoding="utf-8")
        parts += ["## Against the paper (Table 4)", "", table.to_markdown(), "", *[f"- {n}" for n in table.notes],
                  f"- source: {table.source}", ""]
        for name, part, fn in (("detection", result.detection, _detection), ("reasoning", result.reasoning, _reasoning)):
            if part is not None:
                sub = out / name
                sub.mkdir(exist_ok=True)
                f, text = fn(part, sub, title=False)
                files.update({f"{name}_{k}": v for k, v in f.items()})
                parts.append(text.replace("](", f"]({name}/"))
        files["markdown"] = out / "report.md"
        files["markdown"].write_text("\n".join(parts), encoding="utf-8")
        return files
    raise TypeError(f"write_report: no report for {type(result).__name__}; expected ZeroShotResult (or a "
                    "list of them), DetectionResult, ReasoningResult or VisaDRResult")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-").replace("--", "-")


def _zero_shot_runs(results: list[ZeroShotResult], out: Path) -> dict[str, Path]:
    """Several methods / protocols: one sub-report each, and their rows beside Table 2."""
    files: dict[str, Path] = {}
    rows = []
    for r in results:
        sub = out / _slug(f"{r.dataset}-{r.method}")
        sub.mkdir(exist_ok=True)
        files.update({f"{sub.name}/{k}": v for k, v in _zero_shot(r, sub).items()})
        s = r.summary()
        rows.append([r.dataset, r.method, r.label.split(" · ", 1)[1], r.n, int(r.labels.sum()), s["image_AUROC"],
                     r.pooled_auroc, s["image_F1Max"], s["image_AP"], s["pixel_AUROC"], s["pixel_AP"], s["pixel_F1Max"],
                     s["pixel_AUPRO"], f"[report]({sub.name}/report.md)"])
    header = ["dataset", "method", "setting", "n", "anomalous", "image_AUROC", "pooled_auroc", "image_F1Max", "image_AP",
              "pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO", "details"]
    files["summary"] = _csv(out / "summary.csv", header[:-1], [row[:-1] for row in rows])
    table = paper.compare_zero_shot(results)
    files["paper_table"] = out / "paper_table2.csv"
    files["paper_table"].write_text(table.to_csv(), encoding="utf-8")
    lines = [f"# Zero-shot detection (adkit {results[0].preset})", "", f"Averaging: {results[0].averaging}.", "",
             markdown_table(header, rows), "", "## Against the paper (Table 2, image AUROC %)", "", table.to_markdown(),
             "", *[f"- {n}" for n in table.notes], f"- source: {table.source}", ""]
    files["markdown"] = out / "report.md"
    files["markdown"].write_text("\n".join(lines), encoding="utf-8")
    return files
