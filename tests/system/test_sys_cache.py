"""Reliability suite, cache group: faults in the converted-weights cache (adkit/cache.py).

The three real conversions the ``small`` preset uses (DINOv2-S, SmolLM2-135M, the Qwen2
tokenizer) are copied from the user's cache (built first if missing) into a scratch
``ADKIT_CACHE``. There, one byte is flipped in every file of every conversion — with the
file's mtime put back for every other file, so only the sha256 can tell — and each must be
detected, naming the file; for DINOv2 and the tokenizer, a flip in the largest file is
followed by a real load, which must say so in one line, rebuild, and give the fresh conversion
back byte for byte (SmolLM2's 25 s conversion goes through the same ``load_or_build``). A
synthetic asset then goes through the other faults: truncation, deletion, an extra file, a
missing or malformed manifest, a same-size change, a file or a symlink where the folder
belongs, a stale lock, a killed publish (kill -9 mid-write, a real process), two first-time
builds racing.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from adkit import cache
from ledger import LEDGER
from test_cache import RACY_S, _builds, _cache_lines, _finish, _flip, _leftovers, _load, _save, _snapshot, _worker


def _conversions():
    """name -> (cache-folder name, loader(cache_dir) after clearing the in-process memo)."""
    from adkit import tokenizers
    from adkit.weights import dinov2, smollm2

    def dino(d):
        dinov2._cached.cache_clear()
        return dinov2.dinov2_small(224, d)

    def smol(d):
        smollm2._cached.cache_clear()
        smollm2._cached_tokenizer.cache_clear()
        return smollm2.smollm2(d)

    def tok(d):
        tokenizers._cached.cache_clear()
        return tokenizers.qwen2_tokenizer(d)

    return {"DINOv2-S": ("dinov2-vits14-224", dino), "SmolLM2-135M": ("smollm2-135m-instruct", smol),
            "Qwen2 tokenizer": ("qwen2-tokenizer", tok)}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A scratch cache holding copies of the real conversions (from the user's cache)."""
    root = tmp_path_factory.mktemp("adkit-cache")
    for name, (folder, load) in _conversions().items():
        source = cache.cache_folder(folder)
        if cache.verify_folder(source) is not None:
            load(None)  # builds it in the user's cache, as first use would
        shutil.copytree(source, root / folder, ignore=shutil.ignore_patterns(cache.STAMP))
    time.sleep(RACY_S)  # old enough for stamps: the mtime-kept flips must be caught by the hash
    return root


def _restore(folder: Path, fresh: dict[str, bytes]) -> None:
    for rel, data in fresh.items():
        (folder / rel).write_bytes(data)
    assert cache.verify_folder(folder) is None


def _same_conversion(now: dict[str, bytes], fresh: dict[str, bytes]) -> None:
    """Every converted file byte for byte; SmolLM2's stamp holds a forward-pass fingerprint,
    whose float sums move ~1e-5 with the thread count (loads accept it within 1e-4), so it is
    compared numerically, and the manifest, which hashes that stamp, by its other entries."""
    import json

    import numpy as np

    assert set(now) == set(fresh), f"files differ: {sorted(set(now) ^ set(fresh))}"
    stamp, manifest = "adkit_smollm2.json", cache.MANIFEST
    for rel in fresh:
        if rel not in (stamp, manifest):
            assert now[rel] == fresh[rel], f"{rel} differs from the fresh conversion"
    if stamp in fresh:
        a, b = json.loads(now[stamp]), json.loads(fresh[stamp])
        assert np.allclose(a.pop("fingerprint"), b.pop("fingerprint"), atol=1e-4, rtol=0) and a == b, stamp
    files = [{k: v for k, v in json.loads(m)["files"].items() if k != stamp} for m in (now[manifest], fresh[manifest])]
    assert files[0] == files[1], f"{manifest} differs"


def test_real_conversions(scratch):
    cases = {}
    for label, (name, load) in _conversions().items():
        folder = scratch / name
        fresh = _snapshot(folder)
        for i, rel in enumerate(sorted(fresh)):
            def flip(folder=folder, rel=rel, keep=i % 2 == 0, fresh=fresh):
                path = folder / rel
                _flip(path, path.stat().st_size // 2, keep_mtime=keep)
                try:
                    problem = cache.verify_folder(folder)
                    assert problem is not None, "a changed byte passed verification"
                    assert rel == cache.MANIFEST or f"{rel} does not match its sha256" in problem, problem
                finally:
                    _restore(folder, fresh)
            cases[f"{label}: byte flipped in {rel}{' (mtime kept)' if i % 2 == 0 else ''}"] = flip

        def rebuild(folder=folder, load=load, fresh=fresh, name=name):
            weights = max(fresh, key=lambda r: len(fresh[r]))
            _flip(folder / weights, len(fresh[weights]) - 1000, keep_mtime=True)  # inside the last tensor
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                load(str(scratch))
            lines = _cache_lines(err.getvalue(), name)
            assert len(lines) == 1 and f"{weights} does not match its sha256" in lines[0], err.getvalue()[-300:]
            _same_conversion(_snapshot(folder), fresh)
            assert cache.verify_folder(folder) is None and _leftovers(folder) == []
        if label != "SmolLM2-135M":  # its rebuild (a 25 s GGUF conversion) is the same code path as these two
            cases[f"{label}: flipped weights rebuilt on load, byte-identical"] = rebuild
    LEDGER.run_all("cache: real conversions", cases)
    LEDGER.assert_handled("cache: real conversions")


def _asset(root: Path, name: str) -> Path:
    target = root / name
    cache.publish_folder(target, lambda tmp: (_save("good", tmp), (tmp / "blob.bin").write_bytes(bytes(range(256)))))
    return target


def _rebuilt(target: Path, expect: str) -> None:
    """A load names the problem in one line, rebuilds, and the entry verifies afterwards."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        value = cache.load_or_build(target, _load, lambda: "rebuilt", _save)
    lines = _cache_lines(err.getvalue(), target.name)
    assert value == "rebuilt", f"loaded {value!r} from a damaged entry"
    assert len(lines) == 1 and expect in lines[0] and lines[0].endswith("; rebuilding it"), lines
    assert cache.verify_folder(target) is None and _leftovers(target) == []


def test_synthetic_faults(tmp_path):
    def damage(name, hurt, expect):
        def attack():
            target = _asset(tmp_path, name)
            hurt(target)
            _rebuilt(target, expect)
        return attack

    cases = {
        "file truncated": damage("truncated", lambda t: (t / "blob.bin").write_bytes(b"\0" * 10), "blob.bin has 10 bytes"),
        "file deleted": damage("deleted", lambda t: (t / "blob.bin").unlink(), "blob.bin is missing"),
        "extra file added": damage("extra", lambda t: (t / "evil.py").write_text("x"), "evil.py is not listed"),
        "manifest deleted": damage("nomanifest", lambda t: (t / cache.MANIFEST).unlink(), f"no {cache.MANIFEST}"),
        "manifest not JSON": damage("badjson", lambda t: (t / cache.MANIFEST).write_text("{oops"), "is malformed"),
        "same-size change, mtime new": damage("samesize", lambda t: (t / "value.txt").write_text("evil"),
                                              "value.txt does not match its sha256"),
        "a file where the folder belongs": damage("isfile", lambda t: (shutil.rmtree(t), t.write_text("x")),
                                                  "the entry is not a folder"),
        "a symlink to another folder": damage("symlink", lambda t: (shutil.rmtree(t), (tmp_path / "elsewhere").mkdir(),
                                                                    t.symlink_to(tmp_path / "elsewhere")),
                                              f"no {cache.MANIFEST}"),
    }

    def stale_lock():
        target = tmp_path / "stale"
        (tmp_path / "stale.lock").write_text("12345")  # a lock file left by a dead process: flock is free
        assert cache.load_or_build(target, _load, lambda: "built", _save) == "built"
        assert cache.verify_folder(target) is None

    def killed_publish():
        target = tmp_path / "killed" / "asset"
        target.parent.mkdir()
        proc = _worker(target, "hang")
        deadline = time.monotonic() + 120
        while not (target.parent / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the worker never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _leftovers(target), "no temp folder left to recover from"
        out, _ = _finish(_worker(target, "plain"))
        assert out.startswith("built by") and cache.verify_folder(target) is None
        assert _leftovers(target) == [], f"temp folders left: {_leftovers(target)}"

    def racing_builds():
        target = tmp_path / "race" / "asset"
        target.parent.mkdir()
        procs = [_worker(target, "go", BUILD_S="0.5") for _ in range(2)]
        time.sleep(1.0)
        (target.parent / "go").write_text("")
        outs = [_finish(p)[0] for p in procs]
        assert len(_builds(target)) == 1 and outs[0] == outs[1], (outs, _builds(target))

    cases.update({"stale lock file": stale_lock, "kill -9 during a publish": killed_publish,
                  "two first-time builds at once": racing_builds})
    LEDGER.run_all("cache: faults", cases)
    LEDGER.assert_handled("cache: faults")
