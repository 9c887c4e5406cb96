"""Shared fixtures: one tiny model per session (random SigLIP + Qwen2, real Qwen2 tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def autograd_stays_on():
    """A test that turns autograd off globally (``torch.set_grad_enabled(False)`` in code it
    calls in-process) would break every training test after it; fail that test instead."""
    yield
    import torch

    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test left autograd off (torch.set_grad_enabled(False) without restoring it)")


@pytest.fixture(scope="module")
def one_thread():
    """Toy-sized tensors: one intra-op thread is faster and immune to a busy machine
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a module)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny():
    from adkit import AnomalyOV

    return AnomalyOV.from_preset("tiny")


@pytest.fixture(scope="session")
def photo():
    """A deterministic non-square RGB test image with structure (gradients + a bright blob)."""
    yy, xx = np.mgrid[0:120, 0:170]
    img = np.stack([xx * 1.5, yy * 2.0, 128 + 60 * np.sin(xx / 9.0)], -1)
    img[40:60, 90:115] = 255
    return Image.fromarray(np.clip(img, 0, 255).astype("uint8"))


@pytest.fixture(scope="session")
def small():
    """The small preset's untrained base: real DINOv2-S + SmolLM2-135M (converted and cached on
    first use) without the shipped trained parts, so conversion checks compare like with like."""
    import warnings

    from adkit import AnomalyOV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return AnomalyOV.from_preset("small", trained=False)


@pytest.fixture(scope="module")
def tiny_lm():
    """A 2-layer random Qwen2 causal LM with the real (offline) Qwen2 tokenizer. Untied embeddings:
    a tied toy model just repeats its last input token ("\n"), which decodes to nothing."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from adkit.tokenizers import load_tokenizer

    tok = load_tokenizer("qwen2")
    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=False,
                      max_position_embeddings=1024, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    return Qwen2ForCausalLM(cfg).eval(), tok
