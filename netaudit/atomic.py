"""Write files so that a reader never sees half of one and a crash never loses the old one.

Reports, baselines, verdicts and state list where code can be run on the cluster: they are
written 0600 (DESIGN.md §4 "Files"). The temporary file lives in the target's directory so the
final rename is atomic on the same filesystem, and it is fsynced first so a power cut cannot
leave an empty file behind the new name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

PRIVATE = 0o600


class WriteError(OSError):
    """The file could not be written; the old one, if any, is untouched."""


def write(path: str, data: str | bytes, mode: int = PRIVATE) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, temporary = tempfile.mkstemp(prefix=".netaudit-", suffix=".tmp", dir=directory)
    except OSError as error:
        raise WriteError(f"{path}: cannot write in {directory}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise WriteError(f"{path}: cannot write: {error.strerror or error}") from None
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except OSError:
        pass  # the rename happened; a directory fsync is best effort on some filesystems


def check_writable_directory(path: str) -> str | None:
    """Why ``path`` cannot take our files, or None. Checked before a scan starts, so that a
    bad --textfile or --baseline fails fast (exit 2) instead of after an hour of scanning."""
    if not os.path.isdir(path):
        return f"{path}: not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path}: not writable"
    return None
