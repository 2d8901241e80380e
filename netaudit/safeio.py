"""Reading what other users control, as root, without being led astray.

The probe runs as root and reads files that job owners write: /proc/<pid>/environ (their
data), and files inside their container or virtualenv such as torch/version.py. Every read
here is bounded in size, never blocks (a FIFO where a file should be), and never follows a
symbolic link that the user could point at /etc/shadow. Contents are parsed as text, never
imported or executed.

The documents a user names (an inventory, the config, the baseline, the gate's verdict) are
read by ``read_document``: a path given by mistake or malice as a FIFO, a device or a
directory is refused at once, and no file is read past its size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO

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


def list_user_dir(
    root: str, relative: str, limit_entries: int, known: dict[tuple[int, int], list[str] | None]
) -> list[str]:
    """The names in ``root``/``relative``, walked like ``read_user_file`` (no link below
    ``root`` followed); OSError(EFBIG) past ``limit_entries`` names. ``known`` caches listings
    by the (device, inode) of the directory opened, so a path that resolves elsewhere for
    another process can never stand in for it."""
    parts = [part for part in relative.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise UnsafeFileError(errno.EINVAL, f"refusing path {relative!r}")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            following = os.open(part, _NOFOLLOW | os.O_DIRECTORY, dir_fd=directory)
            os.close(directory)
            directory = following
        info = os.fstat(directory)
        key = (info.st_dev, info.st_ino)
        if key not in known:
            with os.scandir(directory) as entries:
                names = [entry.name for _, entry in zip(range(limit_entries + 1), entries, strict=False)]
            known[key] = names if len(names) <= limit_entries else None
    finally:
        os.close(directory)
    listing = known[key]
    if listing is None:
        raise UnsafeFileError(errno.EFBIG, f"{relative} has more than {limit_entries} entries")
    return listing


# Documents a user names (inventory, config, baseline, verdict) ---------------------------

_DOCUMENT_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK_BYTES = 1 << 20

_KIND_NAMES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KIND_NAMES if test(mode)), "not a regular file")


def _too_large(limit_bytes: int) -> UnsafeFileError:
    shown = f"{limit_bytes >> 20} MiB" if limit_bytes >= 1 << 20 else f"{limit_bytes} bytes"
    return UnsafeFileError(errno.EFBIG, f"larger than {shown}")


def read_document(path: str, limit_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit_bytes`` of them.

    For files a user names on the command line or in a config. Symbolic links are followed
    (the user chose the path), but what they lead to must be a regular file: a FIFO would
    block the read forever and /dev/zero would never end, so both are refused before a byte
    is read. The open itself is non-blocking, so a FIFO with no writer cannot hang it.

    Raises:
        UnsafeFileError: not a regular file, or larger than ``limit_bytes``. Its ``strerror``
            is one line without the path (``a FIFO, not a regular file``, ``larger than 4
            MiB``), for ``f"{path}: cannot read: {error.strerror}"``.
        OSError: the open's own error (FileNotFoundError, PermissionError, ...), unchanged.
    """
    try:
        fd = os.open(path, _DOCUMENT_FLAGS)
    except OSError as error:
        # Opening a Unix socket fails with ENXIO, whose text ("No such device or address")
        # sends the user looking for a missing file.
        if error.errno == errno.ENXIO and stat.S_ISSOCK(os.stat(path).st_mode):
            raise UnsafeFileError(errno.EINVAL, "a socket, not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(errno.EINVAL, f"{_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit_bytes:
            raise _too_large(limit_bytes)
        # The file may grow between fstat and read (a log being written): the cap holds anyway.
        data = bytearray()
        remaining = limit_bytes + 1
        want = min(remaining, info.st_size + 1)
        while remaining > 0:
            chunk = os.read(fd, max(1, min(remaining, want)))
            if not chunk:
                break
            data += chunk
            remaining -= len(chunk)
            want = _CHUNK_BYTES
    finally:
        os.close(fd)
    if len(data) > limit_bytes:
        raise _too_large(limit_bytes)
    return bytes(data)


def read_stream(stream: IO[bytes] | IO[str], limit_bytes: int) -> bytes:
    """At most ``limit_bytes`` of ``stream`` (stdin given as '-'), read in chunks, as bytes.

    A text stream is read through its binary buffer when it has one (sys.stdin), so the size
    is counted in bytes and decoding is left to the parser; one without (io.StringIO in
    tests) is encoded as UTF-8.

    Raises:
        UnsafeFileError: more than ``limit_bytes``, with ``strerror`` as in read_document.
        OSError: the read's own error.
    """
    source: IO[bytes] | IO[str] = getattr(stream, "buffer", stream)
    data = bytearray()
    while len(data) <= limit_bytes:
        chunk = source.read(min(_CHUNK_BYTES, limit_bytes + 1 - len(data)))
        if not chunk:
            break
        data += chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk
    if len(data) > limit_bytes:
        raise _too_large(limit_bytes)
    return bytes(data)
