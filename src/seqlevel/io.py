"""Atomic file writes for reports, manifests and replay buffers.

A write goes to a temporary file in the destination's directory, is flushed to disk, then renamed over the
destination with ``os.replace`` (atomic on POSIX and Windows within one file system). A reader, or a run killed
half-way through the write, sees the old file or the whole new one, never a prefix of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, ``os.replace``).

    The parent directory is created when missing. On any error the temporary file is removed and the error is
    raised; ``path`` is left as it was.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # the rename may already have consumed it
            os.unlink(tmp)
        raise
    _fsync_dir(d)


def atomic_write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (with a trailing newline) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def _fsync_dir(d: str) -> None:
    # Makes the rename itself durable; directories cannot be opened for fsync on some platforms (Windows).
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
