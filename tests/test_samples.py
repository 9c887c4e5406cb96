"""data_samples/: regenerates byte-identically, reads back through the kit's own loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adkit.cli import main
from adkit.data import DataError, load_mvtec, read_llava_json, read_visa_dr
from adkit.data.normals import CATEGORIES, categories
from adkit.data.samples import COUNTS, check_sample_sets, file_hashes, make_sample_sets

SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"


def test_committed_samples_regenerate_byte_identically(capsys):
    """`adkit data make-samples --check`: a full rebuild in a temp folder, every byte compared."""
    committed = file_hashes(SAMPLES)
    assert json.loads((SAMPLES / "manifest.json").read_text())["files"] == committed
    assert main(["data", "make-samples", "--out", str(SAMPLES), "--check"]) == 0, capsys.readouterr().out
    assert "byte-identically" in capsys.readouterr().out


def test_samples_size_and_license_notes():
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total <= 20e6
    text = (SAMPLES / "PROVENANCE.md").read_text()
    for name in categories():
        assert (f"| {name} |" in text) == (CATEGORIES[name].kind != "photo")  # photo crops are never committed


def test_splits_read_back_with_the_mvtec_loader():
    for split, counts in COUNTS.items():
        samples = load_mvtec(SAMPLES / split)
        names = [c for c in categories(split) if CATEGORIES[c].kind != "photo"]
        assert sorted({s.category for s in samples}) == sorted(names)
        assert sum(s.label for s in samples) == counts.test_bad * len(names)
        assert sum(1 - s.label for s in samples) == counts.test_good * len(names)
        bad = next(s for s in samples if s.label == 1)
        assert bad.load_mask().any() and bad.load_image().size == (224, 224)
        train = load_mvtec(SAMPLES / split, split="train")
        assert len(train) == counts.train_good * len(names) and all(s.label == 0 for s in train)


def test_instruction_json_and_benchmark_read_back():
    records = read_llava_json(SAMPLES / "instruct_train.json")  # checks every image exists
    assert len(records) == len(load_mvtec(SAMPLES / "train"))
    assert {r["meta"]["writer"] for r in records} == {"template"}
    answers = [r["conversations"][1]["value"] for r in records if r["conversations"][1]["value"] in ("Yes", "No")]
    assert answers.count("Yes") == answers.count("No") > 0  # balanced one-word detection rounds
    bench = read_visa_dr(SAMPLES / "visa_dr")
    counts = bench.counts()
    assert counts["classes"] == len(categories("test")) and counts["reasoning"] == counts["anomalous"] > 0
    assert all(len(r.turns) == 4 and all(a for _, a in r.turns) for r in bench.reasoning)


def test_check_reports_changed_missing_and_extra_files(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLES, copy)
    img = next((copy / "test").rglob("*.png"))
    img.write_bytes(img.read_bytes()[:-1] + b"\0")
    (copy / "instruct_val.json").unlink()
    (copy / "stray.txt").write_text("x")
    diff = check_sample_sets(copy, reference=SAMPLES)
    assert sorted(diff) == sorted([img.relative_to(copy).as_posix(), "instruct_val.json", "stray.txt"])
    assert check_sample_sets(SAMPLES, reference=SAMPLES) == []


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a data_samples folder"):
        make_sample_sets(tmp_path, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert main(["data", "make-samples", "--check", "--out", str(tmp_path / "nothing")]) == 2


def test_cli_synth_then_instruct(tmp_path, capsys):
    out = tmp_path / "tree"
    assert main(["data", "synth", "--out", str(out), "--categories", "pill,wood", "--normal", "2",
                 "--anomalous", "2", "--size", "64"]) == 0
    samples = load_mvtec(out)
    assert len(samples) == 6 and sum(s.label for s in samples) == 4
    assert main(["data", "instruct", "--mvtec", str(out), "--out", str(tmp_path / "llava.json")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = read_llava_json(tmp_path / "llava.json")
    assert summary["records"] == len(records) == 6
    assert main(["data", "instruct", "--folder", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 2
