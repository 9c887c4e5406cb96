"""``adkit eval ... --json``: one JSON object on stdout holding the numbers the text summary prints
(unrounded) and the files written; checked against the text run and the written report files.
The tiny preset is seeded, so a text run and a --json run score the same."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkit import cli
from adkit.data import AnomalySample


def _run(argv, capsys) -> tuple[str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _md_rows(text: str, first: str) -> list[list[str]]:
    """The cells of each markdown row of ``text`` whose first cell is ``first``."""
    return [_cells(line) for line in text.splitlines() if line.startswith("| ") and _cells(line)[0] == first]


def _f3(v) -> str:
    return "" if v is None else f"{v:.3f}"


@pytest.fixture
def folder_tree(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "widget"
    for group in ("good", "scratch"):
        (root / group).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / group / f"{i:03d}.png")
    return root


def test_zero_shot_json_equals_text_and_report(folder_tree, tmp_path, capsys):
    argv = ["eval", "zero-shot", "--folder", str(folder_tree), "--preset", "tiny", "--method", "expert", "self",
            "--batch-size", "3", "--no-progress"]
    text, _ = _run(argv, capsys)
    out, _ = _run([*argv, "--json", "--out", str(tmp_path / "rep")], capsys)
    doc = json.loads(out)  # stdout is the JSON object and nothing else
    assert doc["command"] == "eval zero-shot" and doc["preset"] == "tiny"
    assert [r["method"] for r in doc["results"]] == ["expert", "self"]
    macro = re.findall(r"image AUROC \(macro over classes\) ([0-9.]+); F1-max \(macro\) ([0-9.]+)", text)
    assert macro == [(f"{r['image_auroc_macro']:.4f}", f"{r['f1_max_macro']:.4f}") for r in doc["results"]]
    for r in doc["results"]:
        assert f"zero-shot {r['dataset']}: {r['n']} images ({r['anomalous']} anomalous), {r['label']}" in text
        for row in r["per_class"]:
            assert [row["class"], str(row["n"]), str(row["anomalous"]), _f3(row["image_auroc"]),
                    _f3(row["f1_max"])] in [cells[:5] for cells in _md_rows(text, row["class"])]
        ours = next(row for row in doc["paper_table"]["rows"] if row["model"] == r["label"])
        shown = dict(zip(doc["paper_table"]["columns"], _md_rows(text, r["label"])[0]))
        assert shown["widget"] == str(ours["widget"]) != ""
        sub = tmp_path / "rep" / f"widget-{r['method']}"  # the written per-method report agrees
        with open(sub / "per_class.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(x["class"], float(x["image_AUROC"]), float(x["image_F1Max"]), float(x["image_AP"])) for x in rows] == \
            [(x["class"], x["image_AUROC"], x["image_F1Max"], x["image_AP"]) for x in r["per_class"]]
        assert "pixel_AUPRO" not in rows[0]  # no masks in this folder: no pixel columns
        for row in r["per_class"]:  # the keys before anomalib's names stay as aliases
            assert (row["image_auroc"], row["f1_max"], row["pixel_auroc"]) == \
                (row["image_AUROC"], row["image_F1Max"], row["pixel_AUROC"])
        assert (r["image_auroc_macro"], r["f1_max_macro"]) == (r["image_AUROC"], r["image_F1Max"])
        assert r["pixel_AUPRO"] is None and 0 <= r["image_AP"] <= 1
    assert doc["report"] == str(tmp_path / "rep" / "report.md") and doc["files"]["markdown"] == doc["report"]
    assert all(Path(p).is_file() for p in doc["files"].values())  # every listed file exists


def test_visa_dr_json_equals_text(tmp_path, capsys):
    from adkit.data.visa_dr import DetectionItem, ReasoningItem, VisaDRBenchmark, write_visa_dr

    rng = np.random.default_rng(4)
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    bench = VisaDRBenchmark([DetectionItem(p, i % 2, "ab"[i // 2]) for i, p in enumerate(paths)],
                            [ReasoningItem(paths[1], "a", [("Describe the defect.", "A scratch."),
                                                           ("Cause?", "Wear.")])], tmp_path)
    write_visa_dr(bench, tmp_path / "bench")
    argv = ["eval", "visa-dr", str(tmp_path / "bench"), "--preset", "tiny", "--max-new-tokens", "4", "--no-progress"]
    text, _ = _run(argv, capsys)
    doc = json.loads(_run([*argv, "--json"], capsys)[0])
    det = doc["detection"]
    assert doc["command"] == "eval visa-dr" and det["n"] == 4 and det["rule"] == "first_word"
    for rule, m in det["macro"].items():
        line = f"detection [{rule}] " + " ".join(f"{k} {v:.3f}" for k, v in m.items()) + " (macro over classes)"
        assert line in text.splitlines()
        assert set(det["per_class"][rule]) == {"a", "b"}
    assert f"answers the two parsers read differently: {det['differences']}" in text
    for kind, s in doc["reasoning"]["summary"].items():
        vals = " ".join(f"{k} {'-' if s[k] is None else format(s[k], '.3f')}" for k in ("rouge_l", "sbert", "gpt"))
        assert f"reasoning [{kind}] {vals} n {s['n']}" in text
    assert doc["reasoning"]["judge"] is None and doc["report"] is None and doc["files"] == {}
    rows = [r for r in doc["paper_table"]["rows"] if r[doc["paper_table"]["columns"][0]] == "adkit tiny"]
    assert len(rows) == 1 and _md_rows(text, "adkit tiny")


def test_photo_check_and_calibrate_json_equal_text(tmp_path, capsys):
    from adkit.calibration import Calibration

    argv = ["eval", "photo-check", "--preset", "tiny", "--method", "self"]
    text, _ = _run(argv, capsys)
    doc = json.loads(_run([*argv, "--json"], capsys)[0])
    (r,) = doc["results"]
    assert f"self: threshold {r['threshold']:.3f}" in text
    assert (f"clean photos called anomalous: {len(r['clean_flagged'])} of {r['n']}; damaged copies above their "
            f"original: {r['raised']} of {r['n']}") in text
    for p in r["photos"]:
        assert _md_rows(text, p["photo"]) == [[p["photo"], _f3(p["clean"]), _f3(p["damaged"]),
                                               "yes" if p["clean_flagged"] else "", "yes" if p["damage_raises"] else "no"]]
    assert r["raised"] == sum(p["damage_raises"] for p in r["photos"])

    argv = ["eval", "calibrate", "--preset", "tiny", "--method", "expert", "self", "--n-normal", "2",
            "--n-anomalous", "2", "--no-progress"]
    text, _ = _run([*argv, "--out", str(tmp_path / "a.json")], capsys)
    doc = json.loads(_run([*argv, "--out", str(tmp_path / "b.json"), "--json"], capsys)[0])
    saved = Calibration.load(doc["path"])
    assert doc["path"] == str(tmp_path / "b.json") and doc["source"] == saved.source
    for name, m in doc["methods"].items():
        assert (m["threshold"], m["centre"], m["scale"]) == pytest.approx(
            (saved.methods[name].threshold, saved.methods[name].centre, saved.methods[name].scale))
        assert (f"{name:12s} threshold {m['threshold']:.4f}  logistic centre {m['centre']:.4f} "
                f"scale {m['scale']:.4f}") in text
    assert set(doc["methods"]) == {"expert", "self"}


def test_json_run_errors_stay_one_line(tmp_path, capsys):
    assert cli.main(["eval", "zero-shot", "--folder", str(tmp_path / "nope"), "--preset", "tiny", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("adkit: error:") and captured.err.count("\n") == 1


def test_zero_shot_on_an_mvtec_tree_with_masks_reports_aupro(tiny, tmp_path, capsys):
    """An MVTec AD layout (<cat>/test/<defect>/*.png + <cat>/ground_truth/<defect>/*_mask.png) of
    synthetic defects: the JSON carries pixel_AUPRO (= localisation.aupro of the model's maps and
    the masks), the text and per_class.csv agree, and the localisation panel is written."""
    from adkit.data import load_mvtec
    from adkit.data.samples import write_tree
    from adkit.data.synth import DEFECT_FAMILIES, synthesize
    from adkit.eval.localisation import aupro

    rng = np.random.default_rng(5)
    samples = []
    for i in range(7):
        base = Image.fromarray(rng.integers(90, 160, (64, 64, 3), dtype=np.uint8))
        if i < 3:
            samples.append(AnomalySample(base, 0, "tile", id=f"ok{i}"))
        else:
            d = synthesize(base, DEFECT_FAMILIES[i % len(DEFECT_FAMILIES)], seed=i, severity="severe")
            samples.append(AnomalySample(d.image, 1, "tile", defect=d.defect, mask=d.mask, id=f"bad{i}"))
    write_tree(samples, tmp_path / "mvtec", train_good=0)
    assert any((tmp_path / "mvtec" / "tile" / "ground_truth").rglob("*_mask.png"))
    argv = ["eval", "zero-shot", "--mvtec", str(tmp_path / "mvtec"), "--preset", "tiny", "--name", "tiles",
            "--no-progress"]
    text, _ = _run(argv, capsys)
    doc = json.loads(_run([*argv, "--json", "--out", str(tmp_path / "rep")], capsys)[0])
    (r,) = doc["results"]
    assert 0 <= r["pixel_AUPRO"] <= 1 and r["pixel_AUROC"] == r["pixel_auroc_macro"] is not None
    assert all(0 <= r[k] <= 1 for k in ("image_AUROC", "image_AP", "image_F1Max", "pixel_AP", "pixel_F1Max"))
    assert f"pixel AUPRO (macro) {r['pixel_AUPRO']:.4f}" in text
    (row,) = r["per_class"]
    assert row["pixel_AUPRO"] == r["pixel_AUPRO"] and _md_rows(text, "tile")[0][9] == _f3(row["pixel_AUPRO"])
    with open(tmp_path / "rep" / "per_class.csv", newline="") as f:
        (saved,) = list(csv.DictReader(f))
    assert float(saved["pixel_AUPRO"]) == row["pixel_AUPRO"]

    loaded = load_mvtec(tmp_path / "mvtec", split="test")  # by hand: the maps at image size (64 <= 224 px)
    maps = [d.anomaly_map for d in tiny.detect([s.load_image() for s in loaded])]
    masks = [s.load_mask() if s.mask is not None else np.zeros((64, 64), bool) for s in loaded]
    assert r["pixel_AUPRO"] == pytest.approx(aupro(masks, maps), abs=1e-6)

    panel = Path(doc["files"]["localisation"])
    assert panel.name == "localisation.png" and Path(doc["files"]["pixel_curves"]).is_file()
    with Image.open(panel) as im:
        assert im.width > 400 and im.height > 200  # two rows of four pictures
    assert "![localisation panel](localisation.png)" in Path(doc["report"]).read_text()
    assert cli.main([*argv, "--pixel-size", "32", "--out", str(tmp_path / "rep32")]) == 0  # a smaller pixel grid
    assert "at most 32 px on the long side" in (tmp_path / "rep32" / "report.md").read_text()
    assert cli.main([*argv, "--pixel-size", "0"]) == 2 and "--pixel-size must be >= 1" in capsys.readouterr().err
