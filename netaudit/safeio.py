"""Reading what other users control, as root, without being led astray.

The probe runs as root and reads files that job owners write: /proc/<pid>/environ (their
data), and files inside their container or virtualenv such as torch/version.py. Every read
here is bounded in size, never blocks (a FIFO where a file should be), and never follows a
symbolic link that the user could point at /etc/shadow. Contents are parsed as text, never
imported or executed.
"""

from __future__ import annotations

import errno
import os
import stat

_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFileError(OSError):
    """The path is not a plain regular file we are willing to read."""


def read_proc(path: str, limit_bytes: int) -> bytes:
    """Read a /proc pseudo-file (size 0 in stat) up to ``limit_bytes``.

    Raises the OSError of the open (FileNotFoundError when the process is gone,
    PermissionError without privilege).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        remaining = limit_bytes
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_user_file(root: str, relative: str, limit_bytes: int) -> bytes:
    """Read ``root``/``relative`` where ``root`` is trusted (e.g. /proc/<pid>/root, which we
    follow on purpose to land in the process's mount namespace) and every component of
    ``relative`` is not: each is opened with O_NOFOLLOW, so a link anywhere below ``root``
    is refused rather than followed. The file must be regular and at most ``limit_bytes``.
    """
    parts = [part for part in relative.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise UnsafeFileError(errno.EINVAL, f"refusing path {relative!r}")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            following = os.open(part, _NOFOLLOW | os.O_DIRECTORY, dir_fd=directory)
            os.close(directory)
            directory = following
        fd = os.open(parts[-1], _NOFOLLOW, dir_fd=directory)
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(errno.EINVAL, f"{relative} is not a regular file")
        if info.st_size > limit_bytes:
            raise UnsafeFileError(errno.EFBIG, f"{relative} is larger than {limit_bytes} bytes")
        return os.read(fd, limit_bytes)
    finally:
        os.close(fd)
