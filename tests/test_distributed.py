"""Scale-out is real: stage 1 and stage 2 in 2 CPU processes (torchrun, gloo) match one process
with the same global batch; the DeepSpeed / accelerate configs and launch commands are valid."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from adkit.train import Stage1Config, Stage2Config

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# One script for both runs: under torchrun it is one of 2 ranks; in the test it runs in-process.
WORKER = textwrap.dedent("""
    import copy, sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_stage1 import tiny_samples
    from adkit import AnomalyOV
    from adkit.train import Stage1Config, Stage2Config, train_stage1, train_stage2

    def run(out, model=None):
        model = model or AnomalyOV.from_preset("tiny")
        train, val = tiny_samples(["a", "b"], 6, 2, seed=0), tiny_samples(["c"], 2, 2, seed=1)
        train_stage1(model, train, val, Stage1Config(batch_size=8, micro_batch_size=2, max_steps=2, progress=False,
                                                    feature_cache=out + "/cache"), out + "/s1")
        records = [{{"id": str(i), "image": s.load_image(), "conversations": [
            {{"from": "human", "value": "<image>\\nIs there any defect?"}},
            {{"from": "gpt", "value": "Yes." if s.label else "No."}}]}} for i, s in enumerate(train[5:9])]
        res = train_stage2(model, records, Stage2Config(llm="lora", lora_r=2, lr=1e-2, warmup_ratio=0.0, batch_size=4,
                                                  micro_batch_size=1, max_steps=2, progress=False), out + "/s2")
        (res.out_dir / f"world-{{torch.distributed.get_rank() if torch.distributed.is_initialized() else 0}}").write_text(
            str(res.world_size))
        return model

    if __name__ == "__main__":
        run(sys.argv[1])
""")


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the same script in this process: world size 1, so each step accumulates 4 (stage 1) / 4 (stage 2) micro-batches
    ns: dict = {}
    exec(compile(script.read_text().replace('if __name__ == "__main__":', "if False:"), str(script), "exec"), ns)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ns["run"](str(tmp_path / "one"))
    finally:
        torch.set_num_threads(n)
    state = json.loads((tmp_path / "ddp" / "s1" / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["world_size"] == 2 and state["global_step"] == 2
    assert [(tmp_path / "ddp" / "s2" / f"world-{r}").read_text() for r in (0, 1)] == ["2", "2"]  # Trainer ran DDP
    for part in ("s1/expert.safetensors", "s2/trained.safetensors"):
        one, two = _load(tmp_path / "one" / part), _load(tmp_path / "ddp" / part)
        assert one.keys() == two.keys() and one
        for k in one:
            torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=lambda m: f"{part} {k}: {m}")
    # and training did move the weights (the comparison is not between two untouched copies)
    from adkit import AnomalyOV

    base = AnomalyOV.from_preset("tiny").expert.state_dict()
    moved = _load(tmp_path / "one" / "s1/expert.safetensors")
    assert any(not torch.equal(moved[f"expert.{k}"], v) for k, v in base.items())


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_are_valid(stage):
    cfg = json.loads((ROOT / "configs" / "deepspeed" / f"zero{stage}.json").read_text())
    assert cfg["zero_optimization"]["stage"] == stage
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert cfg[key] == "auto", key  # filled from TrainingArguments by transformers
    assert cfg["bf16"]["enabled"] == "auto"
    assert "scheduler" not in cfg and "optimizer" not in cfg  # the Trainer's AdamW + cosine schedule are used
    if stage == 3:
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_accelerate_configs_are_valid():
    found = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert set(found) >= {"single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3"}
    assert found["single_gpu"]["distributed_type"] == "NO" and found["single_gpu"]["num_processes"] == 1
    assert found["multi_gpu"]["distributed_type"] == "MULTI_GPU"
    for z in (2, 3):
        ds = found[f"deepspeed_zero{z}"]
        assert ds["distributed_type"] == "DEEPSPEED"
        assert (ROOT / ds["deepspeed_config"]["deepspeed_config_file"]).is_file()


def test_launch_command_round_trips_through_the_cli():
    from adkit.cli import build_parser
    from adkit.train.cli import _config_from

    s1 = Stage1Config(micro_batch_size=16, feature_cache="runs/features", epochs=3, progress=False)
    cmd = s1.launch_command(nproc=8, preset="paper-0.5b", data="synthetic", out="runs/s1")
    words = shlex.split(cmd)
    assert words[:5] == ["torchrun", "--nproc_per_node", "8", "-m", "adkit.train.launch"]
    args = build_parser().parse_args(["train", *words[5:]])
    assert _config_from(args, Stage1Config) == s1 and args.preset == "paper-0.5b"
    s2 = Stage2Config(llm="lora", micro_batch_size=2, gradient_checkpointing=True)
    cmd = s2.launch_command(nproc=8, deepspeed="zero2", preset="paper-0.5b", data="x.json", out="runs/s2")
    words = shlex.split(cmd)
    args = build_parser().parse_args(["train", *words[5:]])
    assert args.deepspeed == "configs/deepspeed/zero2.json"
    assert _config_from(args, Stage2Config) == dataclasses.replace(s2, deepspeed="configs/deepspeed/zero2.json")
    acc = s2.launch_command(nproc=8, launcher="accelerate", deepspeed="zero3", preset="paper-7b", data="x.json", out="o")
    assert "configs/accelerate/deepspeed_zero3.yaml" in acc and "--num_processes 8" in acc and "--deepspeed" not in acc
    with pytest.raises(ValueError, match="DeepSpeed is for stage 2"):
        s1.launch_command(deepspeed="zero2")
