"""The ``adkit`` command line (adkit/cli.py): run in-process with the tiny preset."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from adkit import cli


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in (("b_first", (60, 90)), ("a_second", (80, 50))):
        p = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_detect_json_order_and_scores(pngs, capsys):
    assert cli.main(["detect", *pngs, "--preset", "tiny", "--threshold", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out] == pngs
    for r in out:
        assert 0 < r["score"] < 1 and r["anomalous"] is True and r["map"] is None
        assert len(r["grid"]) == 2


def test_detect_maps_and_json_file(pngs, tmp_path, capsys):
    maps, js = tmp_path / "maps", tmp_path / "out.json"
    assert cli.main(["detect", *pngs, "--preset", "tiny", "--maps", str(maps), "--json", str(js)]) == 0
    assert capsys.readouterr().out == ""
    out = json.loads(js.read_text())
    for r, src in zip(out, pngs):
        with Image.open(src) as im:
            w, h = im.size
        with Image.open(r["map"]) as ov:
            assert ov.format == "PNG" and ov.width >= w and ov.height >= h
        raw = np.load(r["map"][:-4] + ".npy")
        assert raw.shape == (h, w)
        assert r["anomalous"] == (r["score"] >= 0.5)


def test_budget(capsys):
    assert cli.main(["budget", "768", "1024", "--preset", "paper-0.5b"]) == 0
    lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert lines["visual"] == "4725" and lines["total"] == "4764"


def test_bad_image(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert cli.main(["detect", str(bad), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adkit: error:") and "broken.png" in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_missing_file(tmp_path, capsys):
    assert cli.main(["chat", str(tmp_path / "nope.png"), "hi", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "Traceback" not in err


def test_paper_preset_without_weights(pngs, monkeypatch, capsys):
    monkeypatch.delenv("ADKIT_EXPERT_PATH", raising=False)
    monkeypatch.delenv("ADKIT_LLAVA_PATH", raising=False)
    assert cli.main(["detect", pngs[0], "--preset", "paper-0.5b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adkit: error:") and "ADKIT_EXPERT_PATH" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [[], ["detect"], ["budget", "x", "3"], ["detect", "a.png", "--preset", "huge"],
                                  ["detect", "a.png", "--threshold", "high"]])
def test_bad_arguments(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("adkit: error:") and err.count("\n") == 1


def test_chat_one_question(pngs, capsys):
    assert cli.main(["chat", pngs[0], "Is there a defect?", "--preset", "tiny", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_chat_stdin_multi_turn(pngs, monkeypatch, capsys):
    calls = []
    real_load = cli._load_model

    def load(args):
        model = real_load(args)
        orig = model.chat

        def chat(image, question, history=None, **kw):
            calls.append((question, list(history or [])))
            return orig(image, question, history=history, **kw)

        model.chat = chat
        return model

    monkeypatch.setattr(cli, "_load_model", load)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Is it damaged?\n\nWhere?\n"))
    assert cli.main(["chat", pngs[0], "--preset", "tiny", "--max-new-tokens", "2"]) == 0
    assert [q for q, _ in calls] == ["Is it damaged?", "Where?"]
    assert calls[0][1] == [] and [q for q, _ in calls[1][1]] == ["Is it damaged?"]
    assert capsys.readouterr().out.count("\n") >= 2  # one printed answer per question


def test_help_subprocess():
    res = subprocess.run([sys.executable, "-m", "adkit.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for word in ("detect", "chat", "budget", "ADKIT_EXPERT_PATH", "tiny", "small"):
        assert word in res.stdout


@pytest.mark.parametrize("cmd", ["detect", "chat", "budget"])
def test_subcommand_help(cmd, capsys):
    assert cli.main([cmd, "--help"]) == 0
    assert "--preset" in capsys.readouterr().out


def test_detect_methods_reference_folder_and_calibrated_threshold(pngs, tmp_path, capsys):
    refs = tmp_path / "refs"
    refs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(refs / f"r{i}.png")
    (refs / "notes.txt").write_text("not an image")  # a folder holds image files and other things
    assert cli.main(["detect", pngs[0], "--preset", "tiny", "--method", "mutual", "--reference", str(refs)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and out[0]["method"] == "mutual" and out[0]["grid"] == [0, 0]
    assert out[0]["threshold"] == 0.5 and out[0]["anomalous"] == (out[0]["score"] >= 0.5)  # tiny: uncalibrated
    assert cli.main(["detect", str(refs), "--preset", "tiny", "--method", "self", "--image-size", "112"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out] == [str(refs / f"r{i}.png") for i in range(3)]


@pytest.mark.parametrize("args, message", [
    (["--threshold", "-1"], "must be a number in [0, 1]"),
    (["--threshold", "nan"], "must be a number in [0, 1]"),
    (["--threshold", "2"], "must be a number in [0, 1]"),
    (["--method", "mutual"], "at least two images"),
    (["--method", "self", "--reference", "x.png"], "--method mutual only"),
    (["--image-size", "112"], "--method self or mutual only"),
    (["--method", "knn"], "invalid choice"),
])
def test_detect_refuses_arguments_that_mean_nothing(pngs, args, message, capsys):
    assert cli.main(["detect", pngs[0], "--preset", "tiny", *args]) == 2
    assert message in capsys.readouterr().err


def test_detect_help_explains_the_methods(capsys):
    assert cli.main(["detect", "--help"]) == 0
    text = capsys.readouterr().out
    assert "transductive, training-free" in text and "--reference" in text and "calibrated" in text


def test_version_module_entry_and_debug(capsys):
    from importlib import metadata

    import adkit

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"adkit {metadata.version('adkit')}" == f"adkit {adkit.__version__}"
    run = subprocess.run([sys.executable, "-m", "adkit", "--help"], capture_output=True, text=True, check=True)
    assert "usage: adkit" in run.stdout and "detect" in run.stdout
    assert cli.main(["detect", "/no/such/image.png", "--preset", "tiny"]) == 2  # one line
    with pytest.raises(Exception, match="no such file"):  # --debug: the exception itself, with its traceback
        cli.main(["--debug", "detect", "/no/such/image.png", "--preset", "tiny"])


def test_help_and_import_do_not_load_torch():
    """``import adkit`` and ``adkit --help`` (every subcommand's parser) stay light: no torch,
    no transformers until a model is needed; the public names still resolve on first use."""
    code = ("import sys, adkit, adkit.cli\n"
            "assert adkit.cli.main(['--help']) == 0\n"
            "heavy = [m for m in ('torch', 'transformers', 'gradio') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert adkit.AnomalyOV.__name__ == 'AnomalyOV' and 'torch' in sys.modules\n"
            "assert 'mutual' in adkit.zeroshot.METHODS and callable(adkit.zeroshot.mutual_map)\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


class _Writes(io.StringIO):
    """A stdout that keeps each write, to see whether an answer arrives in pieces."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def _chat_stdout(monkeypatch, argv, stdin=None) -> _Writes:
    out = _Writes()
    monkeypatch.setattr(sys, "stdout", out)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert cli.main(argv) == 0
    monkeypatch.undo()
    return out


def test_chat_streams_the_same_text_as_no_stream(pngs, monkeypatch):
    """Streamed (default): the answer is written in pieces as tokens come; --no-stream: once at the
    end. Both print the same bytes, for one question and for stdin turns (same answers kept as history)."""
    argv = ["chat", pngs[1], "Describe the object.", "--preset", "tiny", "--max-new-tokens", "24"]
    streamed, whole = _chat_stdout(monkeypatch, argv), _chat_stdout(monkeypatch, [*argv, "--no-stream"])
    assert streamed.getvalue() == whole.getvalue() and streamed.getvalue().count("\n") == 1
    assert len([w for w in streamed.writes if w.strip()]) > 2 >= len([w for w in whole.writes if w.strip()])
    argv = ["chat", pngs[0], "--preset", "tiny", "--max-new-tokens", "12", "--repetition-penalty", "1",
            "--no-repeat-ngram", "0"]
    questions = "Is it damaged?\n\nWhere?\nWhy?\n"
    streamed = _chat_stdout(monkeypatch, argv, questions)
    whole = _chat_stdout(monkeypatch, [*argv, "--no-stream"], questions)
    assert streamed.getvalue() == whole.getvalue() and streamed.getvalue().count("\n") == 3


def test_answer_streamer_writes_exactly_what_chat_returns(tiny, pngs):
    """Over many random-model answers (odd bytes, CJK, spaces and newlines at the ends, loops under
    plain greedy), the streamed text is chat()'s return value plus one newline."""
    streamer_out = io.StringIO()
    streamer = cli.answer_streamer(tiny.tokenizer, file=streamer_out)
    cases = 0
    for image in pngs:
        for question in ("Is there a defect?", "Where exactly?", "日本語で説明して"):
            for max_new, plain in ((1, False), (24, False), (24, True)):
                gen = dict(repetition_penalty=1.0, no_repeat_ngram_size=0) if plain else {}
                streamer_out.seek(0)
                streamer_out.truncate()
                answer = tiny.chat(image, question, max_new_tokens=max_new, streamer=streamer, **gen)
                assert streamer_out.getvalue() == answer + "\n", (question, max_new, plain)
                cases += 1
    assert cases == 18


def test_chat_help_mentions_streaming(capsys):
    assert cli.main(["chat", "--help"]) == 0
    assert "--no-stream" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["qwen2", "smollm2"])
def test_answer_streamer_strips_like_chat_token_by_token(name):
    """Token ids fed one at a time (as generate does) through each real offline tokenizer: the
    written text is decode(ids, skip_special_tokens=True).strip() + newline, including leading and
    trailing whitespace, inner newlines, CJK, emoji split across byte tokens and special tokens."""
    import torch

    from adkit.tokenizers import load_tokenizer

    tok = load_tokenizer(name)
    texts = ["  Yes, there is a scratch.  \n\n", "\nNo.<|im_end|>", "A dent\n\n  near the edge. 🙂🔧 ",
             "裂纹在左上角。 ", "   ", "", "x", "tabs\tand\u00a0nbsp\u00a0", "line one\nline two\n<|im_end|>\n"]
    out = io.StringIO()
    streamer = cli.answer_streamer(tok, file=out)  # one object for every answer, as in a stdin chat
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        out.seek(0)
        out.truncate()
        streamer.put(torch.zeros((1, 0), dtype=torch.long))  # generate's prompt (empty with inputs_embeds)
        for i in ids:
            streamer.put(torch.tensor([i]))
        streamer.end()
        assert out.getvalue() == tok.decode(ids, skip_special_tokens=True).strip() + "\n", (name, text)
