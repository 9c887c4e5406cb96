"""adkit.eval.report.write_report: CSV + markdown + figures for every runner result (docs/architecture.md §7)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from adkit.data import AnomalySample
from adkit.eval.report import markdown_table, write_report
from adkit.eval.runners import ReasoningResult, VisaDRResult, detection_summary, zero_shot


def _nonempty(files):
    for name, path in files.items():
        assert path.is_file() and path.stat().st_size > 0, name
        if path.suffix == ".png":
            with Image.open(path) as im:
                assert im.format == "PNG" and im.width > 50


@pytest.fixture(scope="module")
def zs(tiny):
    rng = np.random.default_rng(3)
    samples = [AnomalySample(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), i % 2, "ab"[i // 4], id=f"s{i}")
               for i in range(8)]
    return zero_shot(tiny, samples, batch_size=8, progress=False, dataset="ELPV")


def test_zero_shot_report(zs, tmp_path):
    files = write_report(zs, tmp_path / "zs")
    assert {"scores", "per_class", "paper_table", "roc", "per_class_fig", "markdown"} <= set(files)
    _nonempty(files)
    rows = list(csv.DictReader(open(files["scores"])))
    assert [r["id"] for r in rows] == zs.ids and float(rows[3]["score"]) == pytest.approx(zs.scores[3])
    md = files["markdown"].read_text()
    assert "| Anomaly-OV expert | 94.0 | 91.1 | 72.0 | 83.0 |" in md  # the paper's Table 2 ...
    assert f"| {zs.label} |  |  |  | {100 * zs.image_auroc_macro:.1f} |" in md  # ... with our ELPV figure
    assert "macro over classes" in md and "untrained" in md and "![ROC curves](roc.png)" in md
    per_class = list(csv.DictReader(open(files["per_class"])))
    assert {r["class"] for r in per_class} == {"a", "b"}


def test_detection_report_lists_parser_differences(tmp_path):
    det = detection_summary(["Yes", "No, but the eyes are red", "No", "Yes, a crack"], [1, 0, 0, 1], ["a", "a", "b", "b"],
                            preset="tiny")
    files = write_report(det, tmp_path / "det")
    _nonempty(files)
    md = files["markdown"].read_text()
    assert "No, but the eyes are red" in md and "parse 1 answer(s) differently" in md
    assert "| first_word | 1.000 | 1.000 | 1.000 | 1.000 | 0 |" in md
    assert "| official_substring | 0.750 |" in md


def _reasoning():
    recs = []
    for item, (cat, sims) in enumerate((("a", (0.9, 0.2)), ("b", (0.4, 0.6)))):
        for turn, sim in enumerate(sims):
            recs.append({"item": item, "category": cat, "turn": turn, "kind": "low-level" if turn == 0 else "complex",
                         "question": f"q{turn}", "reference": f"reference {item}-{turn}", "answer": f"answer {item}-{turn}",
                         "rouge_l": sim / 2, "sbert": sim, "gpt": 10 * sim, "judge_raw": str(10 * sim)})
    summary = {"low-level": {"rouge_l": 0.325, "sbert": 0.65, "gpt": 6.5, "n": 2},
               "complex": {"rouge_l": 0.2, "sbert": 0.4, "gpt": 4.0, "n": 2}}
    return ReasoningResult("tiny", "openai:judge", recs, summary)


def test_reasoning_report_best_and_worst(tmp_path):
    files = write_report(_reasoning(), tmp_path / "rea")
    _nonempty(files)
    md = files["markdown"].read_text()
    best, worst = md.index("### Best answers (by gpt)"), md.index("### Worst answers (by gpt)")
    assert md.index("answer 0-0", best) < worst  # gpt 9.0 is the best ...
    assert "answer 0-1" in md[worst:]  # ... and 2.0 the worst
    assert "openai:judge" in md and "| low-level | 0.325 | 0.650 | 6.500 | 2 |" in md


def test_visa_dr_report_has_table4(tmp_path):
    det = detection_summary(["Yes", "No"], [1, 0], ["a", "a"], preset="tiny")
    files = write_report(VisaDRResult(det, _reasoning(), source="bench/"), tmp_path / "dr")
    _nonempty(files)
    md = files["markdown"].read_text()
    assert "| Anomaly-OV-7B | 0.79 | 0.83 | 0.86 | 0.83 | 0.34 |" in md
    assert "| adkit tiny | 1.0 | 1.0 | 1.0 | 1.0 | 0.33 | 0.65 | 6.5 | 0.4 | 4.0 |" in md
    assert "](detection/confusion.png)" in md and (tmp_path / "dr" / "reasoning" / "answers.csv").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="no report for dict"):
        write_report({}, tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_report(_reasoning(), f)
    assert markdown_table(["a", "b"], [[1.23456, None]]) == "| a | b |\n|---|---|\n| 1.235 |  |"


def test_zero_shot_report_with_masks_has_localisation(tiny, tmp_path):
    """Masks: pixel columns in the per-class table, pixel ROC/PR/PRO curves and a panel of the
    best and worst localised image; without masks none of these (test_zero_shot_report)."""
    rng = np.random.default_rng(4)
    samples = []
    for i in range(8):
        mask = None
        if i % 2:
            mask = np.zeros((32, 48), np.uint8)
            mask[4 + i: 12 + i, 3 * i: 3 * i + 10] = 1
        samples.append(AnomalySample(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), i % 2, "ab"[i // 4],
                                     mask=mask, id=f"m{i}"))
    zs = zero_shot(tiny, samples, batch_size=8, progress=False, dataset="toy")
    files = write_report(zs, tmp_path / "zs")
    assert {"pr", "pixel_curves", "localisation"} <= set(files)
    _nonempty(files)
    per_class = {r["class"]: r for r in csv.DictReader(open(files["per_class"]))}
    assert float(per_class["a"]["pixel_AUPRO"]) == pytest.approx(zs.pixel["a"].aupro)
    md = files["markdown"].read_text()
    assert f"| pixel AUPRO (macro over classes with masks) | `pixel_AUPRO` | {zs.summary()['pixel_AUPRO']:.3f} |" in md
    assert "![localisation panel](localisation.png)" in md and "8-connected" in md
    with Image.open(files["localisation"]) as im:
        assert im.width > im.height  # four columns, two rows


def test_zero_shot_report_without_masks_has_no_pixel_parts(zs, tmp_path):
    files = write_report(zs, tmp_path / "zs")
    assert not {"pixel_curves", "localisation"} & set(files) and "pr" in files
    assert "pixel_AUPRO" not in open(files["per_class"]).readline()


def test_toy_judge_never_fills_the_papers_gpt_columns(tmp_path):
    """A toy / offline judge's scores get their own labelled columns, not the paper's GPT-score ones."""
    from adkit.eval.report import TOY_JUDGE_LABEL, is_toy_judge, visa_dr_table

    assert is_toy_judge("toy-word-overlap (not a GPT-score)") and is_toy_judge("offline")
    assert not is_toy_judge("openai:gpt-4o") and not is_toy_judge(None)
    det = detection_summary(["Yes", "No"], [1, 0], ["a", "a"], preset="tiny")
    toy = _reasoning()
    toy.judge_name = "toy-word-overlap (not a GPT-score)"
    table = visa_dr_table(det, toy)
    ours = table.row("adkit tiny")
    assert ours["low-level GPT"] is None and ours["complex GPT"] is None  # the paper's columns stay blank
    assert ours[f"low-level {TOY_JUDGE_LABEL}"] == 6.5 and ours[f"complex {TOY_JUDGE_LABEL}"] == 4.0
    assert table.row("Anomaly-OV-7B")[f"low-level {TOY_JUDGE_LABEL}"] is None
    assert any("not GPT-4" in n for n in table.notes) and not any("GPT-score judge" in n for n in table.notes)
    md = write_report(VisaDRResult(det, toy, source="bench/"), tmp_path / "dr")["markdown"].read_text()
    assert f"| low-level {TOY_JUDGE_LABEL} |" in md and f"judge score, {TOY_JUDGE_LABEL}" in md
    assert "| adkit tiny | 1.0 | 1.0 | 1.0 | 1.0 | 0.33 | 0.65 |  | 0.4 |  | 6.5 | 4.0 |" in md
    assert "(by gpt)" not in md and "(by toy judge)" in md
    # a real judge keeps the paper's columns
    assert visa_dr_table(det, _reasoning()).row("adkit tiny")["low-level GPT"] == 6.5
