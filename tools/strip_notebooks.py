#!/usr/bin/env python3
"""Strip outputs and execution counts from notebooks/*.ipynb (stdlib only).

    python tools/strip_notebooks.py            # rewrite unstripped notebooks in place
    python tools/strip_notebooks.py --check    # exit 1 listing notebooks that need stripping
    python tools/strip_notebooks.py a.ipynb    # explicit files instead of notebooks/*.ipynb

Committed notebooks carry no outputs: diffs stay readable, nothing from a
local run (paths, dataset images) leaks into git, and nbval re-executes them.
Only code cells' ``outputs`` and ``execution_count`` are touched; everything
else (metadata, cell ids, sources) is kept byte-for-byte in meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def problems(nb: dict[str, Any]) -> list[str]:
    """Human-readable reasons why ``nb`` is not stripped (empty list: it is)."""
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i}: has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i}: execution_count={cell['execution_count']}")
    return found


def strip(nb: dict[str, Any]) -> dict[str, Any]:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, nb: dict[str, Any]) -> None:
    # Jupyter's own on-disk style: indent 1, non-ASCII kept, trailing newline.
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def default_notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "notebooks").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, don't modify; exit 1 if any need stripping")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)

    paths = args.paths or default_notebooks()
    dirty = 0
    for path in paths:
        nb = read(path)
        found = problems(nb)
        if not found:
            continue
        dirty += 1
        if args.check:
            print(f"{path}: not stripped ({'; '.join(found)})")
        else:
            write(path, strip(nb))
            print(f"stripped {path}")
    if args.check and dirty:
        print(f"{dirty} notebook(s) need stripping: run `make strip`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
