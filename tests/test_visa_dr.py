"""VisA-D&R files: the official layout (test_data.json + visa_dr.json), round trips, bad records."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from adkit.data import DataError
from adkit.data.visa_dr import (DETECTION_PROMPT, DetectionItem, ReasoningItem, VisaDRBenchmark,
                                read_visa_dr, write_visa_dr)

QUESTIONS = ["Describe the anomaly in the image.", "What could cause it?",
             "What effect does it have?", "How can it be prevented?"]


@pytest.fixture
def official(tmp_path):
    """``<data_dir>/VisA/{test_data.json, visa_dr.json}`` with ``VisA/<class>/...`` image paths."""
    data_dir = tmp_path / "data"
    images = {}
    for cls in ("candle", "pcb1"):
        for kind in ("Normal", "Anomaly"):
            rel = f"VisA/{cls}/Data/Images/{kind}/000.JPG"
            (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), 90).save(data_dir / rel, format="JPEG")
            images[cls, kind] = rel
    detection = [{"image": images[c, k], "anomaly": k == "Anomaly"} for c in ("candle", "pcb1")
                 for k in ("Normal", "Anomaly")]
    reasoning = [{"image": images[c, "Anomaly"], "questions": QUESTIONS,
                  "answers": [f"{c} answer {i}" for i in range(4)], "responses": ["model says"] * 4}
                 for c in ("candle", "pcb1")]
    (data_dir / "VisA" / "test_data.json").write_text(json.dumps(detection, indent=4))
    (data_dir / "VisA" / "visa_dr.json").write_text(json.dumps(reasoning, indent=4))
    return data_dir


def test_read_official_layout(official):
    for src in (official, official / "VisA", official / "VisA" / "test_data.json"):
        bench = read_visa_dr(src)
        assert bench.root == official  # paths start with VisA/: resolved against the parent
        assert [(d.category, d.label) for d in bench.detection] == [
            ("candle", 0), ("candle", 1), ("pcb1", 0), ("pcb1", 1)]
        assert all(d.question == DETECTION_PROMPT and d.image.is_file() for d in bench.detection)
    bench = read_visa_dr(official)
    assert bench.counts() == {"normal": 2, "anomalous": 2, "classes": 2, "reasoning": 2}
    r = bench.reasoning[1]
    assert r.category == "pcb1" and r.image == official / "VisA/pcb1/Data/Images/Anomaly/000.JPG"
    assert r.turns[0] == (QUESTIONS[0], "pcb1 answer 0") and len(r.turns) == 4
    assert r.meta == {"responses": ["model says"] * 4}  # unknown keys are kept
    only = read_visa_dr(official / "VisA" / "visa_dr.json")
    assert only.detection == [] and len(only.reasoning) == 2


def test_round_trip_folder_and_combined_file(official, tmp_path):
    bench = read_visa_dr(official)
    bench.detection.append(DetectionItem(bench.detection[0].image, 0, "candle", "Is it OK?"))
    write_visa_dr(bench, official / "VisA")  # the official two files, in place
    again = read_visa_dr(official)
    assert again == bench
    saved = json.loads((official / "VisA" / "test_data.json").read_text())
    assert saved[0] == {"image": "VisA/candle/Data/Images/Normal/000.JPG", "anomaly": False, "category": "candle"}
    assert saved[-1]["question"] == "Is it OK?"
    combined = write_visa_dr(bench, official / "bench.json")
    assert read_visa_dr(combined) == bench
    elsewhere = write_visa_dr(bench, tmp_path / "copy")  # outside the root: paths stay relative to it
    assert read_visa_dr(elsewhere, image_root=official) == bench
    with pytest.raises(DataError, match=r"test_data\.json: detection record 0: field 'image': file not found"):
        read_visa_dr(elsewhere)


def test_built_in_memory(tmp_path):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    bench = VisaDRBenchmark([DetectionItem(img, 1, "fryum")],
                            [ReasoningItem(img, "fryum", [("Describe.", "A crack."), ("Cause?", "Heat.")])],
                            root=tmp_path)
    write_visa_dr(bench, tmp_path)
    assert json.loads((tmp_path / "visa_dr.json").read_text()) == [
        {"image": "x.png", "category": "fryum", "questions": ["Describe.", "Cause?"], "answers": ["A crack.", "Heat."]}]
    assert read_visa_dr(tmp_path) == bench


@pytest.mark.parametrize("kind, mutate, message", [
    ("test_data", lambda r: r.update(anomaly="yes"), r"test_data\.json: detection record 1: field 'anomaly' must be"),
    ("test_data", lambda r: r.pop("image"), r"detection record 1: field 'image' must be a non-empty string"),
    ("test_data", lambda r: r.update(image="VisA/candle/missing.JPG"), r"detection record 1: field 'image': file not found"),
    ("visa_dr", lambda r: r.update(questions="Describe."), r"visa_dr\.json: reasoning record 1: field 'questions'"),
    ("visa_dr", lambda r: r["answers"].pop(), r"reasoning record 1: field 'answers' has 3 entries but 'questions' has 4"),
    ("visa_dr", lambda r: r.pop("answers"), r"reasoning record 1: field 'answers' must be a list"),
    ("visa_dr", lambda r: r["questions"].__setitem__(0, "<image>\nDescribe."), r"contains '<image>'"),
])
def test_bad_records_name_file_record_field(official, kind, mutate, message):
    path = official / "VisA" / f"{kind}.json"
    records = json.loads(path.read_text())
    mutate(records[1])
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=message):
        read_visa_dr(official)


def test_malformed_and_missing(official, tmp_path):
    path = official / "VisA" / "visa_dr.json"
    records = json.loads(path.read_text())
    for r in records:
        del r["answers"]
    path.write_text(json.dumps(records))
    bench = read_visa_dr(official, require_answers=False)  # a file without references still reads
    assert [a for _, a in bench.reasoning[0].turns] == [""] * 4
    path.write_text('[{"image": "x", "questions": [')
    with pytest.raises(DataError, match=r"visa_dr\.json: malformed JSON at line 1"):
        read_visa_dr(official)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no VisA-D&R files"):
        read_visa_dr(tmp_path / "empty")
    (tmp_path / "odd.json").write_text(json.dumps([{"image": "a.png"}]))
    with pytest.raises(DataError, match=r"odd\.json: record 0 has neither 'anomaly'"):
        read_visa_dr(tmp_path / "odd.json")
    (tmp_path / "dict.json").write_text(json.dumps({"tests": []}))
    with pytest.raises(DataError, match=r"dict\.json: a combined VisA-D&R file"):
        read_visa_dr(tmp_path / "dict.json")
    with pytest.raises(DataError, match="VisA-D&R path not found"):
        read_visa_dr(tmp_path / "nope")
