"""What the demo may read: only files it was given.

The app's events take file payloads straight from the request (``preprocess=False``, so that
:func:`adkit.images.load_image` alone decodes them). A payload is just JSON — ``{"path":
"/any/server/file.png"}`` — so without a check here any image on the server could be read
back through the overlay, any path's existence and size probed through the error text, and a
FIFO or ``/dev/zero`` could stall or exhaust the server. :class:`UploadGuard` accepts a path
only when it resolves (symlinks followed, ``..`` collapsed) into Gradio's upload folder for
this app or to one of the app's own example files, and only when it is a regular file under
the upload cap; everything else is refused with one message that is the same whether the
path exists or not. Inline ``data:`` URLs (webcam / clipboard snapshots) are size-checked
before they are decoded.

The handlers in :mod:`adkit.demo.handlers` stay plain functions for Python callers, who may
pass any local path; the guard sits at the HTTP boundary, in :func:`adkit.demo.app.build_demo`.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from .handlers import DemoInputError

__all__ = ["MAX_UPLOAD_MB", "MAX_UPLOAD_BYTES", "UploadGuard", "upload_folder"]

#: The upload cap: Gradio refuses bigger uploads (HTTP 413) and the guard bigger files / data URLs.
MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # what Gradio reads "20mb" as (its FileSize.MB is 2**20 bytes)
REFUSED = ("the demo reads only images uploaded to it (or its own examples); "
           "please upload the image with the upload button or the API's file upload")


def upload_folder() -> Path:
    """Where Gradio stores what this process's apps receive (``$GRADIO_TEMP_DIR`` or
    ``<tmp>/gradio``), resolved; the same rule as ``gradio.utils.get_upload_folder``."""
    from gradio.utils import get_upload_folder

    return Path(os.path.realpath(get_upload_folder()))


class UploadGuard:
    """Vets file payloads from requests: :meth:`vet` returns a path (or bytes) safe to open.

    ``roots``: folders whose files may be read (default: Gradio's upload folder); ``files``:
    single files that may be read (the example gallery); ``max_bytes``: the size cap.
    """

    def __init__(self, roots=None, files=(), max_bytes: int = MAX_UPLOAD_BYTES):
        roots = [upload_folder()] if roots is None else roots
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.files = {os.path.realpath(f) for f in files}
        self.max_bytes = int(max_bytes)

    def allows(self, path) -> bool:
        """True when ``path`` resolves to an allowed file name (nothing on disk is opened)."""
        real = Path(os.path.realpath(path))
        return str(real) in self.files or any(real.is_relative_to(root) for root in self.roots)

    def vet(self, value):
        """A payload (Gradio's file dict, a path string, ``None``) → ``None``, a vetted path or
        the decoded bytes of a ``data:`` URL. Raises :class:`DemoInputError` otherwise."""
        if value is None:
            return None
        if isinstance(value, dict):
            if value.get("path"):
                return self.vet_path(value["path"])
            url = value.get("url") or ""
            if isinstance(url, str) and url.startswith("data:"):
                return self._data_url(url)
            raise DemoInputError("the upload arrived without a file; please upload it again")
        if isinstance(value, (str, os.PathLike)):
            return self.vet_path(value)
        raise DemoInputError(f"unexpected upload payload of type {type(value).__name__}; please upload the image again")

    def vet_many(self, values) -> list:
        """:meth:`vet` for each of a multi-file payload (``None`` → ``[]``)."""
        if values is None:
            return []
        if not isinstance(values, (list, tuple)):
            values = [values]
        return [self.vet(v) for v in values]

    def vet_path(self, path) -> str:
        """``path`` if it names an allowed regular file within the cap, resolved; else an error
        that says nothing about the path itself (exists or not, file or not)."""
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
        if not text or "\0" in text or not os.path.isabs(text) or not self.allows(text):
            raise DemoInputError(REFUSED)
        real = os.path.realpath(text)
        try:
            info = os.stat(real)  # only now, for a path inside the allowed places
        except OSError:
            raise DemoInputError("the upload is no longer on the server; please upload it again") from None
        if not stat.S_ISREG(info.st_mode):  # a FIFO, device or folder would block or never end
            raise DemoInputError(REFUSED)
        if info.st_size > self.max_bytes:
            raise DemoInputError(f"the upload is over the demo's {MAX_UPLOAD_MB} MB cap; downscale it and try again")
        return real

    def _data_url(self, url: str) -> bytes:
        """Decode an inline ``data:[mime];base64,…`` snapshot, refusing it before decoding when
        it is over the cap (base64 carries 3 bytes per 4 characters)."""
        head, _, body = url.partition(",")
        if not head.endswith(";base64") or not body:
            raise DemoInputError("the inline image is not base64 data; please upload the file instead")
        if len(body) * 3 // 4 > self.max_bytes:
            raise DemoInputError(f"the upload is over the demo's {MAX_UPLOAD_MB} MB cap; downscale it and try again")
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise DemoInputError("the inline image is not valid base64; please upload the file instead") from None
