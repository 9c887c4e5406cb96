"""VisA-D&R ``--protocol official``: each choice of the official Anomaly-OneVision scripts
(scripts/eval/test_detection.py, test_reasoning.py, calc_accuracy.py at commit d85bec0), the
official result files, and the kit protocol's listed deviations. Real tiny model, real files."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from adkit import cli
from adkit.data import DataError
from adkit.data.visa_dr import DETECTION_PROMPT, read_visa_dr
from adkit.eval import official
from adkit.eval.visa_dr_runners import detection_summary, generate_answers, visa_dr_detection, visa_dr_reasoning

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["Describe the anomaly in the image.", "What could be the cause of this anomaly?"]
CLASSES = ("candle", "pcb2", "pcb4", "fryum")


def _cal_metrics(gt, responses):
    """calc_accuracy.cal_metrics as the official script computes it (class = image.split('/')[1],
    "Yes"/"yes" anywhere = anomalous, sklearn scores per class, plain mean), returning the means."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    out = {"accuracy": [], "precision": [], "recall": [], "f1": []}
    for cls in {item["image"].split("/")[1] for item in gt}:
        y_true, y_pred = [], []
        for index, item in enumerate(gt):
            if item["image"].split("/")[1] == cls:
                y_true.append(1 if item["anomaly"] else 0)
                y_pred.append(1 if "Yes" in responses[index] or "yes" in responses[index] else 0)
        with warnings.catch_warnings():  # sklearn warns and returns 0.0 where it divides by zero
            warnings.simplefilter("ignore")
            for name, fn in (("accuracy", accuracy_score), ("precision", precision_score),
                             ("recall", recall_score), ("f1", f1_score)):
                out[name].append(fn(y_true, y_pred))
    return {k: sum(v) / len(v) for k, v in out.items()}


@pytest.fixture
def visa(tmp_path):
    """An official-shaped ``<data_dir>/VisA``: test_data.json (one normal + one anomalous image per
    class, pcb2 and pcb4 among them) and a questions-only visa_dr.json of the anomalous ones. The
    candle records carry a "category" key that disagrees with the path (the official rule ignores it)."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    detection, reasoning = [], []
    for cls in CLASSES:
        for kind in ("Normal", "Anomaly"):
            rel = f"VisA/{cls}/Data/Images/{kind}/000.JPG"
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(data / rel)
            rec = {"image": rel, "anomaly": kind == "Anomaly"}
            if cls == "candle":
                rec["category"] = "wax"
            detection.append(rec)
            if kind == "Anomaly":
                reasoning.append({"image": rel, "questions": QUESTIONS, "id": f"{cls}-1"})
    (data / "VisA" / "test_data.json").write_text(json.dumps(detection, indent=4))
    (data / "VisA" / "visa_dr.json").write_text(json.dumps(reasoning, indent=4))
    return data


def test_official_choices_are_the_scripts():
    p = official.PROTOCOLS["official"]
    # test_detection.py / test_reasoning.py: model.generate(do_sample=False, temperature=0, max_new_tokens=4096)
    assert p.detection_tokens == p.reasoning_tokens == official.OFFICIAL_MAX_NEW_TOKENS == 4096
    assert p.plain_greedy and official.PLAIN_GREEDY["do_sample"] is False
    assert p.skip == ("pcb2", "pcb4")  # test_reasoning.py: if 'pcb2' in d['image'] or 'pcb4' in d['image']
    assert p.batch_size == 1 and not p.strip  # one image per call; text_outputs[0] used as decoded
    assert (p.rule, p.category, p.cap_rounding, p.prompt) == ("official_substring", "official", "floor", "official")
    assert official.deviations("official") == list(official.RESIDUAL)  # only what the kit cannot match
    kit = official.deviations("kit")
    assert len(kit) == len(official.RESIDUAL) + 11  # every one of the 11 choices differs under kit
    assert "detection answers cut at 8 new tokens (official: 4096)" in kit
    assert "reasoning answers cut at 128 new tokens (official: 4096)" in kit
    assert official.deviations(official.with_overrides("official", reasoning_tokens=5))[0] == \
        "reasoning answers cut at 5 new tokens (official: 4096)"


def test_parser_and_class_rule_equal_calc_accuracy(visa):
    bench = read_visa_dr(visa, require_answers=False)
    answers = ["Yes.", "No.", "YES", "No, but the eyes are red", " yes", "no", "Yes, a crack", "Nope"]
    gt = json.loads((visa / "VisA" / "test_data.json").read_text())
    res = detection_summary(answers, [d.label for d in bench.detection],
                            [official.category_of(d, "official") for d in bench.detection], "official_substring")
    ours, theirs = res.macro["official_substring"], _cal_metrics(gt, answers)
    assert ours == pytest.approx(theirs, abs=1e-15)
    assert sorted(res.per_class["official_substring"]) == sorted(CLASSES)  # "wax" is ignored
    assert official.category_of(bench.detection[0], "kit") == "wax"  # the kit honours the key
    assert bench.detection[0].category == "wax"
    with pytest.raises(DataError, match="needs a '/'"):
        from adkit.data.visa_dr import official_category
        official_category("000.JPG")


def test_cap_and_loader_are_the_scripts(tmp_path, tiny):
    """int() truncation of the short side (the preset's cap: 150 px for tiny, 1024 for the paper),
    PIL's bicubic resize, and no EXIF rotation; the processor then leaves the size alone."""
    geo = tiny.config.geometry
    path = tmp_path / "wide.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° on display (the kit's loader honours it, the official does not)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (130, 200, 3), dtype=np.uint8))
    img.save(path, exif=exif)
    ours = official.official_image(path, geo)
    cap = geo.max_long_side
    expected_w, expected_h = cap, int(cap * 130 / 200)  # width > height: new_width = cap, int(cap * h / w)
    assert ours.size == (expected_w, expected_h)
    assert round(130 * cap / 200) != expected_h  # the kit's default rounding would give another height
    with Image.open(path) as im:
        reference = im.convert("RGB").resize((expected_w, expected_h))  # the official lines, PIL defaults
    assert np.array_equal(np.asarray(ours), np.asarray(reference))
    batch = tiny.processor.images([ours])
    assert batch.image_sizes[0].tolist() == [expected_h, expected_w]  # no second cap
    from adkit.images import load_image
    assert load_image(path).size == (130, 200)  # the kit protocol's loader rotates it


def test_generation_budget_raw_answers_and_context_fit(visa, tiny, monkeypatch):
    """Official answers are cut only by min(4096, context room), decoded raw, plain greedy; the kit's
    detection answers stop at 8 tokens."""
    bench = read_visa_dr(visa, require_answers=False)
    bench.detection = bench.detection[:1]
    item = bench.detection[0]
    img = official.official_image(item.image, tiny.config.geometry)
    conv = [{"role": "user", "content": "<image>\n" + DETECTION_PROMPT}]
    batch = tiny.processor([conv], [[img]], add_generation_prompt=True)
    batch.pop("labels")
    room = 40  # shrink the context so the 4096 budget is cut to 40 tokens (4096 steps are slow on CPU)
    monkeypatch.setattr(tiny.config.text, "max_position_embeddings", int(batch["input_ids"].shape[1]) + room)
    ids = tiny.generate(**batch, max_new_tokens=room, **official.PLAIN_GREEDY)
    assert ids.shape[1] == room  # the random model never says <|im_end|>: it runs to the budget
    raw = tiny.tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
    res = visa_dr_detection(tiny, bench, progress=False, protocol="official")
    assert res.answers == [raw] and res.clipped == 1 and res.rule == "official_substring"
    kit = visa_dr_detection(tiny, bench, progress=False, protocol="kit")
    assert len(tiny.tokenizer.encode(kit.answers[0], add_special_tokens=False)) <= 8 < room
    assert kit.answers[0] == kit.answers[0].strip()


def test_reasoning_skip_list_and_raw_history(visa, tiny):
    bench = read_visa_dr(visa, require_answers=False)
    assert not any(r.answered for r in bench.reasoning)  # questions only
    # 20 new tokens, not 4096: the random model never stops, and 4096 steps per turn are slow on CPU
    res = visa_dr_reasoning(tiny, bench, max_new_tokens=20, progress=False, protocol="official")
    assert res.skipped == ["VisA/pcb2/Data/Images/Anomaly/000.JPG", "VisA/pcb4/Data/Images/Anomaly/000.JPG"]
    assert [it.source.split("/")[1] for it in res.items] == ["candle", "fryum"]
    assert res.unscored == 4 and all(r["rouge_l"] is None and r["sbert"] is None for r in res.records)
    # turn 1 asked with the raw turn-0 answer as history, exactly
    first = [r for r in res.records if r["item"] == 0]
    img = official.official_image(res.items[0].image, tiny.config.geometry)
    again = generate_answers(tiny, [img], [[(QUESTIONS[0], first[0]["answer"])]], [QUESTIONS[1]], 20,
                             strip=False, plain_greedy=True)
    assert again == [first[1]["answer"]]
    kit = visa_dr_reasoning(tiny, bench, max_new_tokens=3, progress=False, protocol="kit")
    assert kit.skipped == [] and len(kit.items) == 4  # the kit protocol asks pcb2/pcb4 too


def _cli(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_official_on_official_folder_writes_official_files(visa, tmp_path, capsys):
    """The issue's check: questions-only visa_dr.json with pcb2/pcb4 items; the run skips them and
    writes the official files, which the official formulas and the kit read back alike."""
    out = tmp_path / "rep"
    argv = ["eval", "visa-dr", str(visa), "--protocol", "official", "--preset", "tiny", "--detection-tokens", "3",
            "--max-new-tokens", "3", "--no-progress", "--out", str(out), "--size", "7b", "--json"]
    code, text, err = _cli(argv, capsys)
    assert code == 0, err
    doc = json.loads(text)
    assert doc["protocol"] == "official" and doc["reasoning"]["skipped"] == [
        "VisA/pcb2/Data/Images/Anomaly/000.JPG", "VisA/pcb4/Data/Images/Anomaly/000.JPG"]
    assert "detection answers cut at 3 new tokens (official: 4096)" in doc["deviations"]
    det_path, rea_path = out / "detection_results_7b.json", out / "reasoning_results_7b.json"
    assert doc["files"]["official_detection"] == str(det_path)
    responses = json.loads(det_path.read_text())
    assert det_path.read_text() == json.dumps(responses, indent=4)  # json.dump(responses, f, indent=4)
    gt = json.loads((visa / "VisA" / "test_data.json").read_text())
    assert len(responses) == len(gt) and all(isinstance(r, str) for r in responses)
    assert doc["detection"]["macro"]["official_substring"] == pytest.approx(_cal_metrics(gt, responses), abs=1e-15)
    # reasoning: each kept record as read, in file order, with "responses" appended
    records = json.loads(rea_path.read_text())
    assert rea_path.read_text() == json.dumps(records, indent=4)
    source = json.loads((visa / "VisA" / "visa_dr.json").read_text())
    kept = [d for d in source if not ("pcb2" in d["image"] or "pcb4" in d["image"])]
    assert [{k: v for k, v in r.items() if k != "responses"} for r in records] == kept
    assert all(list(r) == [*d, "responses"] and len(r["responses"]) == len(QUESTIONS) for r, d in zip(records, kept))
    # back: the kit reads the official files and scores them as the run did
    bench = read_visa_dr(visa, require_answers=False)
    again = official.score_detection_results(det_path, bench)
    assert again.macro == doc["detection"]["macro"] and again.rule == "official_substring"
    assert [r["responses"] for r in official.read_reasoning_results(rea_path)] == [r["responses"] for r in records]
    md = (out / "report.md").read_text()
    assert "## Protocol: `official`" in md and "skip list (pcb2, pcb4): 2" in md
    assert all(f"- {d}" in md for d in doc["deviations"])
    with open(out / "detection" / "answers.csv", newline="") as f:
        assert [row["image"] for row in csv.DictReader(f)] == [d["image"] for d in gt]
    with open(out / "reasoning" / "answers.csv", newline="") as f:
        assert [row["image"] for row in csv.DictReader(f)] == [d["image"] for d in kept for _ in QUESTIONS]
    # questions only + detection only: fine (it used to exit 2 without answers)
    code, _, err = _cli(["eval", "visa-dr", str(visa), "--preset", "tiny", "--no-reasoning", "--detection-tokens",
                         "2", "--no-progress"], capsys)
    assert code == 0, err


def test_cli_kit_report_lists_every_deviation(visa, tmp_path, capsys):
    out = tmp_path / "kit"
    code, text, err = _cli(["eval", "visa-dr", str(visa), "--protocol", "kit", "--preset", "tiny", "--max-new-tokens",
                            "2", "--no-progress", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(text)
    expected = official.deviations(official.with_overrides("kit", reasoning_tokens=2))
    assert doc["protocol"] == "kit" and doc["deviations"] == expected
    assert "reasoning answers cut at 2 new tokens (official: 4096)" in expected
    md = (out / "report.md").read_text()
    assert all(f"- {d}" in md for d in expected)
    assert (out / "detection_results_tiny.json").is_file() and doc["reasoning"]["skipped"] == []
    assert len(json.loads((out / "reasoning_results_tiny.json").read_text())) == 4


def test_official_results_errors(visa, tmp_path):
    bench = read_visa_dr(visa, require_answers=False)
    bad = tmp_path / "detection_results_x.json"
    bad.write_text(json.dumps(["Yes"]))
    with pytest.raises(DataError, match=r"detection_results_x\.json: 1 answers but the benchmark has 8"):
        official.read_detection_results(bad, bench)
    bad.write_text("[1, 2")
    with pytest.raises(DataError, match="malformed JSON"):
        official.read_detection_results(bad, bench)
    bad.write_text(json.dumps([{"image": "VisA/a/b.png", "questions": ["q"], "responses": []}]))
    with pytest.raises(DataError, match="record 0: needs 'image', 'questions' and as many 'responses'"):
        official.read_reasoning_results(bad)
    assert official.choose_protocol(bench) == "official"


def test_official_class_rule_needs_a_folder(tmp_path, capsys):
    Image.new("RGB", (20, 20), 90).save(tmp_path / "a.png")
    (tmp_path / "test_data.json").write_text(json.dumps([{"image": "a.png", "anomaly": False}]))
    code, _, err = _cli(["eval", "visa-dr", str(tmp_path), "--protocol", "official", "--preset", "tiny",
                         "--no-progress"], capsys)
    assert code == 2 and "a.png: image 'a.png': the official class rule image.split('/')[1] needs a '/'" in err
    assert official.choose_protocol(read_visa_dr(tmp_path)) == "kit"  # not the paper's VisA/ layout


def test_single_view_model_is_a_listed_deviation(visa, tiny, monkeypatch):
    bench = read_visa_dr(visa, require_answers=False)
    bench.detection = bench.detection[:2]
    monkeypatch.setattr(tiny.config, "single_view", True)  # as parts trained with --single-view set it
    res = visa_dr_detection(tiny, bench, max_new_tokens=2, progress=False, protocol="official")
    from adkit.eval.visa_dr_runners import VisaDRResult
    header = "\n".join(official.protocol_header(VisaDRResult(res, None, protocol="official")))
    assert res.single_view and "one base view" in header
    assert "one base view" not in "\n".join(official.deviations("official"))


def test_items_built_in_memory_get_the_detection_file_only(tiny, tmp_path):
    """The reasoning file holds image paths: a benchmark built from arrays (as notebook 07 does)
    has none, so only detection_results is written — and the report is still written."""
    from adkit.data.visa_dr import DetectionItem, ReasoningItem, VisaDRBenchmark
    from adkit.eval import report
    from adkit.eval.runners import VisaDRResult

    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    bench = VisaDRBenchmark([DetectionItem(arrays[0], 0, "toy"), DetectionItem(arrays[1], 1, "toy")],
                            [ReasoningItem(arrays[1], "toy", [("Describe the anomaly.", "A scratch.")])])
    det = visa_dr_detection(tiny, bench, max_new_tokens=2, progress=False)
    rea = visa_dr_reasoning(tiny, bench, max_new_tokens=2, progress=False)
    files = report.write_report(VisaDRResult(det, rea, source="in memory"), tmp_path)
    assert json.loads(files["official_detection"].read_text()) == list(det.answers)
    assert "official_reasoning" not in files and not list(tmp_path.glob("reasoning_results_*.json"))
    assert files["markdown"].stat().st_size > 0
