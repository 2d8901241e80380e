"""Read-only confirmations over loopback: real torch services confirm and keep serving; plain,
HTTP and hostile peers do not confirm, within the deadline, without an exception."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from netaudit.scan.handshake import (
    HTTP_READ_CAP,
    NONCE_FORCED_BIT,
    HandshakeResult,
    http_get_root,
    tcpstore_ping,
)

TIMEOUT_S = 0.5
# The deadline covers the whole call; allow scheduling noise on a shared machine.
SLACK_S = 0.5

TORCH_SERVICES = """
import datetime, json, sys
import torch.distributed as dist
from torch._C._distributed_c10d import _WorkerServer

timeout = datetime.timedelta(seconds=5)
stores = {
    "libuv": dist.TCPStore("127.0.0.1", 0, is_master=True, use_libuv=True, timeout=timeout,
                           wait_for_workers=False),
    "legacy": dist.TCPStore("127.0.0.1", 0, is_master=True, use_libuv=False, timeout=timeout,
                            wait_for_workers=False),
}
worker = _WorkerServer("::", 0)
print(json.dumps({**{k: s.port for k, s in stores.items()}, "worker": worker.port}), flush=True)
for n, line in enumerate(sys.stdin):
    report = {}
    for name, store in stores.items():
        # the server's own client, and a brand-new client (which does VALIDATE + PING itself)
        store.set(f"own{n}", "v")
        fresh = dist.TCPStore("127.0.0.1", store.port, is_master=False,
                              use_libuv=(name == "libuv"), timeout=timeout)
        report[name] = store.get(f"own{n}") == b"v" and fresh.get(f"own{n}") == b"v"
    print(json.dumps(report), flush=True)
worker.shutdown()
"""


class TorchServices:
    def __init__(self) -> None:
        env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TORCH_SERVICES],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch services did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.ports: dict[str, int] = json.loads(line)

    def still_serving(self) -> dict[str, bool]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def torch_services() -> Iterator[TorchServices]:
    services = TorchServices()
    try:
        yield services
    finally:
        services.close()


def timed(call: Callable[[], HandshakeResult]) -> tuple[HandshakeResult, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.mark.requires_torch
@pytest.mark.parametrize("backend", ["libuv", "legacy"])
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_real_tcpstore_confirms_and_keeps_serving(
    torch_services: TorchServices, backend: str, address: str
) -> None:
    port = torch_services.ports[backend]
    result = tcpstore_ping(address, port, timeout_s=2.0)
    assert result == HandshakeResult(True, "PING nonce echoed")
    assert tcpstore_ping(address, port, source=address, timeout_s=2.0).confirmed
    assert torch_services.still_serving() == {"libuv": True, "legacy": True}


@pytest.mark.requires_torch
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_real_worker_server_confirms(torch_services: TorchServices, address: str) -> None:
    result = http_get_root(address, torch_services.ports["worker"], timeout_s=2.0)
    assert result.confirmed, result.detail
    assert result.detail.startswith("HTTP/1.")
    assert " 200" in result.detail


@pytest.mark.requires_torch
def test_services_do_not_confirm_as_each_other(torch_services: TorchServices) -> None:
    ping_http, took = timed(
        lambda: tcpstore_ping("127.0.0.1", torch_services.ports["worker"], timeout_s=TIMEOUT_S)
    )
    assert not ping_http.confirmed
    assert took < TIMEOUT_S + SLACK_S
    for backend in ("libuv", "legacy"):
        # libuv ignores the request and keeps the connection open; legacy closes it.
        result, took = timed(
            lambda b=backend: http_get_root("127.0.0.1", torch_services.ports[b], timeout_s=TIMEOUT_S)  # type: ignore[misc]
        )
        assert not result.confirmed
        assert took < TIMEOUT_S + SLACK_S
    assert torch_services.still_serving() == {"libuv": True, "legacy": True}


# -- fake peers -----------------------------------------------------------------------------
Behaviour = Callable[[socket.socket, "FakePeer"], None]


class FakePeer:
    """A loopback listener that runs ``behaviour`` on every accepted connection in a thread."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.listener.settimeout(0.05)  # so the accept loop notices close() promptly
        self.port = self.listener.getsockname()[1]
        self.behaviour = behaviour
        self.received = bytearray()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2.0)
            self.conns.append(conn)
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self.threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.behaviour(conn, self)

    def read_request(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        self.received += data
        return data

    def hold(self) -> None:
        self.stop.wait(5.0)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in send or recv
            conn.close()
        for thread in self.threads:
            thread.join(timeout=2.0)


@pytest.fixture
def fake() -> Iterator[Callable[..., FakePeer]]:
    peers: list[FakePeer] = []

    def start(behaviour: Behaviour, host: str = "127.0.0.1") -> FakePeer:
        peer = FakePeer(behaviour, host)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.close()


def silent(conn: socket.socket, peer: FakePeer) -> None:
    peer.hold()


def flood(conn: socket.socket, peer: FakePeer) -> None:
    chunk = b"\xa5" * 65536
    for _ in range(80):  # 5 MiB, or until the client goes away
        conn.sendall(chunk)


def http_flood(conn: socket.socket, peer: FakePeer) -> None:
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    flood(conn, peer)


def reset(conn: socket.socket, peer: FakePeer) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def garbage(conn: socket.socket, peer: FakePeer) -> None:
    peer.read_request(conn, 10)
    conn.sendall(b"\x01\x02\x03\x04")
    peer.hold()


def three_then_stall(conn: socket.socket, peer: FakePeer) -> None:
    request = peer.read_request(conn, 10)
    conn.sendall(request[6:9])  # 3 of the 4 nonce bytes
    peer.hold()


def echo_nonce(conn: socket.socket, peer: FakePeer) -> None:
    request = peer.read_request(conn, 10)
    conn.sendall(request[6:10])
    peer.hold()


def trickle(conn: socket.socket, peer: FakePeer) -> None:
    peer.read_request(conn, 4)
    while not peer.stop.wait(0.05):
        conn.sendall(b"H")


def http_answer(body: bytes) -> Behaviour:
    def behaviour(conn: socket.socket, peer: FakePeer) -> None:
        peer.read_request(conn, 16)
        conn.settimeout(0.2)
        try:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                peer.received += chunk
                if b"\r\n\r\n" in peer.received:
                    break
        except TimeoutError:
            pass
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + body)
        conn.close()

    return behaviour


def test_tcpstore_ping_sends_exactly_validate_and_ping(fake: Callable[..., FakePeer]) -> None:
    peer = fake(echo_nonce)
    result = tcpstore_ping("127.0.0.1", peer.port, timeout_s=TIMEOUT_S)
    assert result.confirmed
    sent = bytes(peer.received)
    assert len(sent) == 10
    assert sent[:6] == bytes.fromhex("00cef7853c0d")  # VALIDATE + magic (LE), PING opcode
    (nonce,) = struct.unpack("<I", sent[6:])
    assert nonce & NONCE_FORCED_BIT


def test_http_get_root_sends_one_get(fake: Callable[..., FakePeer]) -> None:
    peer = fake(http_answer(b"<h1>torch.distributed.WorkerServer</h1>"), "::1")
    result = http_get_root("::1", peer.port, timeout_s=TIMEOUT_S)
    assert result == HandshakeResult(True, "HTTP/1.0 200 OK")
    assert bytes(peer.received) == f"GET / HTTP/1.0\r\nHost: [::1]:{peer.port}\r\n\r\n".encode()


HOSTILE_PING = [
    (silent, "no answer within 0.5 s (reply)"),
    (flood, "reply does not echo the nonce (a5a5a5a5)"),
    (reset, "connection reset by peer"),
    (garbage, "reply does not echo the nonce (01020304)"),
    (three_then_stall, "short reply: 3 of 4 bytes"),
]


@pytest.mark.parametrize(("behaviour", "detail"), HOSTILE_PING, ids=lambda v: getattr(v, "__name__", ""))
def test_tcpstore_ping_hostile_peers(
    fake: Callable[..., FakePeer], behaviour: Behaviour, detail: str
) -> None:
    peer = fake(behaviour)
    result, took = timed(lambda: tcpstore_ping("127.0.0.1", peer.port, timeout_s=TIMEOUT_S))
    assert not result.confirmed
    assert took < TIMEOUT_S + SLACK_S
    if behaviour is reset:
        # Depending on timing the reset lands before or after our send.
        assert result.detail.startswith(("connection reset by peer", "closed without an answer"))
    else:
        assert result.detail.startswith(detail), result.detail


HOSTILE_HTTP = [
    (silent, "no answer within 0.5 s (reply)"),
    (flood, "not HTTP: b'\\xa5"),
    (http_flood, "HTTP/1.0 200 OK (no WorkerServer marker)"),
    (trickle, "not HTTP: b'HH"),
    (http_answer(b"<h1>Welcome to nginx</h1>"), "HTTP/1.0 200 OK (no WorkerServer marker)"),
]


@pytest.mark.parametrize(
    ("behaviour", "detail"), HOSTILE_HTTP, ids=["silent", "flood", "http_flood", "trickle", "nginx"]
)
def test_http_get_root_hostile_and_plain_peers(
    fake: Callable[..., FakePeer], behaviour: Behaviour, detail: str
) -> None:
    peer = fake(behaviour)
    result, took = timed(lambda: http_get_root("127.0.0.1", peer.port, timeout_s=TIMEOUT_S))
    assert not result.confirmed
    assert took < TIMEOUT_S + SLACK_S
    assert result.detail.startswith(detail), result.detail


def test_http_flood_is_capped(fake: Callable[..., FakePeer]) -> None:
    # The marker sits past the read cap: we must not read that far.
    body = b"x" * (HTTP_READ_CAP * 4) + b"torch.distributed.WorkerServer"
    peer = fake(http_answer(body))
    result = http_get_root("127.0.0.1", peer.port, timeout_s=TIMEOUT_S)
    assert result == HandshakeResult(False, "HTTP/1.0 200 OK (no WorkerServer marker)")


def test_closed_port_and_bad_source_are_results_not_exceptions() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connect() is refused
        port = holder.getsockname()[1]
        assert tcpstore_ping("127.0.0.1", port, timeout_s=TIMEOUT_S) == HandshakeResult(
            False, "connection refused"
        )
        assert http_get_root("127.0.0.1", port, timeout_s=TIMEOUT_S).detail == "connection refused"
        mismatch = tcpstore_ping("127.0.0.1", port, source="::1", timeout_s=TIMEOUT_S)
        assert not mismatch.confirmed
        assert mismatch.detail.startswith("connect failed")
