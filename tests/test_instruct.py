"""adkit.data.instruct (docs/architecture.md §5, the paper's instruction-data pipeline): each stage on small
in-test samples, then the whole pipeline with all three writers (template, a real tiny
transformers LM, an OpenAI-compatible server on 127.0.0.1) producing valid LLaVA records."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from adkit.data.instruct import (
    balance, build_instructions, conversations, deduplicate, describe, detection_counts, draw_boxes, hint,
    location_from_mask, mask_boxes, sample_context, severity_word,
)
from adkit.data.records import AnomalySample, DataError
from adkit.data.writers import OpenAIWriter, TemplateWriter, TransformersWriter, WriterError
from chat_server import ChatServer
from test_writers import decode_data_url

RED = (255, 0, 0)
GRAY = (120, 120, 120)


def _mask(h=60, w=80, *rects):
    m = np.zeros((h, w), bool)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def _samples(tmp_path=None):
    """Two anomalous + one normal sample with textured in-memory images (paths in meta)."""
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 100, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]
    return [
        AnomalySample(imgs[0], 1, "capsule", "poke", mask=_mask(60, 80, (5, 15, 5, 15)), id="cap-poke",
                      meta={"path": "capsule/test/poke/000.png", "severity": "severe"}),
        AnomalySample(imgs[1], 1, "metal_nut", "scratch", mask=_mask(60, 80, (40, 55, 50, 75)), id="nut-scratch",
                      meta={"path": "metal_nut/test/scratch/000.png", "location": "lower right"}),
        AnomalySample(imgs[2], 0, "capsule", id="cap-good", meta={"path": "capsule/test/good/000.png"}),
    ]


def check_llava(records):
    """LLaVA conversation JSON structure (docs/architecture.md §5) + our documented "meta" key."""
    for r in records:
        assert set(r) <= {"id", "image", "conversations", "meta"} and isinstance(r["image"], str)
        turns = r["conversations"]
        assert len(turns) >= 2 and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert all(set(t) == {"from", "value"} and isinstance(t["value"], str) and t["value"] for t in turns)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert json.loads(json.dumps(r)) == r


# ---------------------------------------------------------------- stage 1: hint

def test_hint_from_metadata_and_mask():
    cap, nut, good = _samples()
    assert hint(cap) == "a capsule with severe poke mark at the top left"  # location from the mask
    assert hint(nut) == "a metal nut with scratch at the lower right"  # location from meta
    assert hint(good) == "a normal capsule"
    s = AnomalySample(Image.new("RGB", (4, 4)), 1, "pill", "crack", meta={"hint": "a round white pill"})
    assert hint(s) == "a round white pill with crack on surface"
    s.label, s.defect = 0, "good"
    assert hint(s) == "a normal round white pill"
    s = AnomalySample(Image.new("RGB", (4, 4)), 1, "apple", "bad", meta={"location": "near the stem"})
    assert hint(s) == "an apple with defect near the stem"


def test_context_location_extent_severity():
    assert location_from_mask(_mask(90, 90, (70, 80, 40, 50))) == "bottom"
    assert location_from_mask(_mask(90, 90, (0, 5, 0, 5), (30, 60, 30, 60))) == "center"  # the largest region
    assert location_from_mask(np.zeros((5, 5), bool)) is None
    assert [severity_word(v) for v in (0.0, 0.5, 1.0, "mild", None)] == ["minor", "moderate", "severe", "mild", None]
    with pytest.raises(DataError, match="severity 3"):
        severity_word(3)
    ctx = sample_context(_samples()[0])
    assert ctx["extent"] == "medium-sized" and ctx["location"] == "top left" and ctx["severity"] == "severe"
    assert "location" not in sample_context(_samples()[2])


# ---------------------------------------------------------------- stage 2: boxes

def test_mask_boxes_merge_and_cover():
    m = _mask(100, 100, (10, 20, 10, 20), (10, 20, 24, 30), (80, 90, 80, 90))
    boxes = mask_boxes(m, dilate=1, merge_distance=0)
    assert len(boxes) == 3  # nothing merged
    merged = mask_boxes(m, dilate=1, merge_distance=5)
    assert len(merged) == 2 and merged[0] == (9, 9, 30, 20)  # the two close blobs are one box
    assert len(mask_boxes(m, dilate=1, merge_distance=100)) == 1
    ys, xs = np.nonzero(m)
    inside = np.zeros_like(xs, bool)
    for x0, y0, x1, y1 in merged:
        inside |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    assert inside.all()  # every mask pixel is in a box
    assert mask_boxes(np.zeros((5, 5))) == []
    with pytest.raises(DataError, match="2-D"):
        mask_boxes(np.zeros((2, 5, 5)))


def test_draw_boxes_red_only_on_borders():
    img = Image.new("RGB", (100, 80), GRAY)
    m = _mask(80, 100, (20, 40, 30, 60))
    out = draw_boxes(img, m, dilate=2, width=2)
    assert img.getpixel((30, 20)) == GRAY  # input untouched
    (x0, y0, x1, y1), = mask_boxes(m, dilate=2)
    assert (x0, y0, x1, y1) == (28, 18, 61, 41)
    arr = np.asarray(out)
    red = np.all(arr == RED, axis=-1)  # (H, W)
    border = np.zeros_like(red)
    border[y0:y1 + 1, x0:x1 + 1] = True
    border[y0 + 2:y1 - 1, x0 + 2:x1 - 1] = False  # a 2-px frame drawn inward
    assert (red == border).all()
    # a mask at another resolution is resized to the image; no mask → plain copy
    small = draw_boxes(img, m[::2, ::2], dilate=1, width=1)
    assert np.all(np.asarray(small)[20:40, 30:60] == GRAY) and np.asarray(small)[:, :, 1].min() == 0
    assert np.array_equal(np.asarray(draw_boxes(img, None)), np.asarray(img))


# ---------------------------------------------------------------- stages 3-4: describe, conversations

def test_describe_and_conversations():
    cap, _, good = _samples()
    w = TemplateWriter(0)
    d = describe(cap, w)
    assert "capsule" in d and "top left" in d and "severe" in d
    turns = conversations(cap, d, w, random.Random(0))
    assert len(turns) == 10 and turns[1]["value"] == "Yes" and turns[3]["value"] == d
    assert "'Yes' or 'No'" in turns[0]["value"]
    check_llava([{"id": "x", "image": "x", "conversations": turns, "meta": {}}])
    dn = describe(good, w)
    turns = conversations(good, dn, w, 1)
    assert len(turns) == 6 and turns[1]["value"] == "No" and turns[3]["value"] == dn and "capsule" in dn


# ---------------------------------------------------------------- stage 5: balance

def _fake_records(n_yes, n_no):
    recs = []
    for i in range(n_yes + n_no):
        ans = "Yes" if i < n_yes else "No"
        recs.append({"id": str(i), "image": f"{i}.png", "meta": {}, "conversations": [
            {"from": "human", "value": "<image>\nDefect? Answer 'Yes' or 'No'."}, {"from": "gpt", "value": ans},
            {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": f"desc {i}"}]})
    return recs


def test_balance_counts():
    recs = _fake_records(5, 2)
    before = copy.deepcopy(recs)
    out = balance(recs, random.Random(0))
    assert recs == before  # inputs untouched
    assert detection_counts(recs) == (5, 2) and detection_counts(out) == (2, 2)
    assert len(out) == 7 and [r["id"] for r in out] == [str(i) for i in range(7)]  # descriptions kept
    dropped = [r for r in out if r["meta"].get("detection_dropped")]
    assert len(dropped) == 3 and all(r["conversations"][0]["value"] == "<image>\nDescribe it." for r in dropped)
    check_llava(out)
    assert detection_counts(balance(_fake_records(1, 4), 0)) == (1, 1)
    assert balance(_fake_records(3, 3), 0) == _fake_records(3, 3)


# ---------------------------------------------------------------- stage 6: dedup

def pixel_encoder(images):
    """A deterministic encoder: 8×8 grayscale pixels, mean-removed (so cosine = correlation)."""
    feats = np.stack([np.asarray(im.convert("L").resize((8, 8)), np.float32).ravel() for im in images])
    return torch.from_numpy(feats - feats.mean(1, keepdims=True))  # (N, 64)


def test_deduplicate():
    rng = np.random.default_rng(1)
    base = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    noisy = np.clip(base[0].astype(int) + rng.integers(-2, 3, base[0].shape), 0, 255).astype(np.uint8)
    imgs = [base[0], base[1], base[0].copy(), noisy, base[2]]
    samples = [AnomalySample(Image.fromarray(a), 0, "tex", id=str(i)) for i, a in enumerate(imgs)]
    kept, removed = deduplicate(samples, pixel_encoder, threshold=0.99, batch_size=2)
    assert [s.id for s in kept] == ["0", "1", "4"]
    assert [(r, k) for r, k, _ in removed] == [(2, 0), (3, 0)]
    assert removed[0][2] == pytest.approx(1.0, abs=1e-5) and 0.99 < removed[1][2] < 1.0
    assert len(deduplicate(samples, pixel_encoder, threshold=1.01)[0]) == 5  # nothing exceeds it
    with pytest.raises(DataError, match=r"\(N, D\) array for N=2 images, got shape \(64,\)"):
        deduplicate(samples, lambda ims: np.zeros(64), batch_size=2)


# ---------------------------------------------------------------- stage 7: the whole pipeline

def test_build_instructions_template(tmp_path, capsys):
    samples = _samples()
    recs = build_instructions(samples, TemplateWriter(0), seed=0)
    assert "instructions (template)" in capsys.readouterr().err  # the tqdm progress bar
    check_llava(recs)
    assert [r["id"] for r in recs] == ["cap-poke", "nut-scratch", "cap-good"]
    assert recs[0]["image"] == "capsule/test/poke/000.png" and all(r["meta"]["writer"] == "template" for r in recs)
    assert detection_counts(recs) == (1, 1)  # balanced: one anomalous record lost its Yes round
    assert recs == build_instructions(samples, TemplateWriter(0), seed=0, progress=False)  # deterministic
    assert recs != build_instructions(samples, TemplateWriter(1), seed=1, progress=False)
    unbalanced = build_instructions(samples, TemplateWriter(0), balance_detection=False, progress=False)
    assert detection_counts(unbalanced) == (2, 1)
    # near-duplicates removed before writing; in-memory images saved when there is no path
    dup = AnomalySample(samples[2].image.copy(), 0, "capsule", id="cap-good-copy")
    mem = [AnomalySample(s.image, s.label, s.category, s.defect, s.mask, s.id) for s in samples] + [dup]
    with pytest.raises(DataError, match="cap-poke: the image is in memory"):
        build_instructions(mem, TemplateWriter(0), progress=False)
    recs = build_instructions(mem, TemplateWriter(0), dedup_encoder=pixel_encoder, image_dir=tmp_path / "img",
                              image_root=tmp_path, progress=False)
    assert [r["id"] for r in recs] == ["cap-poke", "nut-scratch", "cap-good"]
    assert recs[0]["image"] == "img/cap-poke.png" and (tmp_path / "img" / "cap-poke.png").is_file()
    with pytest.raises(DataError, match="duplicate sample id 'cap-poke'"):
        build_instructions([samples[0], samples[0]], TemplateWriter(0), progress=False)


def test_build_instructions_llava_roundtrip(tmp_path):
    from adkit.data import llava
    recs = build_instructions(_samples(), TemplateWriter(0), progress=False)
    path = tmp_path / "instruct.json"
    llava.write_llava_json(recs, path, allow_extra=True)  # "meta" is an extra top-level key
    assert llava.read_llava_json(path, check_images=False, allow_extra=True) == recs
    plain = build_instructions(_samples(), TemplateWriter(0), progress=False, with_meta=False)
    assert all(set(r) == {"id", "image", "conversations"} for r in plain)
    llava.write_llava_json(plain, path)  # strict LLaVA
    assert llava.read_llava_json(path, check_images=False) == plain


def test_build_instructions_openai_multimodal():
    samples = _samples()
    with ChatServer() as server:
        server.srv.reply = lambda body: f"answer {len(server.srv.received)}"
        w = OpenAIWriter(server.url, "vision", send_images=True, timeout=5)
        recs = build_instructions(samples, w, balance_detection=False, progress=False)
        got = server.srv.received
    check_llava(recs)
    assert len(got) == 4 + 4 + 2  # describe, cause, effect, prevention ×2; normal description, check
    assert all(r["meta"]["writer"] == "openai:vision" for r in recs)
    assert recs[0]["conversations"][3]["value"] == "answer 1" and recs[2]["conversations"][5]["value"] == "answer 10"
    first = got[0]["body"]["messages"][1]["content"]
    assert "a capsule with severe poke mark at the top left" in first[1]["text"] and "red boxes" in first[1]["text"]
    sent = np.asarray(decode_data_url(first[0]["image_url"]["url"]).convert("RGB"))
    red = np.all(sent == RED, axis=-1)  # the writer saw red boxes around the mask (rows/cols 5..14)
    ys, xs = np.nonzero(red)
    assert red.any() and ys.max() < 25 and xs.max() < 25
    normal = got[8]["body"]["messages"][1]["content"]
    assert "red boxes" not in normal[1]["text"] and not np.all(
        np.asarray(decode_data_url(normal[0]["image_url"]["url"]).convert("RGB")) == RED, axis=-1).any()
    # a later follow-up sees the description the writer wrote first
    assert "Description of the object: answer 1" in got[1]["body"]["messages"][1]["content"][1]["text"]


def test_build_instructions_transformers(tiny_lm):  # noqa: F811
    model, tok = tiny_lm
    w = TransformersWriter(model, tok, max_new_tokens=4, name="tiny-lm")
    recs = build_instructions(_samples(), w, balance_detection=False, progress=False)
    check_llava(recs)
    assert all(r["meta"]["writer"] == "tiny-lm" for r in recs)
    assert [len(r["conversations"]) for r in recs] == [10, 10, 6]
    # identical prompts would give identical greedy text: the describe prompt holds each hint
    assert recs[0]["conversations"][3]["value"] == w.write(
        "describe", "a capsule with severe poke mark at the top left", None, sample_context(_samples()[0]))


def test_writer_giving_nothing_is_named():
    class Silent:
        name, multimodal = "silent", False

        def write(self, task, hint, image, context):
            return ""

    with pytest.raises(WriterError, match="silent gave no text for task 'describe' of sample cap-poke"):
        build_instructions(_samples()[:1], Silent(), progress=False)


def test_separate_regions_are_counted_and_said():
    img = Image.new("RGB", (90, 90), (120, 120, 120))
    one = AnomalySample(img, 1, "tile", defect="crack", mask=_mask(90, 90, (5, 15, 5, 15)), id="one")
    two = AnomalySample(img, 1, "tile", defect="crack", mask=_mask(90, 90, (5, 15, 5, 15), (60, 80, 60, 80)), id="two")
    assert sample_context(one)["count"] == 1 and sample_context(two)["count"] == 2
    assert "count" not in sample_context(AnomalySample(img, 0, "tile", id="ok"))
    said = [describe(two, TemplateWriter(seed)) for seed in range(6)]
    assert all(any(w in d.lower() for w in ("two separate", "two distinct", "two areas", "over two"))
               for d in said), said
    assert not any("two" in describe(one, TemplateWriter(seed)).lower() for seed in range(6))
