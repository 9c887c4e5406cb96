"""The cache's integrity guarantees (docs/architecture.md §6), on real files and real processes.

A synthetic asset goes through the very code path the conversions use (``load_or_build`` →
lock → temp folder → manifest → rename); the Qwen2 tokenizer and DINOv2 are real conversions
in a temporary ``$ADKIT_CACHE``. Byte flips are made with ordinary writes, some with the
file's mtime put back afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adkit import cache

ROOT = Path(__file__).resolve().parents[1]
RACY_S = 2.1  # files younger than 2 s are never vouched for by a stamp (adkit/cache.py)

#: A synthetic asset, built by a subprocess: ``python -c WORKER <target> <mode>``. The build
#: appends its pid to ``builds.log``; ``go`` waits for a start file (so two workers race);
#: ``hang`` stops in the middle of writing the temp folder and waits to be killed.
WORKER = r"""
import os, sys, time
from pathlib import Path
from adkit.cache import load_or_build, publish_folder
target, mode = Path(sys.argv[1]), sys.argv[2]

def build():
    with open(target.parent / "builds.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("BUILD_S", "0")))
    return f"built by {os.getpid()}"

def save(value, tmp):
    (tmp / "value.txt").write_text(value)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 64)
    if mode.startswith("hang"):
        (target.parent / "ready").write_text("writing")
        time.sleep(600)

def load(folder):
    return (folder / "value.txt").read_text()

if mode == "go":
    while not (target.parent / "go").exists():
        time.sleep(0.005)
if mode == "hang-publish":
    publish_folder(target, lambda tmp: save("published", tmp))
print(load_or_build(target, load, build, save))
"""


def _env(cache_dir: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if cache_dir is not None:
        env["ADKIT_CACHE"] = str(cache_dir)
    return env


def _worker(target: Path, mode: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(target), mode], env={**_env(), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip(), err


def _builds(target: Path) -> list[str]:
    log = target.parent / "builds.log"
    return log.read_text().split() if log.exists() else []


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith("."))


def _cache_lines(err: str, name: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith(f"adkit: cache {name} ")]


def _flip(path: Path, offset: int, keep_mtime: bool) -> None:
    """Change one byte of ``path`` (an ordinary write); optionally put its mtime back."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x20]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(cache.STAMP)}


# ----------------------------------------------------------------------------- synthetic asset


def test_two_processes_converting_at_once_give_one_cache(tmp_path):
    target = tmp_path / "asset"
    procs = [_worker(target, "go", BUILD_S="1.5") for _ in range(2)]
    time.sleep(0.5)
    (tmp_path / "go").write_text("")
    outs = [_finish(p)[0] for p in procs]
    builds = _builds(target)
    assert len(builds) == 1, builds  # the second process waited on the lock and loaded the first's folder
    assert outs == [f"built by {builds[0]}"] * 2
    assert cache.verify_folder(target) is None and _leftovers(target) == []
    assert (target.parent / "asset.lock").is_file()


def test_kill_9_in_the_middle_of_a_publish_is_recovered(tmp_path):
    target = tmp_path / "asset"
    proc = _worker(target, "hang")
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    temps = _leftovers(target)
    assert len(temps) == 1 and temps[0].startswith(".asset.tmp-") and not target.exists()  # the damage
    out, err = _finish(_worker(target, "plain"))  # the lock died with the process: no hang
    assert out == f"built by {_builds(target)[-1]}" and len(_builds(target)) == 2
    assert _leftovers(target) == [] and cache.verify_folder(target) is None
    assert _cache_lines(err, "asset") == []  # nothing was there to reject


def test_killed_publish_beside_a_good_cache_is_cleaned_on_load(tmp_path):
    target = tmp_path / "asset"
    first, _ = _finish(_worker(target, "plain"))
    proc = _worker(target, "hang-publish")
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(_leftovers(target)) == 1
    out, err = _finish(_worker(target, "plain"))
    assert out == first and len(_builds(target)) == 1  # the good cache was loaded, not rebuilt
    assert _leftovers(target) == [] and err == ""


def _load(folder: Path) -> str:
    return (folder / "value.txt").read_text()


def _save(value: str, tmp: Path) -> None:
    (tmp / "value.txt").write_text(value)


def test_a_file_where_the_folder_belongs_is_replaced(tmp_path, capfd):
    target = tmp_path / "asset"
    target.write_text("not a folder")
    assert cache.verify_folder(target) == "the entry is not a folder"
    assert cache.load_or_build(target, _load, lambda: "fresh", _save) == "fresh"
    lines = _cache_lines(capfd.readouterr().err, "asset")
    assert len(lines) == 1 and "the entry is not a folder; rebuilding it" in lines[0]
    assert target.is_dir() and cache.verify_folder(target) is None and _leftovers(target) == []
    assert cache.load_or_build(target, _load, lambda: "again", _save) == "fresh"  # now it loads


def test_a_folder_without_manifest_is_unverified_and_rebuilt_once(tmp_path, capfd):
    target = tmp_path / "asset"
    target.mkdir()
    (target / "value.txt").write_text("old, unvouched")
    assert cache.load_or_build(target, _load, lambda: "fresh", _save) == "fresh"
    lines = _cache_lines(capfd.readouterr().err, "asset")
    assert len(lines) == 1 and f"no {cache.MANIFEST}" in lines[0]
    assert cache.load_or_build(target, _load, lambda: "again", _save) == "fresh"
    assert capfd.readouterr().err == ""


def test_manifest_names_missing_extra_and_resized_files(tmp_path):
    target = tmp_path / "asset"
    cache.publish_folder(target, lambda tmp: (_save("v", tmp), (tmp / "b.bin").write_bytes(b"12345")))
    assert cache.verify_folder(target) is None
    (target / "extra.txt").write_text("x")
    assert cache.verify_folder(target) == f"extra.txt is not listed in {cache.MANIFEST}"
    (target / "extra.txt").unlink()
    (target / "b.bin").write_bytes(b"1234")
    assert cache.verify_folder(target) == f"b.bin has 4 bytes, {cache.MANIFEST} says 5"
    (target / "b.bin").unlink()
    assert cache.verify_folder(target) == "b.bin is missing"
    (target / cache.MANIFEST).write_text("{not json")
    assert cache.verify_folder(target).startswith(f"{cache.MANIFEST} is malformed")


def test_stamp_skips_only_unchanged_old_files_and_rehash_overrides_it(tmp_path, monkeypatch):
    target = tmp_path / "asset"
    cache.publish_folder(target, lambda tmp: _save("stamped value", tmp))
    assert cache.verify_folder(target) is None
    assert not (target / cache.STAMP).exists()  # too young to vouch for by its stat
    time.sleep(RACY_S)
    assert cache.verify_folder(target) is None
    stamp = json.loads((target / cache.STAMP).read_text())
    st = (target / "value.txt").stat()
    assert stamp["files"] == {"value.txt": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]}

    _flip(target / "value.txt", 3, keep_mtime=True)  # ctime moves, whatever mtime says
    assert cache.verify_folder(target) == f"value.txt does not match its sha256 in {cache.MANIFEST}"

    # What a stamp cannot see: bytes changed under the filesystem leave the stat as it was.
    # Simulated by a stamp that vouches for the changed file's current stat.
    st = (target / "value.txt").stat()
    stamp["files"]["value.txt"] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    (target / cache.STAMP).write_text(json.dumps(stamp))
    cache._REMEMBERED.clear()
    assert cache.verify_folder(target) is None  # the documented tradeoff
    monkeypatch.setenv("ADKIT_CACHE_REHASH", "1")
    assert cache.verify_folder(target) == f"value.txt does not match its sha256 in {cache.MANIFEST}"


# ----------------------------------------------------------------------------- real conversions


def test_flipped_byte_in_each_tokenizer_file_is_detected_and_rebuilt(tmp_path, capfd):
    from adkit import tokenizers as adtok

    adtok._cached.cache_clear()
    tok = adtok.qwen2_tokenizer(tmp_path)
    folder = tmp_path / "qwen2-tokenizer"
    fresh = _snapshot(folder)
    files = sorted(fresh)
    assert cache.MANIFEST in files and "tokenizer.json" in files and len(files) >= 3
    time.sleep(RACY_S)
    assert cache.verify_folder(folder) is None and (folder / cache.STAMP).is_file()  # stamped
    capfd.readouterr()
    for i, name in enumerate(files):
        path = folder / name
        _flip(path, path.stat().st_size // 2, keep_mtime=i % 2 == 0)
        assert cache.verify_folder(folder) is not None, name
        adtok._cached.cache_clear()
        rebuilt = adtok.qwen2_tokenizer(tmp_path)
        lines = _cache_lines(capfd.readouterr().err, "qwen2-tokenizer")
        assert len(lines) == 1 and lines[0].endswith("; rebuilding it"), (name, lines)
        if name != cache.MANIFEST:
            assert f"{name} does not match its sha256" in lines[0]
        assert _snapshot(folder) == fresh, name  # the rebuild equals the fresh build, byte for byte
        assert rebuilt.encode("Hello, world! 123 ünï") == tok.encode("Hello, world! 123 ünï")
        assert cache.verify_folder(folder) is None and _leftovers(folder) == []
    adtok._cached.cache_clear()


DINO = r"""
import sys, time
from pathlib import Path
from adkit.weights.dinov2 import dinov2_small
go = Path(sys.argv[1]) if len(sys.argv) > 1 else None
while go is not None and not go.exists():
    time.sleep(0.005)
model = dinov2_small(224)
print(float(model.embeddings.position_embeddings.sum()))
"""


def _dino(cache_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DINO, *args], env=_env(cache_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_dinov2_cache_races_flips_and_recovers_across_processes(tmp_path):
    """Two first-time conversions at once → one conversion; a byte flipped (mtime kept) in the
    weights after a later process stamped them → the next process names it and rebuilds."""
    cache_dir = tmp_path / "cache"
    pair = [_dino(cache_dir, str(tmp_path / "go")) for _ in range(2)]
    time.sleep(1.0)  # both are importing torch; they start converting together
    (tmp_path / "go").write_text("")
    results = [_finish(p) for p in pair]
    assert sum(err.count("converting DINOv2") for _, err in results) == 1  # one conversion
    assert results[0][0] == results[1][0]
    folder = cache_dir / "dinov2-vits14-224"
    fresh = _snapshot(folder)
    assert set(fresh) == {"config.json", "model.safetensors", cache.MANIFEST}

    time.sleep(RACY_S)
    out, err = _finish(_dino(cache_dir))
    assert out == results[0][0] and "converting" not in err and _cache_lines(err, "dinov2-vits14-224") == []
    assert "model.safetensors" in json.loads((folder / cache.STAMP).read_text())["files"]

    weights = folder / "model.safetensors"
    _flip(weights, weights.stat().st_size - 1000, keep_mtime=True)  # inside the last tensor
    out, err = _finish(_dino(cache_dir))
    lines = _cache_lines(err, "dinov2-vits14-224")
    assert len(lines) == 1 and "model.safetensors does not match its sha256" in lines[0], err
    assert "converting DINOv2" in err and out == results[0][0]
    assert _snapshot(folder) == fresh and _leftovers(folder) == []
