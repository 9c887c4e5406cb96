"""Wall time of each notebook, run as a student runs it: a fresh Jupyter kernel per notebook.

Each notebook is executed by ``jupyter nbconvert --execute`` (its own process and kernel,
working directory ``notebooks/``; the executed copy goes to a temporary folder), in the ``small`` mode that ``make lab`` gives (``--tiny``: the CI mode,
``ADKIT_TINY=1``), and the script prints seconds per notebook, the slowest cell of each, and
whether any cell failed or the run hit ``--timeout``; "seconds" minus "in cells" is
kernel start-up and shutdown. ``--repeat N`` runs each notebook N times
back to back, which is how a kernel that stalls after its last cell shows up (one run far
slower than the others). The goal for the small mode is about two minutes per notebook on a
2-core laptop. Nothing here is asserted by tests.

    .venv/bin/python benchmarks/bench_notebooks.py                    # every notebook, small mode
    .venv/bin/python benchmarks/bench_notebooks.py --only 01 --repeat 10 --tiny   # the stall check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _cell_seconds(nb) -> list[tuple[int, float]]:
    """(index, seconds) of every executed cell, from the timing metadata nbclient records."""
    from datetime import datetime

    out = []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("execution", {})
        start, end = meta.get("iopub.execute_input"), meta.get("shell.execute_reply")
        if start and end:
            out.append((i, (datetime.fromisoformat(end.replace("Z", "+00:00"))
                            - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()))
    return out


def run(path: Path, tiny: bool, timeout: int, keep: Path | None = None) -> dict:
    """``jupyter nbconvert --execute`` one notebook (its own process and kernel, as a student's
    command line does), the executed copy written to a temporary folder (and copied to ``keep``,
    if given, to read its outputs); seconds, slowest cell, error or timeout."""
    import nbformat

    work = Path(tempfile.mkdtemp(prefix="adkit-nb-"))
    try:
        target = work / path.name  # the executed copy; the kernel runs in notebooks/, as in JupyterLab
        cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               f"--ExecutePreprocessor.timeout={timeout}", "--output-dir", str(work), str(path)]
        env = {**os.environ, "ADKIT_TINY": "1" if tiny else "0"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=path.parent, env=env, capture_output=True, text=True,
                                  timeout=timeout * 4)
            status = "ok" if proc.returncode == 0 else "error: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        except subprocess.TimeoutExpired:
            status = f"stalled: no exit after {timeout * 4} s"
        seconds = time.perf_counter() - t0
        cells = _cell_seconds(nbformat.read(target, as_version=4)) if status == "ok" else []
        if keep is not None and target.is_file():
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(target, keep / target.name)
        slowest = max(cells, key=lambda c: c[1]) if cells else (None, 0.0)
        return {"notebook": path.name, "seconds": seconds, "cells_s": sum(c for _, c in cells), "status": status,
                "slowest_cell": slowest[0], "slowest_cell_s": slowest[1]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, metavar="NN", help="notebook number prefixes (default: all)")
    ap.add_argument("--tiny", action="store_true", help="the CI mode (ADKIT_TINY=1) instead of small")
    ap.add_argument("--repeat", type=int, default=1, help="runs per notebook, back to back (default: 1)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds one cell may run (default: 600)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    ap.add_argument("--keep", metavar="DIR", type=Path, help="copy each executed notebook (with its outputs) here")
    args = ap.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if p.name[:2] in args.only]
    mode = "tiny" if args.tiny else "small"
    print(f"adkit notebook timing: {len(paths)} notebook(s), {mode} mode, {args.repeat} run(s) each, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    rows = []
    print(f"{'notebook':<40} {'run':>3} {'seconds':>8} {'in cells':>9} {'slowest cell':>13}  status")
    for path in paths:
        for r in range(args.repeat):
            row = run(path, args.tiny, args.timeout, args.keep) | {"run": r + 1, "mode": mode}
            rows.append(row)
            print(f"{row['notebook']:<40} {r + 1:>3} {row['seconds']:>8.1f} {row['cells_s']:>9.1f} "
                  f"{'#%s %.1f s' % (row['slowest_cell'], row['slowest_cell_s']):>13}  {row['status']}", flush=True)
    total = sum(r["seconds"] for r in rows)
    over = [r["notebook"] for r in rows if r["seconds"] > 120]
    print(f"total {total:.0f} s; over two minutes: {', '.join(sorted(set(over))) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
