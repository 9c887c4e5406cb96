"""Expert notes ("+ notes", adkit/notes.py): pooled features and the 3×3 cell by hand, the reader
against scikit-learn, its file, and the same note line at training (collator) and inference (chat)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adkit.notes import DefectReader, note_text, pooled_features, top_cell, with_note
from adkit.train.collate import Stage2Collator
from adkit.train.reader import fit_reader, train_reader
from adkit.weights.official import CheckpointError
from adkit.weights.parts import load_trained_parts, save_trained_parts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pooled_features_by_hand():
    rng = np.random.default_rng(0)
    states = {3: rng.normal(size=(2, 16, 5)), 6: rng.normal(size=(2, 16, 5))}
    self_map = rng.random((2, 16))
    got = pooled_features({k: torch.tensor(v) for k, v in states.items()}, torch.tensor(self_map), (3, 6), 0.25)
    for n in range(2):
        top = np.argsort(-self_map[n])[:4]  # 25 % of 16 patches
        want = np.concatenate([states[lv][n, top].mean(0) - states[lv][n].mean(0) for lv in (3, 6)])
        np.testing.assert_allclose(got[n].numpy(), want, rtol=1e-5, atol=1e-6)


def test_top_cell_is_the_peak_patch_cell():
    m = torch.zeros(3, 16 * 16)
    m[0, 0] = 1.0  # row 0, col 0 → top left
    m[1, 8 * 16 + 8] = 1.0  # the middle patch → centre
    m[2, 15 * 16 + 5] = 1.0  # last row, col 5 (5·3 // 16 = 0) → bottom left
    assert top_cell(m) == [(0, 0), (1, 1), (2, 0)]


def test_with_note_puts_the_note_after_the_image_and_copies():
    conv = [{"role": "user", "content": "<image>\nDescribe it."}, {"role": "assistant", "content": "A crack."}]
    out = with_note(conv, "Expert note: x.")
    assert out[0]["content"] == "<image>\nExpert note: x.\nDescribe it." and out[1] == conv[1]
    assert conv[0]["content"] == "<image>\nDescribe it."  # the caller's turns are untouched
    llava = with_note([{"from": "human", "value": "<image>\nQ"}], "Expert note: y.")
    assert llava[0]["value"] == "<image>\nExpert note: y.\nQ"
    with pytest.raises(ValueError, match="no <image>"):
        with_note([{"role": "user", "content": "Q"}], "Expert note: z.")


def test_note_text_follows_the_verdict():
    wording = {"normal": "nothing stands out.", "anomalous": "likely {noun} ({place})."}
    assert note_text(True, "crack", "top left", wording) == "Expert note: likely crack (top left)."
    assert note_text(False, "crack", "top left", wording) == "Expert note: nothing stands out."


def _blobs(n=60, d=6, seed=0):
    rng = np.random.default_rng(seed)
    fams = np.array(["crack", "hole", "stain"])[rng.integers(0, 3, n)]
    centres = {"crack": 0.0, "hole": 2.0, "stain": -2.0}
    x = rng.normal(size=(n, d)) + np.array([centres[f] for f in fams])[:, None] * rng.random(d)
    return x, list(fams)


def test_reader_equals_the_scikit_learn_pipeline(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, fams = _blobs()
    reader = fit_reader(x, fams, levels=(3,), share=0.1, threshold=0.4, c=0.5)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000)).fit(x, fams)
    assert list(reader.families) == list(ref.classes_)
    np.testing.assert_allclose(reader.probabilities(torch.tensor(x)).numpy(), ref.predict_proba(x), atol=1e-5)
    path = tmp_path / "reader.safetensors"
    reader.save(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    again = DefectReader.from_parts(meta, tensors, path)
    assert again.nouns == reader.nouns == ("crack", "hole", "stain") and again.threshold == 0.4
    assert torch.equal(again.probabilities(torch.tensor(x)), reader.probabilities(torch.tensor(x)))


def _reader_for(model, levels=None, seed=0, width=None):
    levels = levels or (model.config.feature_levels[1],)
    d = width or model.config.vision.hidden_size * len(levels)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, d))
    fams = ["crack", "hole", "scratch"] * 10
    return fit_reader(x, fams, levels=levels, share=0.1, threshold=0.5)


def test_a_reader_file_loads_into_the_model_and_a_wrong_one_changes_nothing(tiny, tmp_path):
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    _reader_for(tiny).save(good)
    _reader_for(tiny, width=tiny.config.vision.hidden_size + 7).save(bad)  # made for another tower
    before = tiny.reader
    try:
        tiny.reader = None
        with pytest.raises(CheckpointError, match="reads .* features"):
            load_trained_parts(tiny, bad)
        assert tiny.reader is None
        meta_broken = tmp_path / "broken.safetensors"
        from safetensors.torch import save_file

        r = _reader_for(tiny)
        save_file(r.tensors(), str(meta_broken), metadata={**r.metadata(), "families": "not json"})
        with pytest.raises(CheckpointError, match="malformed defect reader"):
            load_trained_parts(tiny, meta_broken)
        assert tiny.reader is None
        load_trained_parts(tiny, good)
        assert tiny.reader is not None and tiny.reader.families == ("crack", "hole", "scratch")
    finally:
        tiny.reader = before


def test_notes_are_the_same_at_training_and_at_inference(tiny, photo):
    reader, notes_before = _reader_for(tiny), tiny.config.notes
    saved = tiny.reader
    tiny.reader = reader
    try:
        [note] = tiny.write_notes([photo])
        score = tiny.detect(photo)[0].score
        assert note.startswith("Expert note: ")
        assert (note == "Expert note: nothing stands out.") == (score < reader.threshold)
        question = "Describe the anomaly in the image."
        rec = {"id": "r0", "image": photo, "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                              {"from": "gpt", "value": "A crack."}]}
        batch = Stage2Collator(tiny.processor, notes=tiny.write_notes)([rec])
        text = tiny.tokenizer.decode(batch["input_ids"][0])
        assert f"<image>\n{note}\n{question}" in text  # the last placeholder of the image block, then the note
        # inference: chat's prompt, built the same way, holds the same user text
        tiny.config.notes = True
        conv = tiny.noted([[{"role": "user", "content": "<image>\n" + question}]], [photo])[0]
        assert conv[0]["content"] == f"<image>\n{note}\n{question}"
        tiny.config.notes = False
        assert tiny.noted([[{"role": "user", "content": "<image>\nQ"}]], [photo])[0][0]["content"] == "<image>\nQ"
    finally:
        tiny.reader, tiny.config.notes = saved, notes_before


def test_write_notes_without_a_reader_says_what_to_load(tiny, photo):
    saved, tiny.reader = tiny.reader, None
    try:
        with pytest.raises(RuntimeError, match="reader.safetensors"):
            tiny.write_notes([photo])
    finally:
        tiny.reader = saved


def test_stage2_parts_record_notes_and_loading_switches_them_on(tiny, tmp_path):
    saved = tiny.config.notes
    try:
        tiny.config.notes = True
        proj = [n for n, _ in tiny.named_parameters() if "multi_modal_projector" in n]  # a stage-2 part
        path = save_trained_parts(tiny, tmp_path / "trained.safetensors", names=proj)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            assert json.loads(f.metadata()["notes"]) is True
        tiny.config.notes = False
        load_trained_parts(tiny, path)
        assert tiny.config.notes is True
    finally:
        tiny.config.notes = saved


def test_train_reader_on_tiny_reports_val_accuracy(tiny):
    reader, report = train_reader(tiny, per_family=1, seed=3, progress=False)
    assert reader.weight.shape == (8, tiny.config.vision.hidden_size)
    assert report.images == 8 * 3 and 0.0 <= report.family_accuracy <= 1.0 and report.chance == 1 / 8
    assert reader.threshold == tiny.calibration.threshold("expert")


def test_train_reader_cli_writes_a_loadable_file_and_refuses_bad_levels(tiny, tmp_path, capsys):
    from adkit.cli import main

    out = tmp_path / "reader.safetensors"
    assert main(["train", "reader", "--preset", "tiny", "--per-family", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "val categories (24 anomalous images): family" in printed and str(out) in printed
    saved = tiny.reader
    try:
        load_trained_parts(tiny, out)
        assert tiny.reader.levels == (tiny.config.feature_levels[1],) and len(tiny.reader.families) == 8
    finally:
        tiny.reader = saved
    assert main(["train", "reader", "--preset", "tiny", "--levels", "99", "--out", str(out)]) == 2
    assert "--levels [99]" in capsys.readouterr().err
    assert main(["train", "reader", "--preset", "tiny", "--levels", "six", "--out", str(out)]) == 2


def test_save_pretrained_keeps_the_reader_and_a_folder_without_it_is_refused(tiny, tmp_path):
    from adkit import AnomalyOV

    saved, notes = tiny.reader, tiny.config.notes
    try:
        tiny.reader, tiny.config.notes = _reader_for(tiny), True
        tiny.save_pretrained(tmp_path)
        back = AnomalyOV.from_pretrained(tmp_path)
        assert back.config.notes and back.reader.families == tiny.reader.families
        assert torch.equal(back.reader.weight, tiny.reader.weight)
        (tmp_path / "reader.safetensors").unlink()
        with pytest.raises(CheckpointError, match="reader.safetensors is missing"):
            AnomalyOV.from_pretrained(tmp_path)
    finally:
        tiny.reader, tiny.config.notes = saved, notes
