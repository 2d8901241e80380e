"""Read-only confirmations (DESIGN.md §5): one fixed message, one bounded read, close.

Only for ports already believed to be that service (the caller's rule): these complete a TCP
handshake and send bytes, which TensorPipe listeners do not survive
(research/pytorch-ground-truth.md §5).

Every call is bounded twice: one deadline covers connect, send and every read, and a byte cap
bounds what is read. A peer that never answers, trickles, floods, resets or talks nonsense
yields ``confirmed=False`` with a detail saying which; no exception escapes and nothing hangs.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

# research/pytorch-ground-truth.md §2.3, torch/csrc/distributed/c10d/TCPStoreBackend.hpp
# (torch 2.13): QueryType VALIDATE = 0x00 carrying the u32 magic 0x3C85F7CE, and PING = 0x0D
# carrying a u32 nonce that the server echoes. Integers are in the host's byte order
# (SendBuffer::appendValue memcpy), little-endian on x86_64 and aarch64.
TCPSTORE_VALIDATE = 0x00
TCPSTORE_MAGIC = 0x3C85F7CE
TCPSTORE_PING = 0x0D
# ground truth §2.5: with bit 23 set, byte 8 of our message (nonce byte 2) makes a pre-VALIDATE
# server, which would read the bytes as SET with a u64 key length from bytes 1-8, see a length
# of at least 2**63 and throw at once instead of allocating or waiting for more bytes.
NONCE_FORCED_BIT = 1 << 23
_NONCE = struct.Struct("<I")

# ground truth §7: the c10d WorkerServer answers GET / with this heading.
WORKER_SERVER_MARKER = b"torch.distributed.WorkerServer"
# A WorkerServer's root page is one short line; 8 KiB is plenty and bounds a flooding peer.
HTTP_READ_CAP = 8192
_DETAIL_BYTES = 16  # bytes of an unexpected reply quoted in a detail

DEFAULT_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """Attributes:
    detail: what was seen, one line (the HTTP status line, why not...).
    authentication: the service asked for credentials (True: a 401/403 of its own, a CURVE or
        PLAIN ZMTP mechanism), served the read-only request without any (False), or the
        answer does not say (None).
    version: the service's version as its answer carries it; None when it carries none.
    """

    confirmed: bool
    detail: str
    authentication: bool | None = None
    version: str | None = None


class _Deadline:
    __slots__ = ("_end",)

    def __init__(self, timeout_s: float) -> None:
        self._end = time.monotonic() + timeout_s

    def left(self) -> float:
        """Seconds left; raises TimeoutError when none are."""
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining


def _host_header(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _connect(address: str, port: int, source: str | None, deadline: _Deadline) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(deadline.left())
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _read(
    sock: socket.socket, cap: int, deadline: _Deadline, is_settled: Callable[[bytes], bool] | None = None
) -> bytes:
    """Bytes until EOF, ``cap`` bytes, the deadline, or ``is_settled`` says more bytes could not
    change the verdict (a peer that keeps the connection open must not cost the whole
    deadline), whichever comes first. A deadline with some bytes in hand returns them (the
    caller reports a short read); with none it raises TimeoutError."""
    reply = bytearray()
    while len(reply) < cap:
        try:
            sock.settimeout(deadline.left())
            chunk = sock.recv(cap - len(reply))
        except TimeoutError:
            if not reply:
                raise
            break
        if not chunk:
            break
        reply += chunk
        if is_settled is not None and is_settled(bytes(reply)):
            break
    return bytes(reply)


def _failure(error: BaseException, timeout_s: float, stage: str) -> HandshakeResult:
    if isinstance(error, TimeoutError | socket.timeout):
        return HandshakeResult(False, f"no answer within {timeout_s:g} s ({stage})")
    if isinstance(error, ConnectionRefusedError):
        return HandshakeResult(False, "connection refused")
    if isinstance(error, ConnectionResetError):
        return HandshakeResult(False, f"connection reset by peer ({stage})")
    if isinstance(error, OSError):
        return HandshakeResult(False, f"{stage} failed: {error.strerror or error}")
    return HandshakeResult(False, f"{stage} failed: {error!r}")


def _exchange(
    address: str,
    port: int,
    source: str | None,
    message: bytes,
    read_cap: int,
    timeout_s: float,
    is_settled: Callable[[bytes], bool] | None = None,
) -> bytes | HandshakeResult:
    """Connect, send ``message`` in one sendall, read at most ``read_cap`` bytes, close; all
    under one deadline. The reply, or the failure as a result (never an exception)."""
    deadline = _Deadline(timeout_s)
    stage = "connect"
    try:
        with _connect(address, port, source, deadline) as sock:
            stage = "send"
            sock.settimeout(deadline.left())
            sock.sendall(message)
            stage = "reply"
            return _read(sock, read_cap, deadline, is_settled)
    except Exception as error:  # every failure is a result, never an escape
        return _failure(error, timeout_s, stage)


def tcpstore_ping(
    address: str, port: int, source: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> HandshakeResult:
    """Confirm a PING-capable TCPStore (torch >= ~2.4): VALIDATE + PING in one write, the nonce
    must come back. Read-only: no key is touched (ground truth §2.5).

    Not confirmed is not proof of absence: an old torch or a big-endian host stays silent too.
    """
    nonce = _NONCE.unpack(os.urandom(4))[0] | NONCE_FORCED_BIT
    message = (
        bytes([TCPSTORE_VALIDATE]) + _NONCE.pack(TCPSTORE_MAGIC) + bytes([TCPSTORE_PING]) + _NONCE.pack(nonce)
    )
    # One send of 10 bytes into an empty socket buffer is one segment: never a partial
    # message, which would freeze a legacy single-threaded store (ground truth §2.4).
    reply = _exchange(address, port, source, message, _NONCE.size, timeout_s)
    if isinstance(reply, HandshakeResult):
        return reply
    if len(reply) < _NONCE.size:
        if not reply:
            return HandshakeResult(False, "closed without an answer")
        return HandshakeResult(False, f"short reply: {len(reply)} of 4 bytes ({reply.hex()})")
    if _NONCE.unpack(reply)[0] != nonce:
        return HandshakeResult(False, f"reply does not echo the nonce ({reply.hex()})")
    return HandshakeResult(True, "PING nonce echoed")


def http_get_root(
    address: str, port: int, source: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> HandshakeResult:
    """Confirm a c10d WorkerServer: one ``GET /``, at most 8 KiB read, the body must name
    ``torch.distributed.WorkerServer`` (ground truth §7). Detail: the status line."""
    request = f"GET / HTTP/1.0\r\nHost: {_host_header(address, port)}\r\n\r\n".encode("ascii")
    reply = _exchange(address, port, source, request, HTTP_READ_CAP, timeout_s)
    if isinstance(reply, HandshakeResult):
        return reply
    if not reply:
        return HandshakeResult(False, "closed without an answer")
    status_line = reply.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    if not status_line.startswith(b"HTTP/"):
        return HandshakeResult(False, f"not HTTP: {reply[:_DETAIL_BYTES]!r}")
    status = status_line[:200].decode("latin-1")
    _head, separator, body = reply.partition(b"\r\n\r\n")
    if separator and WORKER_SERVER_MARKER in body:
        return HandshakeResult(True, status)
    return HandshakeResult(False, f"{status} (no WorkerServer marker)")
