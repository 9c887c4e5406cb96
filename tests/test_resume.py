"""Resume after a fault (docs/architecture.md §4): a checkpoint is complete only once its marker is
written last; ``resume_from="latest"`` falls back to the newest complete one, says which it
skipped and why, deletes nothing, and the resumed run still equals an uninterrupted one."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from adkit.train import Stage1Config, Stage2Config
from adkit.train.checkpoints import MARKER, find_stage1, incomplete_reason
from adkit.train.stage1 import train_stage1
from adkit.train.stage2 import train_stage2
from adkit.weights.official import CheckpointError
from test_stage1 import tiny_samples, write_tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return tiny_samples(["a", "b"], 6, 2, seed=0), tiny_samples(["c"], 3, 3, seed=1)


def quiet(**kw):
    return Stage1Config(**{"batch_size": 4, "micro_batch_size": 2, "progress": False, **kw})


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path.read_bytes()


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def stage1_runs(tiny, data, tmp_path_factory):
    """An uninterrupted 8-step run, and a run stopped after step 4 with a checkpoint per step."""
    root = tmp_path_factory.mktemp("stage1")
    cache = str(root / "cache")
    full = copy.deepcopy(tiny)
    train_stage1(full, *data, quiet(feature_cache=cache), root / "full")
    part = copy.deepcopy(tiny)
    res = train_stage1(part, *data, quiet(feature_cache=cache, max_steps=4, save_steps=1), root / "part")
    assert res.global_step == 4
    return root, full, cache


def test_every_stage1_checkpoint_carries_a_marker_listing_its_files(stage1_runs):
    root, _, _ = stage1_runs
    ckpts = sorted((root / "part" / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == [f"step-{i:06d}" for i in range(1, 5)]
    for c in ckpts:
        listed = json.loads((c / MARKER).read_text())["files"]
        assert listed == {p.name: p.stat().st_size for p in c.iterdir() if p.name != MARKER}
        assert incomplete_reason(c) is None


def test_a_truncated_newest_checkpoint_is_skipped_and_the_run_still_matches(tiny, data, stage1_runs):
    root, full, cache = stage1_runs
    run = root / "part"
    newest = run / "checkpoints" / "step-000004"
    truncate(newest / "trainer_state.pt")
    before = snapshot(newest)
    with pytest.warns(UserWarning, match=r"resuming from step-000003, skipping step-000004 \(trainer_state.pt is "
                                         r"[\d,]+ bytes, [\d,]+ when saved \(truncated"):
        assert find_stage1(run, "latest").name == "step-000003"
    assert snapshot(newest) == before  # nothing deleted or rewritten by looking
    # naming the damaged folder explicitly: an error naming the file and the reason (not "[Errno 22]")
    with pytest.raises(CheckpointError, match=r"step-000004/trainer_state.pt \([\d,]+ bytes\): .*zip archive"):
        train_stage1(copy.deepcopy(tiny), *data, quiet(feature_cache=cache, resume_from=str(newest)), run)
    assert snapshot(newest) == before
    resumed = copy.deepcopy(tiny)
    with pytest.warns(UserWarning, match="skipping step-000004"):
        res = train_stage1(resumed, *data, quiet(feature_cache=cache, save_steps=1, resume_from="latest"), run)
    assert res.completed and res.global_step == 8
    for (k, a), b in zip(full.expert.state_dict().items(), resumed.expert.state_dict().values()):
        assert torch.equal(a, b), k  # bit-identical to the uninterrupted run despite the fault
    assert incomplete_reason(newest) is None  # step 4 was trained again and saved whole


def test_a_checkpoint_without_its_marker_is_incomplete(tiny, data, tmp_path, stage1_runs):
    _, _, cache = stage1_runs
    run = tmp_path / "run"
    train_stage1(copy.deepcopy(tiny), *data, quiet(feature_cache=cache, max_steps=2, save_steps=1), run)
    (run / "checkpoints" / "step-000002" / MARKER).unlink()  # killed before the marker was written
    with pytest.warns(UserWarning, match=rf"skipping step-000002 \(no {MARKER} \(interrupted while saving"):
        assert find_stage1(run, "latest").name == "step-000001"
    (run / "checkpoints" / "step-000001" / "expert.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint: step-000002 \(no .*step-000001 "
                                                r"\(expert.safetensors is missing\).*resume_from=<folder>"):
        find_stage1(run, "latest")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]


def test_cli_resume_says_in_one_line_what_it_skipped(tiny, data, tmp_path, capsys):
    from adkit.cli import main

    root = write_tiny_folder(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "stage1", "--preset", "tiny", "--data", str(root), "--val-categories", "b", "--out", str(out),
            "--batch-size", "2", "--micro-batch-size", "1", "--epochs", "1", "--no-progress", "--save-steps", "1"]
    assert main(argv + ["--max-steps", "2"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    truncate(out / "checkpoints" / "step-000002" / "expert.safetensors")
    assert main(argv + ["--resume-from", "latest"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "resum" in line]
    assert len(err) == 1 and err[0].startswith("adkit: warning: resume_from='latest': resuming from step-000001, "
                                               "skipping step-000002 (expert.safetensors is")


# ---------------------------------------------------------------------------- stage 2 (transformers.Trainer)


def test_stage2_resume_latest_skips_a_truncated_trainer_checkpoint(tiny, photo, tmp_path):
    records = [{"id": f"r{i}", "image": photo.resize((40 + 10 * i, 50)),
                "conversations": [{"from": "human", "value": "<image>\nIs there any defect?"},
                                  {"from": "gpt", "value": "Yes, a scratch." if i % 2 else "No."}]} for i in range(2)]
    cfg = dict(llm="frozen", lr=5e-2, batch_size=1, micro_batch_size=1, max_steps=2, save_steps=1, progress=False)
    full = copy.deepcopy(tiny)
    train_stage2(full, records, Stage2Config(**cfg), tmp_path / "run")
    for step in (1, 2):
        assert incomplete_reason(tmp_path / "run" / f"checkpoint-{step}") is None
    truncate(tmp_path / "run" / "checkpoint-2" / "trained.safetensors")
    resumed = copy.deepcopy(tiny)
    with pytest.warns(UserWarning, match=r"resuming from checkpoint-1, skipping checkpoint-2 \(trained.safetensors is"):
        res = train_stage2(resumed, records, Stage2Config(**{**cfg, "resume_from": "latest"}), tmp_path / "run")
    assert res.global_step == 2
    trained = [n for n, p in full.named_parameters()
               if n.startswith("mllm.model.multi_modal_projector") or n == "mllm.model.image_newline"]
    for name in trained:
        torch.testing.assert_close(dict(resumed.named_parameters())[name], dict(full.named_parameters())[name],
                                   atol=1e-6, rtol=1e-5)
    assert not torch.equal(dict(resumed.named_parameters())["mllm.model.image_newline"],
                           dict(tiny.named_parameters())["mllm.model.image_newline"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-saved whole: nothing left to skip
        assert incomplete_reason(tmp_path / "run" / "checkpoint-2") is None


def test_stage2_latest_with_no_checkpoint_names_the_folder(tiny, photo, tmp_path):
    records = [{"id": "r0", "image": photo, "conversations": [{"from": "human", "value": "<image>\nDefect?"},
                                                               {"from": "gpt", "value": "No."}]}]
    cfg = Stage2Config(llm="frozen", batch_size=1, micro_batch_size=1, max_steps=1, progress=False, resume_from="latest")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'empty'} holds no checkpoint"):
        train_stage2(copy.deepcopy(tiny), records, cfg, tmp_path / "empty")
    assert not (tmp_path / "empty" / "trained.safetensors").exists()
