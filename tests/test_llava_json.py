"""LLaVA conversation JSON: validation, atomic writes, JSON lines, and datasets round trips."""

from __future__ import annotations

import copy
import json

import pytest
from PIL import Image

from adkit.data import DataError
from adkit.data.llava import (from_dataset, load_llava_dataset, read_llava_json, save_llava_dataset,
                              to_dataset, write_llava_json)


def _records():
    return [
        {"id": "bottle/000", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nAre there any defects? Answer Yes or No."},
            {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Describe it — précisément."},
            {"from": "gpt", "value": "A crack on the rim (裂纹)."}]},
        {"id": "pair/001", "image": ["images/a.png", "images/b.png"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhich one is defective?"},
            {"from": "gpt", "value": "The first."}]},
        {"id": "single-list", "image": ["images/b.png"], "conversations": [
            {"from": "human", "value": "<image>\nAny anomaly?"}, {"from": "gpt", "value": "No."}]},
        {"id": "text/002", "conversations": [
            {"from": "human", "value": "What is a scratch?"}, {"from": "gpt", "value": "A thin mark."}]},
    ]


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / name)
    return tmp_path


def test_write_read_round_trip(tree):
    path = write_llava_json(_records(), tree / "train.json")
    assert read_llava_json(path) == _records()
    text = path.read_text(encoding="utf-8")
    assert "précisément" in text and "裂纹" in text  # UTF-8, not \u escapes
    assert text.startswith('[\n {\n  "id": "bottle/000",\n  "image"')  # indent=1, fixed key order
    shuffled = [{"conversations": r["conversations"], **{k: v for k, v in r.items() if k != "conversations"}}
                for r in _records()]
    write_llava_json(shuffled, tree / "again.json")
    assert (tree / "again.json").read_bytes() == path.read_bytes()  # stable output
    assert not [p for p in tree.iterdir() if p.name.endswith(".tmp")]  # temp file renamed away


def test_jsonl_round_trip_and_bad_line(tree):
    path = write_llava_json(_records(), tree / "train.jsonl")
    assert len(path.read_text().splitlines()) == 4
    assert read_llava_json(path) == _records()
    lines = path.read_text().splitlines()
    lines.insert(2, '{"id": "broken", "conversations": [')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl: line 3: malformed JSON"):
        read_llava_json(path)


def test_malformed_json_and_wrong_top_level(tree):
    path = tree / "bad.json"
    path.write_text('[{"id": "a", "conversations": []},\n {"id": ')
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON at line 2"):
        read_llava_json(path)
    path.write_text(json.dumps({"id": "a"}))
    with pytest.raises(DataError, match="expected a JSON list of records, got a JSON dict"):
        read_llava_json(path)
    with pytest.raises(DataError, match="file not found"):
        read_llava_json(tree / "missing.json")


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(image="images/zzz.png"), r"record 0 \(id 'bottle/000'\): image file not found: .*zzz\.png"),
    (lambda r: r.update(source="mvtec"), r"record 0 \(id 'bottle/000'\): unknown field\(s\) \['source'\]"),
    (lambda r: r["conversations"][0].update(value="no token here"),
     r"record 0 .*: 0 '<image>' token\(s\) in the human turns but 1 image\(s\)"),
    (lambda r: r["conversations"][2].update(value="<image> again"), r"2 '<image>' token\(s\)"),
    (lambda r: r["conversations"][1].update({"from": "human"}),
     r"record 0 .*conversations\[1\]: expected 'from': 'gpt', got 'human'"),
    (lambda r: r["conversations"][0].update({"from": "user"}), r"conversations\[0\]: unknown role 'user'"),
    (lambda r: r["conversations"].pop(), r"last turn must be a 'gpt' answer"),
    (lambda r: r["conversations"][3].update(value=3), r"conversations\[3\]: field 'value' must be a string"),
    (lambda r: r["conversations"][1].update(value="<image>"), r"conversations\[1\]: a gpt turn contains"),
    (lambda r: r.pop("id"), r"record 0: missing field 'id'"),
    (lambda r: r.update(image=[]), r"field 'image' must be a non-empty path"),
    (lambda r: r.update(conversations=[]), r"field 'conversations' must be a non-empty list"),
])
def test_invalid_records_are_named(tree, mutate, message):
    records = _records()
    mutate(records[0])
    path = tree / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=message):
        read_llava_json(path)


def test_allow_extra_image_root_and_no_check(tree):
    records = _records()
    records[0]["source"] = "mvtec"
    path = tree / "sub" / "extra.json"
    write_llava_json(records, path, allow_extra=True)
    with pytest.raises(DataError, match="image file not found"):  # relative to sub/ by default
        read_llava_json(path, allow_extra=True)
    assert read_llava_json(path, image_root=tree, allow_extra=True)[0]["source"] == "mvtec"
    assert len(read_llava_json(path, check_images=False, allow_extra=True)) == 4
    with pytest.raises(DataError, match=r"record 0 .*unknown field"):
        write_llava_json(records, tree / "nope.json")
    assert not (tree / "nope.json").exists()  # nothing written on invalid input


def test_datasets_round_trip(tree):
    records = _records()
    records[1]["source"] = {"dataset": "webad", "score": 0.5}
    ds = to_dataset(records)
    assert ds.num_rows == 4 and ds[3]["image"] == [] and ds[0]["image"] == ["images/a.png"]
    assert ds.features["conversations"].feature["from"].dtype == "string"
    assert from_dataset(ds) == records
    path = save_llava_dataset(ds, tree / "out.json")
    assert read_llava_json(path, allow_extra=True) == records
    loaded = load_llava_dataset(tree / "out.json", allow_extra=True)
    assert loaded.to_list() == ds.to_list()


def test_datasets_from_json_reads_our_jsonl(tree):
    """A plain ``datasets`` JSON reader (what HF-based trainers use) reads what we write."""
    from datasets import Dataset

    records = [r for r in _records() if isinstance(r.get("image"), str)] * 2
    records = [dict(copy.deepcopy(r), id=f"{r['id']}-{i}") for i, r in enumerate(records)]
    path = write_llava_json(records, tree / "plain.jsonl")
    ds = Dataset.from_json(str(path), cache_dir=str(tree / "hf_cache"))
    assert ds.num_rows == 2 and set(ds.column_names) == {"id", "image", "conversations"}
    assert from_dataset(ds) == records
