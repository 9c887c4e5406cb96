"""The kit's on-disk cache of converted assets (docs/architecture.md §6): where it lives and how folders land.

Conversions (tokenizer, DINOv2, SmolLM2) run once and are saved under ``$ADKIT_CACHE``
(default ``~/.cache/adkit``). A folder is written beside its final place and renamed into it
in one step, so a crash or a concurrent process never leaves a half-written cache behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def default_cache_dir() -> Path:
    """``$ADKIT_CACHE`` if set, else ``~/.cache/adkit``."""
    return Path(os.environ.get("ADKIT_CACHE") or Path.home() / ".cache" / "adkit")


def cache_folder(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir or default>/<name>``, resolved."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return (base.expanduser() / name).resolve()


def publish_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a fresh temp folder beside ``target``, then rename it to ``target``.

    An existing (stale or corrupt) ``target`` is replaced; if another process publishes first,
    its folder is kept and ours discarded.
    """
    stale = target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if stale:
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)  # atomic publish of the complete folder
        except OSError:  # a concurrent process published first; keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def package_file(package: str, relative: str, install: str) -> Path:
    """A data file shipped inside ``package``, found *without importing* the package.

    Asset packages are used only for their files (importing some pulls heavy or compiled
    dependencies). Raises ``RuntimeError`` naming the install command when the package or
    the file is missing.
    """
    spec = importlib.util.find_spec(package)  # locate only; don't import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed; install it with: {install}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise RuntimeError(f"{relative} is missing from package {package!r}; reinstall it with: {install}")
