"""Arguments and inputs are checked before any work (adkit/validate.py, docs/architecture.md §8): each
bad case is refused with one line naming the argument or file and the reason — in the CLI and
the Python API alike — and nothing is written."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from adkit.data.records import AnomalySample, DataError
from adkit.train import Stage1Config, Stage2Config
from adkit.validate import ValidationError
from adkit.weights.official import CheckpointError, read_checkpoint, to_official_state_dict
from adkit.weights.parts import export_peft_adapter, load_trained_parts, save_trained_parts

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("adkit: error: "), err
    return lines[0]


def run_cli(argv, capsys):
    from adkit.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def png(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


# ---------------------------------------------------------------------------- thresholds, counts, sizes


@pytest.mark.parametrize("bad", [-1, float("nan"), 2, float("inf"), True, "0.5"])
def test_detect_api_refuses_thresholds_outside_0_1(tiny, photo, bad):
    with pytest.raises(ValidationError, match=r"threshold must be a number in \[0, 1\], got"):
        tiny.detect([photo], threshold=bad)


def test_detect_api_applies_a_valid_threshold(tiny, photo):
    default = tiny.detect([photo])[0]
    for t in (0.0, 1.0, default.score):
        det = tiny.detect([photo], threshold=t)[0]
        assert det.threshold == t and det.score == default.score and det.is_anomalous == (default.score >= t)


@pytest.mark.parametrize("value", ["-1", "nan", "2", "inf"])
def test_cli_detect_threshold_is_refused_before_anything_is_written(png, tmp_path, capsys, value):
    out, maps = tmp_path / "out.json", tmp_path / "maps"
    code, stdout, err = run_cli(["detect", str(png), "--preset", "tiny", "--threshold", value,
                                 "--json", str(out), "--maps", str(maps)], capsys)
    assert code == 2 and stdout == ""
    assert "--threshold must be a number in [0, 1]" in one_error_line(err)
    assert not out.exists() and not maps.exists()


@pytest.mark.parametrize("argv, message", [
    (["--method", "self", "--image-size", "0"], "--image-size must be >= 1"),
    (["--method", "self", "--image-size", "-28"], "--image-size must be >= 1"),
])
def test_cli_detect_sizes_must_be_positive(png, capsys, argv, message):
    code, stdout, err = run_cli(["detect", str(png), "--preset", "tiny", *argv], capsys)
    assert code == 2 and stdout == "" and message in one_error_line(err)


@pytest.mark.parametrize("bad", [0, -3, 1.5, None, True])
def test_chat_api_refuses_token_counts_below_one(tiny, photo, bad):
    with pytest.raises(ValidationError, match=r"max_new_tokens must be >= 1 \(a whole number\)"):
        tiny.chat(photo, "Is there a defect?", max_new_tokens=bad)


def test_a_question_longer_than_the_context_is_refused_with_the_numbers(tiny, photo):
    context = tiny.config.text.max_position_embeddings
    question = " ".join(["word"] * (context + 100))
    with pytest.raises(ValidationError, match=rf"does not fit the model's context: the prompt is [\d,]+ tokens "
                                              rf"\(image included\) \+ 8 new tokens > the context of {context:,}"):
        tiny.chat(photo, question, max_new_tokens=8)
    prompt = len(tiny.processor([[{"role": "user", "content": "<image>\nhi"}]], [[photo]],
                                add_generation_prompt=True)["input_ids"][0])
    with pytest.raises(ValidationError, match=f"ask for at most {context - prompt:,} new tokens"):
        tiny.chat(photo, "hi", max_new_tokens=context - prompt + 1)  # fits, but the answer would not
    assert isinstance(tiny.chat(photo, "hi", max_new_tokens=2), str)


def test_cli_chat_refuses_a_12008_token_question_on_small_before_running(png, tmp_path):
    """The issue's case: a 12,008-token question on ``small`` (context 8,192) used to run 263 s and
    exit 0 with an empty answer; now the CLI exits 2 with one line and the numbers."""
    question = tmp_path / "q.txt"
    question.write_text(" ".join(["word"] * 12_007))
    script = ("import sys; from adkit.cli import main; "
              f"sys.exit(main(['chat', {str(png)!r}, open({str(question)!r}).read(), '--preset', 'small']))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_error_line("\n".join(x for x in proc.stderr.splitlines() if not x.startswith("adkit: warning")
                                    and "Loading weights" not in x))
    assert "+ 128 new tokens > the context of 8,192" in line and "shorten the question" in line


@pytest.mark.parametrize("argv, message", [
    (["--micro-batch-size", "0"], "--micro-batch-size must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr=-1e-4"], "--lr must be a positive number"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--weight-decay=-0.1"], "--weight-decay must be a number >= 0"),
])
def test_cli_train_refuses_meaningless_settings_before_writing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "stage1", "--preset", "tiny", "--data", "synthetic", "--out", str(out), *argv],
                           capsys)
    assert code == 2 and message in one_error_line(err) and not out.exists()


def test_training_configs_refuse_the_same_in_the_api():
    with pytest.raises(ValidationError, match="micro_batch_size must be >= 1"):
        Stage1Config(micro_batch_size=0)
    with pytest.raises(ValidationError, match=r"warmup_ratio must be a number in \[0, 1\]"):
        Stage2Config(warmup_ratio=1.5)
    with pytest.raises(ValidationError, match="lora_dropout must be below 1"):
        Stage2Config(lora_dropout=1.0)
    with pytest.raises(ValidationError, match="lora_r must be >= 1"):
        Stage2Config(lora_r=0)


@pytest.mark.parametrize("argv, message", [
    (["eval", "zero-shot", "--heldout", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["eval", "zero-shot", "--heldout", "--mutual-batch", "1"], "--mutual-batch must be >= 2"),
    (["eval", "calibrate", "--out", "x.json", "--n-normal", "0"], "--n-normal must be >= 1"),
    (["chat", "IMG", "q", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
])
def test_cli_counts_share_one_check(png, capsys, argv, message):
    argv = [str(png) if a == "IMG" else a for a in argv]
    code, _, err = run_cli([*argv, "--preset", "tiny"], capsys)
    assert code == 2 and message in one_error_line(err)


# ---------------------------------------------------------------------------- weights files


@pytest.fixture()
def expert_parts(tiny, tmp_path):
    return save_trained_parts(tiny, tmp_path / "expert.safetensors", [n for n, _ in tiny.named_parameters()
                                                                      if n.startswith("expert.")])


def broken_copies(good: Path) -> dict[str, tuple[Path, str]]:
    """Damaged variants of a safetensors file and the reason each must be reported with."""
    data = good.read_bytes()
    out = {}
    for name, content, reason in [
        ("truncated", data[:len(data) // 2], "file is truncated"),
        ("headerless", b"\0" * 64, "invalid JSON in header"),
        ("tiny", b"\1\2", "header too small"),
        ("bad-json", (24).to_bytes(8, "little") + b"{not json at all}       ", "invalid JSON in header"),
        ("empty", b"", "header too small"),
    ]:
        path = good.with_name(f"{name}.safetensors")
        path.write_bytes(content)
        out[name] = (path, reason)
    return out


def test_every_broken_parts_file_is_named_with_its_reason(tiny, expert_parts):
    model = copy.deepcopy(tiny)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for path, reason in broken_copies(expert_parts).values():
        with pytest.raises(CheckpointError, match=rf"{path.name} \([\d,]+ bytes\): not a readable safetensors "
                                                  rf"file: .*{reason}"):
            load_trained_parts(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_bad_lora_metadata_is_named(tiny, tmp_path):
    weights = {"mllm.model.image_newline": torch.zeros(tiny.config.text.hidden_size)}
    for meta, reason in [("{bad", "metadata 'lora': invalid JSON"), ("[1, 2]", "must be a JSON object"),
                         ('{"lora_alpha": 16}', "needs a rank r >= 1"), ('{"r": 4, "lora_alpha": "x"}', "numeric lora_alpha"),
                         ("[" * 100_000 + "]" * 100_000, "nested too deeply")]:
        path = tmp_path / "lora.safetensors"
        save_file(weights, str(path), metadata={"lora": meta})
        for load in (lambda: load_trained_parts(copy.deepcopy(tiny), path), lambda: export_peft_adapter(path, tmp_path / "peft")):
            with pytest.raises(CheckpointError, match=rf"lora.safetensors: .*{reason}"):
                load()
    assert not (tmp_path / "peft").exists()


def test_nan_weights_are_refused_in_every_format(tiny, expert_parts, tmp_path):
    sd = {f"expert.{k}": v.clone() for k, v in tiny.expert.state_dict().items()}
    key = "expert.selector.key_proj.weight"
    sd[key][0, 0] = float("nan")
    save_file(sd, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match=rf"nan.safetensors: non-finite weights in 1 tensor\(s\): {key} \(1 NaN, 0 inf\)"):
        load_trained_parts(copy.deepcopy(tiny), tmp_path / "nan.safetensors")
    official = to_official_state_dict(tiny.expert)
    official["q_former.key_proj.weight"] = official["q_former.key_proj.weight"].clone()
    official["q_former.key_proj.weight"][1] = float("inf")
    torch.save(official, tmp_path / "inf.pth")
    with pytest.raises(CheckpointError, match=r"inf.pth: non-finite weights .*q_former.key_proj.weight \(0 NaN, \d+ inf\)"):
        read_checkpoint(tmp_path / "inf.pth")
    folder = tmp_path / "saved"
    model = copy.deepcopy(tiny)
    with torch.no_grad():
        model.expert.selector.key_proj.weight[0, 0] = float("nan")
    model.save_pretrained(folder)
    from adkit import AnomalyOV

    with pytest.raises(CheckpointError, match=rf"model.safetensors: non-finite weights .*{key}"):
        AnomalyOV.from_pretrained(folder)


def test_cli_eval_load_names_a_broken_or_nan_parts_file(tiny, expert_parts, tmp_path, capsys):
    broken = broken_copies(expert_parts)["truncated"][0]
    out = tmp_path / "report"
    code, stdout, err = run_cli(["eval", "zero-shot", "--heldout", "--preset", "tiny", "--load", str(broken),
                                 "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and stdout == "" and not out.exists()
    assert f"{broken} (" in one_error_line(err) and "file is truncated" in err


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"hello world", "neither a zip archive nor a pickle"),
    ("truncated", "truncated or damaged zip archive"),
])
def test_malformed_pth_reasons_are_words(tiny, tmp_path, content, reason):
    good = tmp_path / "good.pth"
    torch.save(to_official_state_dict(tiny.expert), good)
    if content == "truncated":
        content = good.read_bytes()[: good.stat().st_size // 2]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(bad)
    message = str(info.value)
    assert str(bad) in message and reason in message and not message.rstrip().endswith(":")
    assert "[Errno 22]" not in message


def test_a_saved_folder_with_a_damaged_weights_file_is_named(tiny, tmp_path):
    from adkit import AnomalyOV

    tiny.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    for dtype in (None, "auto"):
        with pytest.raises(CheckpointError, match=r"model.safetensors \([\d,]+ bytes\): not a readable safetensors"):
            AnomalyOV.from_pretrained(tmp_path, dtype=dtype)


# ---------------------------------------------------------------------------- JSON, masks, scores


def test_deeply_nested_json_names_the_file(tiny, tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    data = tmp_path / "train.json"
    data.write_text(deep)
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "stage2", "--preset", "tiny", "--data", str(data), "--out", str(out)], capsys)
    assert code == 2 and f"{data}: malformed JSON: nested too deeply" in one_error_line(err) and not out.exists()
    from adkit.calibration import Calibration

    (tmp_path / "calibration.json").write_text(deep)
    with pytest.raises(ValueError, match="calibration.json: invalid JSON \\(nested too deeply"):
        Calibration.load(tmp_path / "calibration.json")
    tiny.save_pretrained(tmp_path / "saved")
    (tmp_path / "saved" / "adkit_config.json").write_text(deep)
    from adkit import AnomalyOV

    with pytest.raises(CheckpointError, match="adkit_config.json: invalid JSON \\(nested too deeply"):
        AnomalyOV.from_pretrained(tmp_path / "saved")


def mvtec_with_mask(root: Path, mask_size) -> Path:
    rng = np.random.default_rng(0)
    for split, name in (("good", "000"), ("good", "001"), ("crack", "002")):
        folder = root / "tile" / "test" / split
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (root / "tile" / "ground_truth" / "crack").mkdir(parents=True)
    mask = root / "tile" / "ground_truth" / "crack" / "002_mask.png"
    Image.new("L", mask_size, 255).save(mask)
    return mask


def test_a_mask_of_another_size_is_an_error_naming_it(tiny, tmp_path, capsys):
    mask = mvtec_with_mask(tmp_path / "mvtec", (50, 20))
    out = tmp_path / "report"
    code, stdout, err = run_cli(["eval", "zero-shot", "--mvtec", str(tmp_path / "mvtec"), "--preset", "tiny",
                                 "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and stdout == "" and not out.exists()
    assert f"mask {mask} is 50×20 but the image is 64×64" in one_error_line(err)
    sample = AnomalySample(Image.new("RGB", (224, 224)), 1, "x", "crack", mask=str(mask), id="x/1")
    with pytest.raises(DataError, match=r"x/1: mask .*002_mask.png is 50×20 but the image is 224×224"):
        sample.load_mask((112, 112), image_size=(224, 224))
    big = AnomalySample(Image.new("RGB", (64, 32)), 1, "x", "crack", mask=np.ones((64, 128)), id="x/2")
    assert big.load_mask((64, 32), image_size=(64, 32)).shape == (32, 64)  # a downscaled image: same aspect


def test_a_right_sized_mask_still_scores_pixels(tiny, tmp_path, capsys):
    mvtec_with_mask(tmp_path / "mvtec", (64, 64))
    code, stdout, err = run_cli(["eval", "zero-shot", "--mvtec", str(tmp_path / "mvtec"), "--preset", "tiny",
                                 "--no-progress", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["results"][0]["pixel_auroc_macro"] is not None


def test_nan_scores_are_an_error_never_a_score(tiny, photo, png):
    broken = copy.deepcopy(tiny)
    with torch.no_grad():
        for p in broken.expert.selector.score_mlp.parameters():
            p.fill_(float("nan"))
    for method in ("expert", "expert+self"):
        with pytest.raises(ValidationError, match=rf"non-finite {re.escape(method)} score for 2 image\(s\): {png} \(nan\), "
                                                  r"image 1 \(nan\)"):
            broken.detect([str(png), photo], method=method)
    assert np.isfinite(broken.detect([photo], method="self")[0].score)  # the tower is fine: self still scores
