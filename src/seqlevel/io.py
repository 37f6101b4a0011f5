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
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are readable like any other file (0644)
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


def make_readable(root: str) -> None:
    """Give every file under ``root`` the mode a plain ``open()`` would (0644 under the usual umask 022).

    Some writers (``tempfile.mkstemp``, the safetensors shard writer) create 0600 files; a model others must read
    should not depend on which library wrote which file.
    """
    mode = 0o666 & ~_umask()
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if not os.path.islink(p) and (os.stat(p).st_mode & 0o777) != mode:
                with contextlib.suppress(PermissionError):
                    os.chmod(p, mode)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _fsync_dir(d: str) -> None:
    # Makes the rename itself durable; directories cannot be opened for fsync on some platforms (Windows).
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
