"""adkit.eval.metrics against scikit-learn (docs/architecture.md §7): AUROC, ROC, F1-max, detection, parsers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adkit.eval.metrics import (
    auroc, detection_scores, f1_max, macro, parse_yes_no, per_class, pixel_auroc, roc_curve,
)

import sklearn.metrics as sk
TOL = 1e-12


def sk_f1_max(y, s) -> float:
    p, r, _ = sk.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(f1.max())


@st.composite
def labelled_scores(draw, tied: bool):
    """Labels with both classes; scores from a tiny integer range (many ties) or free floats."""
    n = draw(st.integers(2, 60))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    y[0], y[1] = 0, 1  # both classes present
    if tied:
        s = [float(v) for v in draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))]
    else:
        s = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n))
    perm = draw(st.permutations(range(n)))
    return np.array(y)[perm], np.array(s)[perm]


def _check_all(y, s):
    assert abs(auroc(y, s) - sk.roc_auc_score(y, s)) <= TOL
    ours, theirs = roc_curve(y, s), sk.roc_curve(y, s, drop_intermediate=False)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL)
    f1, thr = f1_max(y, s)
    assert abs(f1 - sk_f1_max(y, s)) <= TOL
    assert abs(sk.f1_score(y, s >= thr) - f1) <= TOL  # the threshold reaches the maximum


@settings(max_examples=150, deadline=None)
@given(labelled_scores(tied=True))
def test_matches_sklearn_with_many_ties(ys):
    _check_all(*ys)


@settings(max_examples=100, deadline=None)
@given(labelled_scores(tied=False))
def test_matches_sklearn_on_free_floats(ys):
    _check_all(*ys)


def test_adversarial_rankings():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    y[:2] = [0, 1]
    s = rng.normal(size=500)
    cases = {
        "random": s, "all_equal": np.full(500, 0.3), "perfect": y + 0.01 * s,
        "inverted": -y + 0.01 * s, "binary_scores": y.astype(float), "coarse": np.round(s, 1),
    }
    for name, sc in cases.items():
        _check_all(y, sc)
    assert auroc(y, cases["perfect"]) == 1.0
    assert auroc(y, cases["inverted"]) == 0.0
    assert auroc(y, cases["all_equal"]) == 0.5
    assert auroc(y.astype(bool), s) == auroc(y, s)  # bool labels accepted


def test_input_errors_are_readable():
    with pytest.raises(ValueError, match=r"0 anomalous \(1\) and 3 normal"):
        auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"2 anomalous \(1\) and 0 normal"):
        roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"1 NaN and 0 infinite.*index 1"):
        auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="0/1 or bool"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least one anomalous"):
        f1_max([0, 0], [0.1, 0.2])
    assert f1_max([1, 1], [0.1, 0.2]) == (1.0, 0.1)  # no normals: F1 = 1 at the lowest score


def test_pixel_auroc_equals_flattening():
    rng = np.random.default_rng(1)
    shapes = [(8, 8), (5, 7), (16, 4)]
    masks = [rng.random(sh) > 0.8 for sh in shapes]
    maps = [np.round(rng.random(sh), 2) + m for sh, m in zip(shapes, masks)]
    flat_y = np.concatenate([m.ravel() for m in masks]).astype(int)
    flat_s = np.concatenate([a.ravel() for a in maps])
    assert abs(pixel_auroc(masks, maps) - sk.roc_auc_score(flat_y, flat_s)) <= TOL
    assert pixel_auroc([m.astype(np.uint8) * 255 for m in masks], maps) == pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match=r"pair 1: mask shape \(5, 7\) != map shape \(7, 5\)"):
        pixel_auroc(masks, [maps[0], maps[1].T, maps[2]])


def test_per_class_then_macro():
    rng = np.random.default_rng(2)
    classes = np.repeat(["candle", "pcb1", "fryum"], 40)
    y = rng.integers(0, 2, 120)
    s = rng.normal(size=120) + y
    got = per_class(auroc, y, s, classes)
    assert list(got) == ["candle", "fryum", "pcb1"]
    for k, v in got.items():
        assert abs(v - sk.roc_auc_score(y[classes == k], s[classes == k])) <= TOL
    assert macro(got) == pytest.approx(np.mean(list(got.values())), abs=TOL)
    assert macro(got) != pytest.approx(auroc(y, s), abs=1e-9)  # not pooled
    f1s = per_class(f1_max, y, s, classes)  # (value, threshold) -> value
    assert f1s["pcb1"] == f1_max(y[classes == "pcb1"], s[classes == "pcb1"])[0]
    y2 = y.copy()
    y2[classes == "fryum"] = 1
    with pytest.raises(ValueError, match="class 'fryum'.*40 anomalous"):
        per_class(auroc, y2, s, classes)
    with pytest.raises(ValueError, match="no classes"):
        macro({})


# answer -> (first_word, official_substring)
PARSER_TABLE = {
    "Yes.": (True, True),
    "yes": (True, True),
    "YES": (True, False),  # official parser is case-sensitive
    "**No**": (False, False),
    "No.": (False, False),
    "No, but the eyes are red": (False, True),  # "eyes" contains "yes"
    "I see no defect": (None, False),
    "yes—a crack": (True, True),
    '"Yes"': (True, True),
    "“No”, it is fine": (False, False),
    "> ## Yes, a scratch on the left": (True, True),
    "Yesterday's batch looked fine": (None, True),
    "There is a defect. Yes.": (None, True),
    "": (None, False),
    "   \n": (None, False),
}


@pytest.mark.parametrize("answer", list(PARSER_TABLE))
def test_parser_table(answer):
    first, official = PARSER_TABLE[answer]
    assert parse_yes_no(answer) is first
    assert parse_yes_no(answer, rule="first_word") is first
    assert parse_yes_no(answer, rule="official_substring") is official


def test_parser_errors():
    with pytest.raises(ValueError, match="unknown rule"):
        parse_yes_no("yes", rule="contains")
    with pytest.raises(TypeError):
        parse_yes_no(None)


@pytest.mark.parametrize("rule", ["first_word", "official_substring"])
def test_detection_scores_match_sklearn(rule):
    answers = list(PARSER_TABLE) * 3
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, len(answers))
    got = detection_scores(answers, y, rule=rule)
    pred = [parse_yes_no(a, rule) is True for a in answers]  # unparsed -> normal
    p, r, f, _ = sk.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    assert abs(got["precision"] - p) <= TOL and abs(got["recall"] - r) <= TOL
    assert abs(got["f1"] - f) <= TOL
    assert abs(got["accuracy"] - sk.accuracy_score(y, pred)) <= TOL
    assert got["tp"] + got["fp"] + got["tn"] + got["fn"] == got["n"] == len(answers)
    n_none = sum(v[0] is None for v in PARSER_TABLE.values()) * 3
    assert got["unparsed"] == (n_none if rule == "first_word" else 0)
    assert got["rule"] == rule


def test_detection_scores_edge_cases():
    got = detection_scores(["No", "maybe"], [0, 0])  # no positives, no positive predictions
    assert (got["precision"], got["recall"], got["f1"], got["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    assert got["unparsed"] == 1 and got["tn"] == 2
    with pytest.raises(ValueError, match="3 answers but 2 labels"):
        detection_scores(["yes", "no", "no"], [1, 0])
    answers = np.array(["Yes", "No", "No", "Yes", "yes", "no"])
    by_class = per_class(lambda l, a: detection_scores(list(a), l)["f1"], [1, 0, 1, 1, 0, 0],
                         answers, ["a", "a", "a", "b", "b", "b"])
    assert by_class == {"a": pytest.approx(2 / 3), "b": pytest.approx(2 / 3)}
