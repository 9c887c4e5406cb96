"""The kit's on-disk cache of converted assets (docs/architecture.md §6): where it lives, how a
folder lands, and how a load knows the bytes are the ones that were written.

Conversions (tokenizer, DINOv2, SmolLM2) run once and are saved under ``$ADKIT_CACHE``
(default ``~/.cache/adkit``), one folder per asset:

* **Publish**: the folder is written beside its final place (``.<name>.tmp-XXXX``), its
  manifest ``adkit-manifest.json`` (size and sha256 of every file) is written last, and the
  folder is renamed into place in one step. A stale entry (a corrupt folder, or a *file* where
  the folder belongs) is moved aside first and removed.
* **Lock**: every publish holds ``fcntl.flock`` on ``<name>.lock`` beside the folder, and loads
  hold it shared, so two processes converting at once give one cache: the second waits, finds
  the first one's folder complete and loads it. Temp folders left by a killed publish can
  only exist while nobody holds the lock exclusively, so they are removed under the lock.
  Without ``fcntl`` (not Linux/macOS) there is no lock; the rename still keeps folders whole.
* **Verify**: a load first compares every file with the manifest (names, sizes, sha256); a
  folder without a manifest (an older adkit, an interrupted write) is treated as unverified.
  A mismatch prints one line naming the cache and the file, and the asset is rebuilt.

Hashing costs ~0.4 s for the ``small`` caches (620 MB, warm page cache; see
``benchmarks/bench_cache.py``), so a verified file is remembered, in the process and in a stamp
``.adkit-verified.json`` beside the manifest, by (size, mtime_ns, ctime_ns, inode): later loads
re-hash only files whose stat changed. Any write through the filesystem changes ctime, which
no program can set back, so an edited byte is always seen; what a stamp cannot see is damage
below the filesystem (bad media, raw-device writes). Files changed within 2 s of their check
are never remembered (a coarse clock could hide a write in the same tick, as git's "racily
clean" index entries). ``ADKIT_CACHE_REHASH=1`` ignores the stamps and hashes everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: publishes are still atomic renames, just not serialised
    fcntl = None

T = TypeVar("T")
MANIFEST = "adkit-manifest.json"
MANIFEST_FORMAT = 1
STAMP = ".adkit-verified.json"
_RACY_NS = 2_000_000_000  # files younger than this at check time are re-hashed next time
_CHUNK = 1 << 20
_REMEMBERED: dict[tuple[str, str], dict[str, list[int]]] = {}  # (folder, manifest sha256) -> stats


def default_cache_dir() -> Path:
    """``$ADKIT_CACHE`` if set, else ``~/.cache/adkit``."""
    return Path(os.environ.get("ADKIT_CACHE") or Path.home() / ".cache" / "adkit")


def cache_folder(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir or default>/<name>``, resolved."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return (base.expanduser() / name).resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _payload(folder: Path) -> dict[str, Path]:
    """The files a cache folder holds (relative posix name -> path), manifest and stamps aside."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(STAMP)}


def write_manifest(folder: Path) -> None:
    """Write ``adkit-manifest.json`` (size and sha256 of every file) into ``folder``, atomically."""
    files = {name: {"size": p.stat().st_size, "sha256": _sha256(p)} for name, p in _payload(folder).items()}
    _write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "files": files})


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def verify_folder(folder: str | os.PathLike) -> str | None:
    """``None`` if ``folder`` holds exactly the files its manifest lists, byte for byte; else the
    reason, naming the file (e.g. ``"model.safetensors does not match its sha256 in …"``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "the entry is not a folder" if os.path.lexists(folder) else "the folder is missing"
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return f"no {MANIFEST} (an older adkit or an interrupted write): nothing vouches for its files"
    except OSError as e:
        return f"{MANIFEST} cannot be read ({e.strerror or e})"
    try:
        listed = json.loads(raw)["files"]
        listed = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST} is malformed ({type(e).__name__}: {e})"
    present = _payload(folder)
    odd = sorted(set(listed) ^ set(present))
    if odd:
        return f"{odd[0]} is missing" if odd[0] in listed else f"{odd[0]} is not listed in {MANIFEST}"
    key = (str(folder), hashlib.sha256(raw).hexdigest())
    trusted = {} if os.environ.get("ADKIT_CACHE_REHASH") == "1" else {**_read_stamp(folder, key[1]),
                                                                       **_REMEMBERED.get(key, {})}
    start, remembered = time.time_ns(), {}
    for name, (size, sha) in listed.items():
        st = present[name].stat()
        if st.st_size != size:
            return f"{name} has {st.st_size} bytes, {MANIFEST} says {size}"
        sig = _signature(st)
        if trusted.get(name) != sig:
            if _sha256(present[name]) != sha:
                return f"{name} does not match its sha256 in {MANIFEST}"
            if max(st.st_mtime_ns, st.st_ctime_ns) > start - _RACY_NS:
                continue  # too recent to vouch for by its stat next time
        remembered[name] = sig
    _REMEMBERED[key] = remembered
    if remembered != trusted:
        with contextlib.suppress(OSError):  # a read-only cache still verifies, just every process
            _write_json(folder / STAMP, {"manifest_sha256": key[1], "files": remembered})
    return None


def _read_stamp(folder: Path, manifest_sha: str) -> dict[str, list[int]]:
    try:
        stamp = json.loads((folder / STAMP).read_text())
        return dict(stamp["files"]) if stamp["manifest_sha256"] == manifest_sha else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


@contextlib.contextmanager
def folder_lock(target: Path, shared: bool = False) -> Iterator[bool]:
    """Hold ``flock`` on ``<target>.lock`` (exclusive, or ``shared`` for readers) for the block;
    yields whether a lock is held.

    Not reentrant: don't nest two locks on one target in one thread. Where no lock can be had
    (no ``fcntl``, a read-only cache folder) the block runs unlocked and yields ``False``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target.parent / f"{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o644) if fcntl else None
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _leftovers(target: Path) -> list[Path]:
    """Temp folders of interrupted publishes (``.<name>.tmp-*``) and moved-aside old entries."""
    return [*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.old-*")]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _publish_locked(target: Path, write: Callable[[Path], None], locked: bool) -> None:
    for stale in _leftovers(target) if locked else ():  # we hold the lock: a dead process's
        _remove(stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        write_manifest(tmp)  # last: a folder with a manifest is complete
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        aside = None
        if os.path.lexists(target):
            aside = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(target, aside)  # a file or a folder: out of the way in one step
        try:
            os.replace(tmp, target)  # atomic publish of the complete folder
        except OSError:
            if not target.is_dir():  # unlocked platforms: keep a folder another process published
                raise
        if aside is not None:
            _remove(aside)
    finally:
        _remove(tmp)


def publish_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Under the target's lock, run ``write(tmp)`` on a fresh temp folder beside ``target``, add
    its manifest and rename it to ``target``, replacing whatever entry was there."""
    with folder_lock(target) as locked:
        _publish_locked(target, write, locked)


def _try_load(target: Path, load: Callable[[Path], T | None]) -> tuple[T | None, str | None]:
    """(value, None) from a verified folder; else (None, why) -- why is ``None`` if it is absent."""
    if not os.path.lexists(target):
        return None, None
    problem = verify_folder(target)
    if problem is not None:
        return None, problem
    try:
        value = load(target)
    except Exception as e:  # the loaders catch their own; this is the last word
        return None, f"it does not load ({type(e).__name__}: {e})"
    return (value, None) if value is not None else (None, "its files verify but are not what this adkit writes")


def load_verified(target: Path, load: Callable[[Path], T | None]) -> T | None:
    """``load(target)`` if the folder verifies against its manifest (under a shared lock), else
    ``None``, silently. Removes leftovers of interrupted publishes on the way."""
    with folder_lock(target, shared=True) as locked:
        for stale in _leftovers(target) if locked else ():  # no exclusive holder: nobody writes these
            _remove(stale)
        return _try_load(target, load)[0]


def load_or_build(target: Path, load: Callable[[Path], T | None], build: Callable[[], T],
                  save: Callable[[T, Path], None]) -> T:
    """The cached asset at ``target``, verified; else ``build()`` it, ``save(value, tmp)`` and
    publish (one stderr line when an existing entry is rejected, naming it and the reason)."""
    value = load_verified(target, load)
    if value is not None:
        return value
    with folder_lock(target) as locked:
        value, problem = _try_load(target, load)  # another process may have just built it
        if value is not None:
            return value
        if problem is not None:
            print(f"adkit: cache {target.name} ({target}): {problem}; rebuilding it", file=sys.stderr, flush=True)
        value = build()
        _publish_locked(target, lambda tmp: save(value, tmp), locked)
        return value


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
