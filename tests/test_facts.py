"""The fact check: family and location parsing, and the whole run on the tiny preset.
The template writer's references name the true family and cell, so they must score 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from adkit.data.instruct import sample_context
from adkit.data.records import AnomalySample
from adkit.data.synth import DEFECT_FAMILIES, synthesize
from adkit.data.writers import TemplateWriter
from adkit.eval.facts import _cell_of, fact_check, named_cell, names_family

pytestmark = pytest.mark.usefixtures("one_thread")


def test_named_cell_takes_the_first_and_longest_phrase():
    assert named_cell("A crack near the top left, then one at the bottom.") == (0, 0)
    assert named_cell("It runs along the top edge.") == (0, 1)  # not "top" + "edge"
    assert named_cell("at the bottom right and the top") == (2, 2)
    assert named_cell("near the centre") == named_cell("in the center area") == (1, 1)
    assert named_cell("A scratch on its surface.") is None


def test_names_family_uses_synonyms_not_other_families():
    assert names_family("Two long scratches cross it.", "scratch")
    assert names_family("A fissure runs across.", "crack")
    assert not names_family("A dark stain.", "crack")
    assert not names_family("A scratchy sound.", "hole")


def synthetic(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = Image.fromarray(rng.integers(90, 160, (112, 112, 3), dtype=np.uint8))
        if i % 3 == 2:
            out.append(AnomalySample(base, 0, "tile", id=f"ok{i}"))
            continue
        d = synthesize(base, DEFECT_FAMILIES[i % len(DEFECT_FAMILIES)], seed=i)
        out.append(AnomalySample(d.image, 1, "tile", defect=d.defect, mask=d.mask, id=f"bad{i}"))
    return out


def test_references_state_the_facts():
    for s in synthetic(12):
        if s.label == 0:
            continue
        ctx = sample_context(s)
        for seed in range(5):
            ref = TemplateWriter(seed).write("describe", ctx["hint"], None, ctx)
            assert names_family(ref, s.defect), ref
            assert named_cell(ref) == _cell_of(s.load_mask()), ref


def test_fact_check_on_tiny(tiny):
    samples = synthetic(6)
    res = fact_check(tiny, samples, max_new_tokens=6, batch_size=4, progress=False)
    assert len(res.rows) == 6
    bad = [r for r in res.rows if r["label"] == 1]
    assert len(bad) == 4 and all("answer" in r and "reference" in r for r in bad)
    assert all(r["family"] == float(names_family(r["answer"], r["defect"])) for r in bad)
    assert 0 <= res.family_rate <= 1 and 0 <= res.location_rate <= 1 and 0 <= res.rouge_l <= 1
    assert set(res.detection) == {"accuracy", "precision", "recall", "f1"}
    assert all(r["predicted"] in (0, 1) for r in res.rows)


def test_cli_json_equals_text_and_file(tmp_path, capsys):
    from adkit.cli import main

    root = tmp_path / "data"
    for s in synthetic(6):
        kind = s.defect if s.label else "good"
        (root / "tile" / "test" / kind).mkdir(parents=True, exist_ok=True)
        s.load_image().save(root / "tile" / "test" / kind / f"{s.id}.png")
        if s.label:
            (root / "tile" / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(s.load_mask().astype("uint8") * 255).save(root / "tile" / "ground_truth" / kind / f"{s.id}_mask.png")
    args = ["eval", "facts", "--mvtec", str(root), "--preset", "tiny", "--max-new-tokens", "4", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "out" / "facts.json").read_text())
    assert doc["n"] == 6 and len(saved["rows"]) == 6
    assert f"F1 {doc['detection']['f1']:.3f}" in text and doc["detection"] == saved["detection"]
    assert f"location {doc['location_rate']:.1%}" in text
