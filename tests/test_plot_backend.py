"""Library figures never switch the caller's matplotlib backend. In a notebook the inline
backend draws every ``plt.show()``; a library call that switched it to Agg made every later
figure of the kernel silently empty (the stage-1 training plot did, under matplotlib 3.11,
whose inline backend is named "inline"). Checked in a fresh interpreter running the inline
backend, with the real plotting calls of training and evaluation."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import matplotlib
import matplotlib.pyplot as plt
before = matplotlib.get_backend()
assert "inline" in before.lower(), before

from adkit.train.stage1 import TrainLog
log = TrainLog(OUT)
for i in range(1, 6):
    log.step(step=i, loss=1.0 / i, lr=1e-3)
log.epoch(epoch=1, val_auroc=0.7)
fig = log.plot("title")
assert type(fig).__name__ == "Figure" and len(fig.axes) == 3
paths = log.write("t")
assert paths["plot"].stat().st_size > 1000

from adkit.eval import report
written = report._bars(["a", "b"], [0.5, 0.9], "bars", "AUROC", OUT / "bars.png", ref=0.8)
assert (OUT / "bars.png").stat().st_size > 1000, written

after = matplotlib.get_backend()
assert after == before, (before, after)
assert plt.get_fignums() == [], plt.get_fignums()  # nothing left registered with pyplot
print("OK", before)
"""


def test_training_and_report_figures_keep_the_inline_backend(tmp_path):
    code = f"from pathlib import Path\nOUT = Path({str(tmp_path)!r})\n" + SCRIPT
    env_backend = "module://matplotlib_inline.backend_inline"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": env_backend})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OK")
