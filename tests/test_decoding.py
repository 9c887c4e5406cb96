"""Decoding defaults (adkit.config.DECODING): generate/chat never loop unless asked to.

On the tiny preset (random weights), plain greedy decoding repeats itself at once, so each
rule is visible in a few tokens: the defaults forbid any repeated 4-token sequence, a call's
own arguments win over them, and a preset can drop them (``generation={}`` = plain greedy).
"""

from __future__ import annotations

import pytest

from adkit import AnomalyOV
from adkit.config import DECODING

QUESTION = "<image>\nDescribe the anomaly in detail."
PLAIN = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def _ids(model, photo, **gen):
    batch = model.processor([[{"role": "user", "content": QUESTION}]], [[photo]], add_generation_prompt=True)
    batch.pop("labels")
    return model.generate(**batch, max_new_tokens=24, min_new_tokens=24, **gen)[0].tolist()


def _repeats(ids, n=4):
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_presets_default_to_the_anti_loop_decoding(tiny):
    assert tiny.config.generation == DECODING and DECODING["no_repeat_ngram_size"] == 4


def test_defaults_forbid_repeated_4grams_and_calls_override_them(tiny, photo):
    default = _ids(tiny, photo)
    plain = _ids(tiny, photo, **PLAIN)
    assert _repeats(default) == 0
    assert _repeats(plain) > 0  # the same model loops under plain greedy: the defaults are what stops it
    assert default == _ids(tiny, photo, **DECODING)  # the defaults are exactly DECODING


def test_a_preset_can_use_plain_greedy(tiny, photo):
    plain_model = AnomalyOV.from_config(tiny.config.replace(generation={}), seed=0)
    plain_model.load_state_dict(tiny.state_dict())
    assert _ids(plain_model.eval(), photo) == _ids(tiny, photo, **PLAIN)


@pytest.mark.parametrize("flags, message", [
    (["--repetition-penalty", "0"], "--repetition-penalty must be a positive number"),
    (["--repetition-penalty", "nan"], "--repetition-penalty must be a positive number"),
    (["--no-repeat-ngram", "-1"], "--no-repeat-ngram must be >= 0"),
])
def test_chat_cli_validates_decoding_flags(tmp_path, photo, capsys, flags, message):
    from adkit import cli

    path = tmp_path / "p.png"
    photo.save(path)
    assert cli.main(["chat", str(path), "Is there a defect?", "--preset", "tiny", *flags]) == 2
    assert message in capsys.readouterr().err


def test_chat_cli_decoding_flags_reach_generate(tmp_path, photo, capsys, tiny):
    from adkit import cli

    path = tmp_path / "p.png"
    photo.save(path)
    args = ["chat", str(path), "Describe the anomaly in detail.", "--preset", "tiny", "--max-new-tokens", "12",
            "--dtype", "float32"]  # the fixture is fp32; auto picks bf16 on CPUs with avx512_bf16
    assert cli.main(args + ["--repetition-penalty", "5", "--no-repeat-ngram", "0"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == tiny.chat(photo, "Describe the anomaly in detail.", max_new_tokens=12,
                            repetition_penalty=5.0, no_repeat_ngram_size=0)
