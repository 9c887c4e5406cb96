"""The Anomaly-OV paper's published numbers, for side-by-side tables (docs/architecture.md §7).

Packaged copies of the paper's tables live in ``adkit/eval/paper_tables/`` (see SOURCE.md
there: Xu et al., CVPR 2025, arXiv 2502.07601):

    zero_shot_table()          Table 2: zero-shot image AUROC (%) of the expert and peers,
                               8 methods × 9 datasets + avg (per class, then macro over classes)
    visa_dr_table()            Table 4: VisA-D&R detection and reasoning, 12 models
    expert_per_class_table()   Table 8: the expert's per-class AUROC (%) on VisA and MVTec AD

`compare_zero_shot` and `compare_visa_dr` append a row ``"adkit <preset>"`` with the kit's
own figures in the paper's units, filled only for what was evaluated (blank elsewhere).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

__all__ = [
    "PAPER", "PaperTable", "ZERO_SHOT_DATASETS", "VISA_DR_COLUMNS", "EXPERT_VISA_DR_DETECTION",
    "paper_dataset_name", "zero_shot_table", "visa_dr_table", "expert_per_class_table",
    "compare_zero_shot", "compare_visa_dr",
]

PAPER = ("Xu, Lo, Safaei, Patel, Dwivedi: Towards Zero-Shot Anomaly Detection and Reasoning with "
         "Multimodal Large Language Models, CVPR 2025 (arXiv 2502.07601)")
ZERO_SHOT_DATASETS = ("MVTec AD", "VisA", "AITEX", "ELPV", "BTAD", "MPDD", "BrainMRI", "HeadCT", "Br35H")
VISA_DR_COLUMNS = ("acc", "prec", "rec", "F1", "low-level ROUGE-L", "low-level SBERT", "low-level GPT",
                   "complex SBERT", "complex GPT")
#: "The expert alone, thresholded at 0.5, reaches accuracy 0.78 / F1 0.77 on VisA-D&R detection."
EXPERT_VISA_DR_DETECTION = {"acc": 0.78, "F1": 0.77}

_ALIASES = {name.casefold().replace(" ", "").replace("-", "").replace("_", ""): name for name in ZERO_SHOT_DATASETS}
_ALIASES["mvtec"] = "MVTec AD"
# ELPV under the kit's "clear" protocol (p = 0 vs p = 1) fills the paper's column; the "graded"
# protocol (p = 0 vs p > 0) is reported beside it as its own column (adkit.data.elpv.PROTOCOLS)
_ALIASES["elpv(clear)"] = "ELPV"


def paper_dataset_name(name: str) -> str | None:
    """The Table 2 column for a dataset name ("elpv" → "ELPV", "mvtec" → "MVTec AD"), else None."""
    key = str(name).casefold().replace(" ", "").replace("-", "").replace("_", "")
    return _ALIASES.get(key)


@dataclass
class PaperTable:
    """A small table: ``columns`` (the first is the row label), ``rows`` as dicts (None = blank)."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    source: str = PAPER
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return [r[self.columns[0]] for r in self.rows]

    def row(self, model: str) -> dict[str, Any]:
        for r in self.rows:
            if r[self.columns[0]] == model:
                return r
        raise KeyError(f"{model!r} is not a row of {self.title!r}; rows: {self.models}")

    def value(self, model: str, column: str):
        if column not in self.columns:
            raise KeyError(f"{column!r} is not a column of {self.title!r}; columns: {self.columns}")
        return self.row(model).get(column)

    def with_row(self, model: str, values: Mapping[str, Any], note: str | None = None) -> "PaperTable":
        """A copy with one more row; unknown columns are appended (blank for the paper's rows)."""
        columns = list(self.columns) + [k for k in values if k not in self.columns]
        row = {self.columns[0]: model, **{c: values.get(c) for c in columns[1:]}}
        rows = [{c: r.get(c) for c in columns} for r in self.rows] + [row]
        return PaperTable(self.title, columns, rows, self.source, self.notes + ([note] if note else []))

    def to_markdown(self, digits: int | None = None) -> str:
        """GitHub markdown; blanks as empty cells, numbers as published (or to ``digits``)."""
        def cell(v):
            if v is None:
                return ""
            if isinstance(v, float) and digits is not None:
                return f"{v:.{digits}f}"
            return str(v)

        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(r.get(c)) for c in self.columns) + " |" for r in self.rows]
        return "\n".join(lines)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in self.columns])
        return buf.getvalue()


def _read(name: str) -> tuple[list[str], list[dict[str, Any]]]:
    text = resources.files("adkit.eval").joinpath("paper_tables", name).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    rows = []
    for raw in reader:
        row = {}
        for c in columns:
            v = raw[c]
            try:
                row[c] = float(v)
            except ValueError:
                row[c] = v
        rows.append(row)
    return columns, rows


def zero_shot_table() -> PaperTable:
    """Paper Table 2: zero-shot image AUROC (%) per method × dataset, and the average."""
    columns, rows = _read("table2_zero_shot_auroc.csv")
    return PaperTable("Zero-shot image AUROC (%), paper Table 2", columns, rows,
                      notes=["per class, then averaged over classes (macro)",
                             "paper: MVTec AD scored with an expert trained with VisA in place of MVTec"])


def visa_dr_table() -> PaperTable:
    """Paper Table 4: VisA-D&R detection (macro over classes) and reasoning (anomalous images)."""
    columns, rows = _read("table4_visa_dr.csv")
    return PaperTable("VisA-D&R detection and reasoning, paper Table 4", columns, rows,
                      notes=["LLaVA-OV-0.5B* = tuned on Anomaly-Instruct-125k without the expert"])


def expert_per_class_table() -> PaperTable:
    """Paper Table 8: the expert's per-class AUROC (%) on VisA and MVTec AD."""
    columns, rows = _read("table8_expert_per_class.csv")
    return PaperTable("Per-class AUROC (%) of the expert, paper Table 8", columns, rows)


def _as_list(results) -> list:
    if results is None:
        return []
    return list(results) if isinstance(results, (list, tuple)) else [results]


def compare_zero_shot(results: Any, label: str | None = None) -> PaperTable:
    """Table 2 plus one row per scoring method with the kit's macro AUROC (%).

    ``results``: a `ZeroShotResult`, a list of them (one row per method, labelled
    ``"adkit <preset> · <method> (<setting>)"``), or a mapping {dataset: AUROC in [0, 1]} (one row
    ``label``). Datasets named like a Table 2 column fill that column; others become extra
    columns (blank for the paper's rows). "avg" is filled only when all nine were evaluated.
    """
    if isinstance(results, Mapping):
        rows = {label or "adkit model": [(k, float(v)) for k, v in results.items()]}
    else:
        rows = {}
        items = _as_list(results)
        one_method = len({getattr(x, "method", "expert") for x in items}) == 1
        for r in items:
            name = label if label and one_method else getattr(r, "label", None) or f"adkit {r.preset}"
            rows.setdefault(name, []).append((r.dataset, float(r.image_auroc_macro)))
    table = zero_shot_table()
    for name, pairs in rows.items():
        values: dict[str, Any] = {}
        for dataset, value in pairs:
            values[paper_dataset_name(dataset) or dataset] = round(100.0 * value, 1)
        if all(d in values for d in ZERO_SHOT_DATASETS):
            values["avg"] = round(sum(values[d] for d in ZERO_SHOT_DATASETS) / len(ZERO_SHOT_DATASETS), 1)
        table = table.with_row(name, values)
    table.notes.append(f"{', '.join(rows)}: image AUROC (%), macro over classes; blank = not evaluated")
    if any("ELPV" in str(d) for pairs in rows.values() for d, _ in pairs):
        table.notes.append("ELPV (clear): defect probability 0 vs 1, filed under the paper's ELPV column; "
                           "ELPV (graded): 0 vs any graded defect (1/3, 2/3, 1)")
    if any("transductive" in name for name in rows):
        table.notes.append("transductive rows score each test image against the other unlabeled test images "
                           "(no labels); the paper's rows are inductive")
    return table


def compare_visa_dr(detection: Any = None, reasoning: Any = None, label: str | None = None) -> PaperTable:
    """Table 4 plus a row ``label`` from a `DetectionResult` and/or `ReasoningResult` (blank = not run)."""
    values: dict[str, Any] = {}
    preset = None
    if detection is not None:
        m = detection.macro[detection.rule]
        values.update({"acc": m["accuracy"], "prec": m["precision"], "rec": m["recall"], "F1": m["f1"]})
        preset = detection.preset
    if reasoning is not None:
        s = reasoning.summary
        values.update({"low-level ROUGE-L": s["low-level"]["rouge_l"], "low-level SBERT": s["low-level"]["sbert"],
                       "low-level GPT": s["low-level"]["gpt"], "complex SBERT": s["complex"]["sbert"],
                       "complex GPT": s["complex"]["gpt"]})
        preset = preset or reasoning.preset
    values = {k: (None if v is None else round(float(v), 2)) for k, v in values.items()}
    label = label or f"adkit {preset or 'model'}"
    note = f"{label}: macro over classes"
    if detection is not None:
        note += f"; parser {detection.rule!r}"
    if reasoning is not None:
        note += f"; GPT-score judge {reasoning.judge_name or 'none (blank)'}"
    return visa_dr_table().with_row(label, values, note=note)
