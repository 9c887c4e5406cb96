"""Repository hygiene: stripped notebooks, a standard kernel, no dataset images.

MVTec AD, VisA and ELPV are licensed for research use and may not be
redistributed, so no image from them may ever be committed; notebooks are
committed without outputs (see tools/strip_notebooks.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRIPPER = ROOT / "tools" / "strip_notebooks.py"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DATASET_NAME = re.compile(r"(^|[^a-z])(mvtec|visa|elpv)", re.IGNORECASE)


def _load_stripper():
    spec = importlib.util.spec_from_file_location("strip_notebooks", STRIPPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stripper = _load_stripper()
NOTEBOOKS = stripper.default_notebooks(ROOT)


def _repo_files() -> list[str]:
    """Files that are or would be committed: tracked + untracked-not-ignored."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
        return [f for f in out.decode("utf-8", "replace").split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        skip = {".git", ".venv", "__pycache__", ".ipynb_checkpoints", "build", "dist"}
        return [
            str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)
        ]


def is_dataset_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES and bool(DATASET_NAME.search(path))


def _notebook(outputs: list, execution_count) -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# title"},
            {"cell_type": "code", "id": "c", "metadata": {}, "source": "print(1)",
             "outputs": outputs, "execution_count": execution_count},
        ],
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path: Path):
    found = stripper.problems(stripper.read(path))
    assert not found, f"{path.name} has outputs; run `make strip`: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_kernelspec_is_python3(path: Path):
    kernelspec = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec {kernelspec!r}"


def test_checker_flags_and_strips_a_synthetic_notebook(tmp_path: Path):
    output = {"output_type": "stream", "name": "stdout", "text": "1\n"}
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(json.dumps(_notebook([output], 3)), encoding="utf-8")
    clean = tmp_path / "clean.ipynb"
    clean.write_text(json.dumps(_notebook([], None)), encoding="utf-8")

    check = subprocess.run(
        [sys.executable, str(STRIPPER), "--check", str(dirty), str(clean)],
        capture_output=True, text=True,
    )
    assert check.returncode == 1
    assert "dirty.ipynb" in check.stdout and "clean.ipynb" not in check.stdout
    assert "execution_count=3" in check.stdout

    assert stripper.main([str(dirty)]) == 0  # strip in place
    nb = stripper.read(dirty)
    assert stripper.problems(nb) == []
    assert nb["cells"][1]["source"] == "print(1)" and nb["cells"][0]["source"] == "# title"
    assert stripper.main(["--check", str(dirty), str(clean)]) == 0


def test_dataset_image_matcher():
    assert is_dataset_image("data/mvtec_ad/bottle/test/broken_large/000.png")
    assert is_dataset_image("shared/VisA/candle/Data/Images/Anomaly/001.JPG")
    assert is_dataset_image("elpv-dataset/images/cell0001.png")
    assert not is_dataset_image("notebooks/figures/architecture.png")
    assert not is_dataset_image("notes/improvisation.png")
    assert not is_dataset_image("docs/mvtec_license.md")


def test_no_dataset_images_in_repo():
    offenders = [f for f in _repo_files() if is_dataset_image(f)]
    assert not offenders, f"dataset images must never be committed (licence): {offenders}"


def test_references_point_to_what_users_have():
    """Docstrings and notebooks cite the paper or docs/architecture.md, never a document users lack,
    and every section they cite exists there."""
    text_files = [f for f in _repo_files() if f.endswith((".py", ".ipynb", ".md", ".toml", ".yml"))
                  and f != "tests/test_hygiene.py"]
    design = re.compile(r"\bDESIGN\b")
    offenders = [f for f in text_files if design.search((ROOT / f).read_text(errors="replace"))]
    assert not offenders, f"cite the paper or docs/architecture.md instead of DESIGN: {offenders}"
    arch = (ROOT / "docs" / "architecture.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", arch, re.MULTILINE))
    cited = {m for f in text_files for m in re.findall(r"architecture\.md\s+§(\d+(?:\.\d+)?)",
                                                       (ROOT / f).read_text(errors="replace"))}
    assert cited and cited <= sections, f"sections cited but missing in docs/architecture.md: {cited - sections}"
