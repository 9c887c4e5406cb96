"""benchmarks/gpu_suite.py stays runnable between GPU sessions: its CPU smoke run on the tiny
geometry finishes, writes every section, and its three decoders agree on the token ids.
No time is asserted (speed lives in benchmarks/, docs/architecture.md §8)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_suite_smoke_run_on_cpu(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--device", "cpu", "--dtype", "fp32", "--preset", "tiny", "--rounds", "1", "--crops", "2",
                           "--prompt-tokens", "24", "--new-tokens", "6", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got) >= {"expert", "tower", "llm", "args"}
    assert got["expert"]["score_diff"] < 1e-5  # the vectorised expert computes the official loop's scores
    assert got["tower"]["crops"] == 2 and got["tower"]["tiles_per_s"] > 0
    decoders = got["llm"]["decode"]
    assert len(decoders) == 3 and all(row["ids_equal_to_first"] for row in decoders.values()), decoders
    assert "goal >= 250 tokens/s" in capsys.readouterr().out
    assert torch.is_grad_enabled()  # the suite ran in-process; autograd stays on for the tests after it
