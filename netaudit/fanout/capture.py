"""Run one node's command and keep at most what we would accept of its output.

subprocess.run(capture_output=True) reads everything a node prints before we can apply a
cap, so a node that streams gigabytes (a broken wrapper, a hostile node, `yes`) would take
the admin's memory with it. Here stdout is read as it arrives and the command is killed the
moment it passes the cap; stderr keeps only its tail, which is all a failure line shows.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass
from typing import IO, cast

_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Captured:
    """Attributes:
    returncode: None when the command timed out or could not start.
    stdout: at most stdout_limit + 1 bytes: one byte more than the cap says "too large".
    error: why there is no returncode (timeout, not found), or None.
    """

    returncode: int | None
    stdout: bytes
    stderr: bytes
    error: str | None = None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def run_capped(
    argv: list[str], stdin: bytes | None, timeout_s: float, stdout_limit: int, stderr_keep: int = 65536
) -> Captured:
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        return Captured(None, b"", b"", f"cannot run {argv[0]!r}: not found")
    except OSError as error:
        return Captured(None, b"", b"", f"cannot run {argv[0]!r}: {error.strerror or error}")
    stdout_pipe, stderr_pipe = cast("IO[bytes]", process.stdout), cast("IO[bytes]", process.stderr)
    deadline = time.monotonic() + timeout_s
    stdout, stderr = bytearray(), bytearray()
    buffers = {stdout_pipe.fileno(): stdout, stderr_pipe.fileno(): stderr}
    pending = memoryview(stdin or b"")
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        stdin_fd = process.stdin.fileno() if process.stdin is not None else -1
        if process.stdin is not None:
            os.set_blocking(stdin_fd, False)
            selector.register(stdin_fd, selectors.EVENT_WRITE)
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    _stop(process)
                    return Captured(
                        None, b"", bytes(stderr[-stderr_keep:]), f"timed out after {timeout_s:g} s"
                    )
                for key, _events in selector.select(left):
                    fd = key.fd
                    if fd == stdin_fd:
                        try:
                            pending = pending[os.write(fd, pending[:_CHUNK]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:  # the node stopped reading: its output says why
                            pending = pending[:0]
                        if not pending:
                            selector.unregister(fd)
                            if process.stdin is not None:
                                process.stdin.close()
                        continue
                    chunk = os.read(fd, _CHUNK)
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    buffer = buffers[fd]
                    buffer += chunk
                    if buffer is stdout and len(stdout) > stdout_limit:
                        _stop(process)
                        return Captured(process.returncode, bytes(stdout[: stdout_limit + 1]), bytes(stderr))
                    if buffer is stderr and len(stderr) > 2 * stderr_keep:
                        del stderr[:-stderr_keep]
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # closed its output but kept running
                _stop(process)
                return Captured(None, b"", bytes(stderr[-stderr_keep:]), f"timed out after {timeout_s:g} s")
            return Captured(code, bytes(stdout), bytes(stderr[-stderr_keep:]))
        finally:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None and not stream.closed:
                    stream.close()
            if process.returncode is None:
                _stop(process)
