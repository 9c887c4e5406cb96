"""adkit.eval.runners and `adkit eval ...` (docs/architecture.md §7): the tiny preset on a handful of real
images in memory and on disk, a real judge over HTTP on 127.0.0.1, the CLI in-process."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from chat_server import ChatServer
from PIL import Image

from adkit import cli
from adkit.data import AnomalySample, DataError
from adkit.eval import metrics
from adkit.eval.runners import (
    detection_summary, load_samples, turn_kind, visa_dr_detection, visa_dr_reasoning, zero_shot,
)

PROMPT = "Are there any defects for the object in the image? Please reply with 'Yes' or 'No'."


def _img(rng, h=40, w=60):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def samples():
    """Class a: 3 normal + 3 anomalous with masks; b: 3 + 3 without masks; c: normal only."""
    rng = np.random.default_rng(0)
    out = []
    for cat, n in (("a", 6), ("b", 6), ("c", 2)):
        for i in range(n):
            label = int(cat != "c" and i % 2 == 1)
            mask = None
            if cat == "a" and label:
                mask = np.zeros((40, 60), np.uint8)
                mask[10:20, 5 + 10 * i: 25 + 10 * i] = 1
            out.append(AnomalySample(_img(rng), label, cat, mask=mask, id=f"{cat}{i}"))
    return out


@pytest.fixture(scope="module")
def zs(tiny, samples):
    return zero_shot(tiny, samples, batch_size=4, progress=False, dataset="toy")


def test_zero_shot_scores_and_per_class(tiny, samples, zs):
    assert zs.n == len(samples) == zs.scores.size and zs.ids[0] == "a0" and zs.preset == "tiny"
    one_by_one = np.array([tiny.detect([s.image])[0].score for s in samples])  # batching changes nothing
    np.testing.assert_allclose(zs.scores, one_by_one, atol=1e-5)
    assert set(zs.image_auroc) == set(zs.f1_max) == set(zs.roc) == {"a", "b"}
    assert "c" in zs.skipped and "both labels" in zs.skipped["c"]
    cats = np.array(zs.categories)
    for c in ("a", "b"):
        sel = cats == c
        assert zs.image_auroc[c] == metrics.auroc(zs.labels[sel], zs.scores[sel])
        assert zs.f1_max[c] == metrics.f1_max(zs.labels[sel], zs.scores[sel])[0]
        fpr, tpr, _ = zs.roc[c]
        assert np.trapezoid(tpr, fpr) == pytest.approx(zs.image_auroc[c])
    assert zs.image_auroc_macro == pytest.approx(np.mean(list(zs.image_auroc.values())))
    assert zs.f1_max_macro == pytest.approx(np.mean(list(zs.f1_max.values())))
    assert zs.pooled_auroc == metrics.auroc(zs.labels, zs.scores)
    assert set(zs.pixel_auroc) == {"a"} and 0 <= zs.pixel_auroc_macro <= 1  # only class a has masks
    assert "macro over classes" in zs.averaging


def test_zero_shot_pixel_auroc_by_hand(tiny, samples, zs):
    """Class a's pixel AUROC = every pixel of its 6 images pooled (normals all-zero masks)."""
    a = [s for s in samples if s.category == "a"]
    dets = tiny.detect([s.image for s in a])
    masks = [np.zeros((40, 60), bool) if s.mask is None else s.mask > 0 for s in a]
    assert zs.pixel_auroc["a"] == pytest.approx(metrics.pixel_auroc(masks, [d.anomaly_map for d in dets]), abs=1e-6)


def test_zero_shot_localisation_metrics_by_hand(tiny, samples, zs):
    """Class a's pixel AP, F1-max and AUPRO = the localisation functions on its 6 maps and masks;
    the best / worst examples are the anomalous images with the highest / lowest pixel F1 there."""
    from adkit.eval import localisation

    a = [s for s in samples if s.category == "a"]
    maps = [d.anomaly_map for d in tiny.detect([s.image for s in a])]
    masks = [np.zeros((40, 60), bool) if s.mask is None else s.mask > 0 for s in a]
    px = zs.pixel["a"]
    assert px.ap == pytest.approx(localisation.pixel_average_precision(masks, maps), abs=1e-6)
    f1, thr = localisation.pixel_f1_max(masks, maps)
    assert (px.f1_max, px.threshold) == pytest.approx((f1, thr), abs=1e-5)
    assert px.aupro == pytest.approx(localisation.aupro(masks, maps), abs=1e-6) and 0 <= px.aupro <= 1
    assert set(zs.pixel) == {"a"} and zs.summary()["pixel_AUPRO"] == px.aupro  # one class: macro = it
    assert list(zs.summary()) == list(localisation.NAMES) and zs.summary()["image_AP"] == zs.image_ap_macro
    for c in ("a", "b"):
        sel = np.array(zs.categories) == c
        assert zs.image_ap[c] == localisation.average_precision(zs.labels[sel], zs.scores[sel])
    dice = {s.id: 2 * ((m_ >= px.threshold) & m).sum() / ((m_ >= px.threshold).sum() + m.sum())
            for s, m, m_ in zip(a, masks, maps) if s.label}
    best, worst = zs.examples["a"]
    assert (best.kind, worst.kind) == ("best", "worst")
    assert best.id == max(dice, key=dice.get) and worst.id == min(dice, key=dice.get)
    assert best.f1 == pytest.approx(dice[best.id]) and worst.f1 == pytest.approx(dice[worst.id])
    assert best.image.shape == (40, 60, 3) and best.mask.shape == best.anomaly_map.shape == (40, 60)
    np.testing.assert_array_equal(best.predicted, best.anomaly_map >= px.threshold)
    rows = {r["class"]: r for r in zs.per_class_rows()}
    assert rows["a"]["pixel_AUPRO"] == px.aupro and rows["b"]["pixel_AUPRO"] is None
    assert "pixel_AUPRO" in zs.columns() and rows["a"]["image_AUROC"] == zs.image_auroc["a"]


def test_zero_shot_bad_input(tiny, samples, tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        zero_shot(tiny, [], progress=False)
    with pytest.raises(ValueError, match="no class has both"):
        zero_shot(tiny, [s for s in samples if s.category == "c"], progress=False)
    bad = AnomalySample(np.zeros((8, 8, 3), np.uint8), 2, "a", id="odd")
    with pytest.raises(ValueError, match="odd: label must be 0 or 1"):
        zero_shot(tiny, [bad], progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        zero_shot(tiny, [AnomalySample(broken, 1, "a", id=str(broken))], progress=False)


def test_several_methods_at_once_equal_separate_runs(tiny, samples):
    from adkit.eval.runners import zero_shot_methods

    methods = ("expert", "self", "mutual", "expert+self")
    together = zero_shot_methods(tiny, samples, methods, batch_size=4, progress=False, dataset="toy")
    assert list(together) == list(methods)
    for m in methods:
        alone = zero_shot(tiny, samples, batch_size=4, progress=False, dataset="toy", method=m)
        assert together[m].method == m
        np.testing.assert_allclose(together[m].scores, alone.scores, rtol=0, atol=1e-6)
        assert together[m].image_auroc == alone.image_auroc
        assert together[m].pixel_auroc.keys() == alone.pixel_auroc.keys()
        for c in alone.pixel_auroc:
            assert abs(together[m].pixel_auroc[c] - alone.pixel_auroc[c]) < 1e-6
    with pytest.raises(ValueError, match="unknown detection method 'nope'"):
        zero_shot_methods(tiny, samples, ("expert", "nope"), progress=False)


# ---------------------------------------------------------------------------- VisA-D&R

@pytest.fixture(scope="module")
def bench(samples):
    det = [SimpleNamespace(image=s.image, label=s.label, category=s.category, question=PROMPT) for s in samples[:7]]
    turns = [("Describe the anomaly in the image.", "A dark scratch across the surface."),
             ("What could have caused it?", "Friction during handling.")]
    rea = [SimpleNamespace(image=s.image, category=s.category, turns=turns[: 1 + (i % 2)])
           for i, s in enumerate(samples[1:8:2])]
    return SimpleNamespace(detection=det, reasoning=rea)


def test_detection_batched_equals_chat(tiny, bench):
    res = visa_dr_detection(tiny, bench, batch_size=3, max_new_tokens=6, progress=False)
    assert res.answers == [tiny.chat(it.image, it.question, max_new_tokens=6) for it in bench.detection]
    assert set(res.per_class) == {"first_word", "official_substring"} and res.rule == "first_word"
    for rule in res.per_class:
        assert set(res.per_class[rule]) == {"a", "b"}
        for k in ("accuracy", "precision", "recall", "f1"):
            assert res.macro[rule][k] == pytest.approx(np.mean([v[k] for v in res.per_class[rule].values()]))
    with pytest.raises(ValueError, match="unknown rule"):
        visa_dr_detection(tiny, bench, rule="contains", progress=False)


def test_detection_summary_rules_differ_where_expected():
    answers = ["Yes", "No, but the eyes are red.", "yes—a crack", "I see no defect", "YES, a dent", "No.",
               "Yes, no defects are visible."]
    labels = [1, 0, 1, 1, 1, 0, 0]
    res = detection_summary(answers, labels, ["x"] * 7)
    diff = {d["index"]: (d["first_word"], d["official_substring"]) for d in res.differences}
    assert diff == {1: (False, True), 4: (True, False)}  # "I see no defect": unparsed (normal) under both
    fw, sub = res.macro["first_word"], res.macro["official_substring"]
    # first word: tp = Yes, yes—, YES (3), fn = "I see..." (1), fp = "Yes, no defects" (1), tn = 2
    assert (fw["accuracy"], fw["precision"], fw["recall"]) == pytest.approx((5 / 7, 3 / 4, 3 / 4))
    # substring: tp = Yes, yes— (2), fn = "I see..", "YES" (2), fp = "eyes", "Yes, no" (2), tn = 1
    assert (sub["accuracy"], sub["precision"], sub["recall"]) == pytest.approx((3 / 7, 2 / 4, 2 / 4))
    assert res.per_class["first_word"]["x"]["unparsed"] == 1


@pytest.fixture
def judge_server():
    """Alternating judge replies: "7\n..." for odd requests, "9/10 good" for even ones."""
    with ChatServer() as s:
        s.srv.reply = lambda body: "7\nclose to the reference" if len(s.srv.received) % 2 else "9/10 good"
        yield s.srv


def test_reasoning_multiturn_with_http_judge(tiny, bench, judge_server):
    from adkit.eval.judge import OpenAIJudge
    from adkit.eval.text import rouge_l

    judge = OpenAIJudge(f"http://127.0.0.1:{judge_server.server_address[1]}", "judge-m", timeout=10)
    res = visa_dr_reasoning(tiny, bench, judge=judge, max_new_tokens=5, batch_size=3, progress=False)
    n_turns = sum(len(it.turns) for it in bench.reasoning)
    assert len(res.records) == n_turns == len(judge_server.received) == 6
    assert res.judge_name == "openai:judge-m" and res.judge_failures == 0
    for rec in res.records:  # each turn asked with the model's own earlier answers as history
        it = bench.reasoning[rec["item"]]
        history = [(r["question"], r["answer"]) for r in res.records if r["item"] == rec["item"] and r["turn"] < rec["turn"]]
        assert rec["answer"] == tiny.chat(it.image, rec["question"], history=history, max_new_tokens=5)
        assert rec["rouge_l"] == rouge_l(rec["answer"], rec["reference"]) and -1 <= rec["sbert"] <= 1
        assert rec["gpt"] in (7.0, 9.0) and rec["kind"] == turn_kind(rec["turn"])
    sent = [r["body"]["messages"][1]["content"] for r in judge_server.received]
    assert all("A dark scratch across the surface." in s or "Friction during handling." in s for s in sent)
    low = [r for r in res.records if r["kind"] == "low-level"]
    by_class = {c: np.mean([r["sbert"] for r in low if r["category"] == c]) for c in {r["category"] for r in low}}
    assert res.summary["low-level"]["sbert"] == pytest.approx(np.mean(list(by_class.values())))
    assert res.summary["low-level"]["n"] == 4 and res.summary["complex"]["n"] == 2


# ---------------------------------------------------------------------------- CLI

@pytest.fixture
def folder_tree(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "widget"
    for group, n in (("good", 3), ("scratch", 3)):
        (root / group).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_img(rng, 48, 64)).save(root / group / f"{i:03d}.png")
    (root / "masks" / "scratch").mkdir(parents=True)
    for i in range(3):
        m = np.zeros((48, 64), np.uint8)
        m[5:20, 10 + 5 * i: 30 + 5 * i] = 255
        Image.fromarray(m).save(root / "masks" / "scratch" / f"{i:03d}.png")
    return root


def test_cli_zero_shot_folder(folder_tree, tmp_path, capsys):
    out = tmp_path / "report"
    code = cli.main(["eval", "zero-shot", "--folder", str(folder_tree), "--preset", "tiny", "--batch-size", "4",
                     "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "| Anomaly-OV expert | 94.0 | 91.1 |" in text and "| adkit tiny · expert (" in text
    row = next(line for line in text.splitlines() if line.startswith("| adkit tiny · expert ("))
    assert row.rstrip().endswith("|") and "widget" in text  # the folder's own column
    scores = (out / "scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 6 and (out / "report.md").stat().st_size > 0
    name, samples = load_samples("folder", folder_tree)
    assert name == "widget" and sum(s.mask is not None for s in samples) == 3


def test_cli_zero_shot_elpv_limit(capsys):
    """ELPV under both labelling rules from one run: "clear" (p = 0 vs 1) fills the paper's column."""
    code = cli.main(["eval", "zero-shot", "--dataset", "elpv", "--limit", "12", "--preset", "tiny", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "zero-shot ELPV (graded): 12 images" in text and "zero-shot ELPV (clear):" in text
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    row = next(line for line in text.splitlines() if line.startswith("| adkit tiny · expert ("))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["ELPV"] != "" and cells["ELPV (graded)"] != ""
    assert all(cells[d] == "" for d in ("MVTec AD", "VisA", "AITEX", "BTAD", "avg"))
    assert "ELPV (clear): defect probability 0 vs 1" in text


def test_zero_shot_methods_and_elpv_protocols(tiny):
    """Every method gets its own row; the clear protocol is the graded run restricted to p in {0, 1}."""
    from adkit.data.loaders import load_elpv
    from adkit.eval.paper import compare_zero_shot

    samples = load_elpv(limit=16, seed=2)
    probs = np.array([s.meta["probability"] for s in samples])
    assert set(probs) - {0.0, 1.0}, "the subset should hold graded cells too"
    results = []
    for method in ("expert", "mutual"):
        graded = zero_shot(tiny, samples, batch_size=5, progress=False, dataset="ELPV (graded)", method=method,
                           group=lambda s: s.meta["type"], mutual_batch=6)
        clear = graded.restrict(np.isin(probs, (0.0, 1.0)), "ELPV (clear)")
        assert clear.n == int(np.isin(probs, (0.0, 1.0)).sum())
        assert clear.image_auroc_macro == pytest.approx(metrics.auroc(clear.labels, clear.scores))
        results += [clear, graded]
    table = compare_zero_shot(results)
    rows = [m for m in table.models if m.startswith("adkit tiny")]
    assert rows == ["adkit tiny · expert (inductive, trained in stage 1)",
                    "adkit tiny · mutual (transductive, training-free)"]
    assert table.row(rows[1])["ELPV"] == round(100 * results[2].image_auroc_macro, 1)
    assert any("transductive rows" in n for n in table.notes)
    clear_only = load_elpv(limit=10, protocol="clear")
    assert len(clear_only) == 10 and {s.meta["probability"] for s in clear_only} <= {0.0, 1.0}
    assert {s.label for s in clear_only} == {0, 1}
    with pytest.raises(DataError, match="unknown ELPV protocol"):
        load_elpv(limit=2, protocol="strict")


def test_mutual_batches_split_groups_without_a_lone_image(tiny, samples):
    """Groups split into near-equal batches (never a lone image: it has nothing to compare with);
    each image is scored once; labels play no part."""
    from adkit.eval.runners import _batches

    cats = [s.category for s in samples]
    batches = _batches(samples, cats, "mutual", 8, None, 4, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(len(samples)))
    assert all(len({cats[i] for i in b}) == 1 and 2 <= len(b) <= 4 for b in batches)
    flipped = [AnomalySample(s.image, 1 - s.label, s.category, id=s.id) for s in samples]
    a = zero_shot(tiny, [s for s in samples if s.category != "c"], progress=False, method="mutual", mutual_batch=3)
    b = zero_shot(tiny, [s for s in flipped if s.category != "c"], progress=False, method="mutual", mutual_batch=3)
    np.testing.assert_allclose(a.scores, b.scores)


def test_cli_zero_shot_several_methods(folder_tree, tmp_path, capsys):
    out = tmp_path / "report"
    code = cli.main(["eval", "zero-shot", "--folder", str(folder_tree), "--preset", "tiny", "--method", "expert",
                     "self", "mutual", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    for label in ("expert (inductive", "self (inductive, training-free)", "mutual (transductive, training-free)"):
        assert f"| adkit tiny · {label}" in text
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3 and (out / "widget-mutual" / "scores.csv").is_file()
    assert "mutual (transductive" in (out / "report.md").read_text()


def test_cli_visa_dr_with_judge(samples, tmp_path, judge_server, capsys):
    from adkit.data.visa_dr import DetectionItem, ReasoningItem, VisaDRBenchmark, write_visa_dr

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    paths = []
    for s in samples[:4]:
        p = img_dir / f"{s.id}.png"
        Image.fromarray(s.image).save(p)
        paths.append(p)
    bench = VisaDRBenchmark(
        [DetectionItem(p, s.label, s.category) for p, s in zip(paths, samples)],
        [ReasoningItem(paths[1], "a", [("Describe the defect.", "A scratch."), ("Cause?", "Wear.")])], tmp_path)
    write_visa_dr(bench, tmp_path / "bench")
    out = tmp_path / "dr"
    code = cli.main(["eval", "visa-dr", str(tmp_path / "bench"), "--preset", "tiny", "--max-new-tokens", "4",
                     "--judge-url", f"http://127.0.0.1:{judge_server.server_address[1]}/v1", "--judge-model", "jm",
                     "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "GPT-score judge: openai:jm" in text and "| Anomaly-OV-0.5B | 0.79 |" in text
    assert len(judge_server.received) == 2
    md = (out / "report.md").read_text()
    assert "| adkit tiny |" in md and (out / "detection" / "confusion.png").stat().st_size > 0


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["eval", "zero-shot", "--folder", str(tmp_path / "nope"), "--preset", "tiny"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["eval", "visa-dr", str(tmp_path), "--judge-url", "http://127.0.0.1:1", "--preset", "tiny"]) == 2
    assert "--judge-url and --judge-model go together" in capsys.readouterr().err
    assert cli.main(["eval", "zero-shot", "--dataset", "elpv", "--limit", "0", "--preset", "tiny"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
    assert cli.main(["eval", "zero-shot", "--preset", "tiny"]) == 2  # no source
    assert "one of the arguments" in capsys.readouterr().err


def test_cli_zero_shot_heldout(capsys):
    code = cli.main(["eval", "zero-shot", "--heldout", "--categories", "grass", "--limit", "4", "--preset", "tiny",
                     "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "zero-shot held-out: 4 images" in text and "| grass |" in text
    row = next(line for line in text.splitlines() if line.startswith("| adkit tiny · expert ("))
    assert row.split("|")[-2].strip() != ""  # the held-out column, blank for the paper's methods


def test_cli_zero_shot_name_keeps_own_trees_out_of_the_paper_columns(tmp_path, capsys):
    """An MVTec-style tree of the kit's own images, named with --name, gets its own column."""
    assert cli.main(["data", "synth", "--out", str(tmp_path), "--categories", "pill", "--normal", "4",
                     "--anomalous", "2", "--size", "64"]) == 0
    capsys.readouterr()
    code = cli.main(["eval", "zero-shot", "--mvtec", str(tmp_path), "--name", "kit held-out", "--preset", "tiny",
                     "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    row = next(line for line in text.splitlines() if line.startswith("| adkit tiny · expert ("))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["MVTec AD"] == "" and cells["kit held-out"] != ""


def test_cli_model_loads_parts_and_switches_the_expert_off(tiny, tmp_path, capsys):
    """--load puts trained parts into the preset's base; --no-expert is the paper's ablation."""
    import argparse
    import copy

    import torch

    from adkit.eval.cli import _model
    from adkit.weights.parts import save_trained_parts

    trained = copy.deepcopy(tiny)
    with torch.no_grad():
        for p in trained.expert.parameters():
            p.add_(0.5)
    names = [n for n, _ in trained.named_parameters() if n.startswith("expert.")]
    path = save_trained_parts(trained, tmp_path / "expert.safetensors", names)
    args = argparse.Namespace(load=[str(path)], no_expert=True, preset="tiny", model_path=None, expert_path=None)
    model = _model(args, tools=None)
    assert model.use_expert is False
    for (n, a), (_, b) in zip(model.expert.named_parameters(), trained.expert.named_parameters()):
        assert torch.equal(a, b), n
    assert cli.main(["eval", "zero-shot", "--heldout", "--no-expert", "--preset", "tiny"]) == 2
    assert "--no-expert" in capsys.readouterr().err
    from adkit.weights.parts import base_with_parts

    with pytest.raises(FileNotFoundError, match="trained-parts file not found: .*nope.safetensors"):
        base_with_parts("tiny", [path, tmp_path / "nope.safetensors"])


def test_mutual_reference_curve_composes_references_from_the_labels_only(tiny):
    from adkit.eval.runners import mutual_reference_curve

    rng = np.random.default_rng(7)
    samples = [AnomalySample(_img(rng), int(i >= 6), "g", id=f"m{i}") for i in range(12)]
    curve = mutual_reference_curve(tiny, samples, shares=(0.0, 0.5), references=4, progress=False)
    assert set(curve) == {0.0, 0.5} and all(0.0 <= v <= 1.0 for v in curve.values())
    again = mutual_reference_curve(tiny, samples, shares=(0.0, 0.5), references=4, progress=False)
    assert again == curve  # seeded
    with pytest.raises(ValueError, match="needs 6 and 0"):  # an anomalous image has only 5 anomalous others
        mutual_reference_curve(tiny, samples, shares=(1.0,), references=6, progress=False)


def test_photo_check_scores_clean_and_damaged_photos(tiny, capsys):
    from adkit.eval.runners import photo_check

    r = photo_check(tiny, "self", names=["coffee", "camera", "rocket"])
    assert r.names == ["coffee", "camera", "rocket"] and r.clean.shape == r.damaged.shape == (3,)
    direct = tiny.detect(Image.fromarray(__import__("skimage").data.coffee()), method="self")[0].score
    assert r.clean[0] == pytest.approx(direct)
    assert r.raised == int((r.damaged > r.clean).sum()) and set(r.clean_flagged) <= set(r.names)
    m = photo_check(tiny, "mutual", names=["coffee", "camera", "rocket"])
    assert np.isfinite(m.clean).all() and np.isfinite(m.damaged).all()
    assert cli.main(["eval", "photo-check", "--preset", "tiny", "--method", "expert"]) == 0
    out = capsys.readouterr().out
    assert "clean photos called anomalous" in out and "| hubble_deep_field |" in out
