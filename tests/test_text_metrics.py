"""adkit.eval.text (docs/architecture.md §7 reasoning metrics): ROUGE-L against hand-computed LCS and against
rouge_score itself; Sentence-BERT cosine with the packaged all-MiniLM-L6-v2, offline."""

from __future__ import annotations

import numpy as np
import pytest

from adkit.eval.text import SBERT_DIM, rouge_l, sbert_model, sbert_similarity

from rouge_score import rouge_scorer


# ---------------------------------------------------------------- ROUGE-L

def test_rouge_l_hand_computed_lcs():
    # pred "red green blue black" vs ref "red blue white": LCS = "red blue" (2 tokens)
    # P = 2/4, R = 2/3, F = 2PR / (P + R) = 4/7
    assert rouge_l("red green blue black", "red blue white") == pytest.approx(4 / 7, abs=1e-12)
    # 6 vs 6 tokens, LCS "the cat on mat" = 4 → P = R = F = 2/3
    assert rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3, abs=1e-12)


def test_rouge_l_edge_cases():
    assert rouge_l("A scratch on the surface.", "a scratch on the surface") == 1.0  # case, punctuation
    assert rouge_l("the screws are missing", "the screw is missing") == pytest.approx(0.75)  # stemmed
    assert rouge_l("", "something") == 0.0
    assert rouge_l("apple", "orange") == 0.0
    with pytest.raises(TypeError):
        rouge_l(["a"], "a")


@pytest.mark.parametrize("pred, ref", [
    ("There is a crack on the left side of the capsule.", "The capsule shows a crack on its left side."),
    ("No anomaly is visible; the PCB looks normal.", "Yes, a component is missing from the board."),
    ("The cashew is burnt at the top and has a hole.", "A hole and burnt area appear on the cashew."),
])
def test_rouge_l_equals_rouge_score(pred, ref):
    want = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"].fmeasure
    assert rouge_l(pred, ref) == want


# ---------------------------------------------------------------- Sentence-BERT

@pytest.fixture(scope="module")
def st_model():
    return sbert_model()


def test_sbert_model_is_packaged_minilm_and_memoised(st_model):
    assert sbert_model() is st_model
    assert st_model.encode(["x"]).shape == (1, SBERT_DIM)


def test_sbert_identical_paraphrase_unrelated(st_model):
    ref = "There is a scratch on the metal surface."
    sims = sbert_similarity(
        [ref, "The metal surface has a scratch.", "Bananas are rich in potassium."], [ref] * 3)
    assert sims.shape == (3,) and sims.dtype == np.float64
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] > sims[2] + 0.3
    assert np.all(sims <= 1.0) and np.all(sims >= -1.0)


def test_sbert_parity_with_encode(st_model):
    preds = ["A hole in the hazelnut.", "The bottle is fine.", "Wires are cut."]
    refs = ["The hazelnut has a hole.", "A broken bottle.", "The cable is damaged."]
    a, b = st_model.encode(preds), st_model.encode(refs)
    want = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a, b)]
    np.testing.assert_allclose(sbert_similarity(preds, refs), want, atol=1e-6)
    # an explicit SentenceTransformer gives the same numbers
    np.testing.assert_allclose(sbert_similarity(preds, refs, model=st_model), want, atol=1e-6)


def test_sbert_shapes_and_errors(st_model):
    assert sbert_similarity("one", "one").shape == (1,)
    assert sbert_similarity([], []).shape == (0,)
    with pytest.raises(ValueError, match="differ in length"):
        sbert_similarity(["a", "b"], ["a"])
    with pytest.raises(TypeError):
        sbert_similarity(["a"], ["a"], model=3)


def test_a_hub_name_not_on_this_machine_is_a_clear_error(tmp_path, monkeypatch):
    """Never a download: a name missing from the local cache says how to fetch it."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty Hugging Face cache
    with pytest.raises(FileNotFoundError, match="hf download sentence-transformers/not-a-real-model"):
        sbert_model("sentence-transformers/not-a-real-model")
