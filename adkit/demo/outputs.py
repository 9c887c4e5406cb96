"""Where the demo's output pictures live: a bounded folder that removes itself (docs/architecture.md §8, "Demo").

The app hands its pictures (the overlay, the crops, the selected tokens) to Gradio as files
with unique names (see ``build_demo``): Gradio copies each into its own cache as the event
returns and serves that copy, so the file is needed only for a moment. Left alone, one
folder per app under the system temp dir would grow by every picture of every request
(~100 KB per detection) and outlive the process on SIGTERM.

:class:`OutputFolder` keeps the newest ``keep`` files and deletes older ones as new ones
arrive, so its size is bounded however long the app runs; ``keep`` is far more than the
pictures of the requests in flight at once (a few per concurrent event), so a file is never
deleted while Gradio still reads it. The folder is removed by :meth:`close` (``adkit demo``
calls it on exit, on Ctrl+C and on SIGTERM, :func:`remove_on_sigterm`) and, failing that,
when the interpreter exits.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["KEEP_FILES", "OutputFolder", "limit_malloc_arenas", "release_freed_memory", "remove_on_sigterm"]

#: Output files kept by default: 64 × ~20–100 KB; ≥ 20× the pictures of 2 concurrent events.
KEEP_FILES = 64
#: How previews (overlay, crops, token strips) are sent: JPEG at quality 90.
PREVIEW = ("JPEG", {"quality": 90})
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}


class OutputFolder:
    """A private temp folder ``adkit-demo-*`` holding at most ``keep`` picture files."""

    def __init__(self, keep: int = KEEP_FILES, prefix: str = "adkit-demo-"):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = int(keep)
        self._dir = tempfile.TemporaryDirectory(prefix=prefix)  # its finalizer also runs at interpreter exit
        self.path = Path(self._dir.name)
        self._files: deque[str] = deque()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.path)

    def write_png(self, picture) -> str:
        """Save ``picture`` (a PIL image or a uint8 array) losslessly under a fresh unique name."""
        return self.write(picture, "PNG")

    def write_preview(self, picture) -> str:
        """Save ``picture`` as the demo's previews are sent (:data:`PREVIEW`: JPEG, quality 90 —
        about 5x smaller and far cheaper to encode than PNG for these photo-like overlays)."""
        return self.write(picture, PREVIEW[0], **PREVIEW[1])

    def write(self, picture, fmt: str, **options) -> str:
        """Save ``picture`` in ``fmt`` (a PIL format name) under a fresh unique name; return its
        path. Files beyond the newest ``keep`` are deleted."""
        fd, path = tempfile.mkstemp(suffix=_SUFFIX.get(fmt, f".{fmt.lower()}"), dir=self.path)
        with os.fdopen(fd, "wb") as f:
            img = Image.fromarray(np.asarray(picture))
            (img.convert("RGB") if fmt == "JPEG" else img).save(f, format=fmt, **options)
        with self._lock:
            self._files.append(path)
            old = [self._files.popleft() for _ in range(len(self._files) - self.keep)]
        for p in old:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        return path

    def files(self) -> list[str]:
        """The files kept now, oldest first."""
        with self._lock:
            return list(self._files)

    def close(self) -> None:
        """Remove the folder and everything in it (idempotent)."""
        with self._lock:
            self._files.clear()
        self._dir.cleanup()

    cleanup = close  # the name TemporaryDirectory uses


def remove_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt in the main thread, so ``launch()``'s blocking loop
    stops the server and the caller's ``finally`` (and interpreter exit) clean up as for Ctrl+C.
    Python's default SIGTERM action ends the process without running either."""

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def release_freed_memory() -> None:
    """Hand memory freed by a finished request back to the OS (glibc ``malloc_trim``; a no-op
    elsewhere). Each request allocates and frees image-sized buffers from several worker
    threads; glibc keeps such memory in per-thread arenas, so a long-running server's RSS would
    creep up run after run although nothing is retained."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None
_M_ARENA_MAX = -8  # glibc's mallopt parameter number for the arena count


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX, count)``; a no-op
    elsewhere); call it before worker threads start. By default glibc gives each busy thread
    an arena of its own (up to 8 per core), and a server whose worker threads take turns on
    image-sized buffers fragments every one of them; with two arenas RSS stays flat over long
    runs. Returns whether the cap was set."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, int(count)))
