"""The HTTP/2 exchange of Ray's head ports (ray-gcs, ray-client) against real servers, over
loopback only: a grpcio server (the same grpc-core that Ray's GCS and Ray Client server are
built on) is confirmed without a call reaching it and serves its next client as before; an
HTTP/1 server, Redis (6379 is its default port too) and a closed port are not confirmed; an
exchange that would open a stream is refused before any connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import pytest

from netaudit import signatures
from netaudit.audit import execute
from netaudit.scan import exchange

TIMEOUT_S = 5.0
START_S = 30.0
METHOD = "/netaudit.test.Echo/Ping"
# a HEADERS frame (type 1, END_HEADERS) on stream 1: what a real call would send next
HEADERS_FRAME = bytes.fromhex("000005010400000001") + b"\x82\x86\x41\x8a\x00"

grpc = pytest.importorskip("grpc", reason="requires grpcio (test extra)")


@pytest.fixture(autouse=True)
def _declared() -> None:
    signatures.load()  # declares the shipped exchanges, as a scan's load does


class _Counting(grpc.ServerInterceptor):  # type: ignore[misc]
    """Sees every call that reaches the server's RPC layer, known method or not."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        self.calls.append(handler_call_details.method)
        return continuation(handler_call_details)


@contextlib.contextmanager
def _grpc_server(host: str) -> Iterator[tuple[int, _Counting]]:
    counting = _Counting()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=(counting,))
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("netaudit.test.Echo", {"Ping": echo}),)
    )
    port = server.add_insecure_port(f"[{host}]:0" if ":" in host else f"{host}:0")
    server.start()
    try:
        yield port, counting
    finally:
        server.stop(0).wait()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1"))],
)
@pytest.mark.parametrize("name", ["exchange:ray-gcs", "exchange:ray-client"])
def test_a_grpc_server_is_confirmed_without_a_call_and_still_serves(host: str, name: str) -> None:
    with _grpc_server(host) as (port, counting):
        # Given a gRPC server that keeps the connection open after its SETTINGS, when the
        # declared exchange runs, then it is confirmed from the first frame, without waiting
        # for the deadline
        started = time.monotonic()
        result = exchange.confirm(name, host, port, timeout_s=TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert result.confirmed, result.detail
        assert "gRPC (grpc-core settings)" in result.detail and "no stream opened" in result.detail
        assert elapsed < TIMEOUT_S / 2
        # and no call reached the server; the next ordinary client is served as before
        time.sleep(0.2)  # a call the exchange had started would have reached the server by now
        assert counting.calls == []
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with grpc.insecure_channel(target) as channel:
            assert channel.unary_unary(METHOD)(b"ping", timeout=TIMEOUT_S) == b"ping"
        assert counting.calls == [METHOD]


def test_the_scan_dispatch_runs_the_http2_exchange_by_name() -> None:
    with _grpc_server("127.0.0.1") as (port, counting):
        result = execute._confirm("exchange:ray-gcs", "127.0.0.1", port, "127.0.0.1", TIMEOUT_S)
        assert result.confirmed and "ray-gcs" in result.detail
        assert counting.calls == []


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _http1_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_http1_server_is_not_taken_for_grpc() -> None:
    with _http1_server() as port:
        result = exchange.confirm("exchange:ray-client", "127.0.0.1", port, timeout_s=TIMEOUT_S)
    assert not result.confirmed
    assert result.detail.startswith(("an HTTP/1 answer, not HTTP/2", "not an HTTP/2 server preface")), (
        result.detail
    )


def test_a_closed_port_is_not_confirmed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # bound, never listening: the kernel refuses
        result = exchange.confirm("exchange:ray-gcs", "127.0.0.1", port, timeout_s=TIMEOUT_S)
    assert not result.confirmed and result.detail == "connection refused"


def _redis_call(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as client:
        client.sendall(command)
        return client.recv(256)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="requires redis-server (optional)")
def test_redis_on_the_gcs_port_is_not_taken_for_ray_and_is_left_as_it_was() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_S
        while True:
            with contextlib.suppress(OSError):
                if _redis_call(port, b"PING\r\n") == b"+PONG\r\n":
                    break
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        result = exchange.confirm("exchange:ray-gcs", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert not result.confirmed and "-ERR unknown command 'PRI'" in result.detail
        assert _redis_call(port, b"DBSIZE\r\n") == b":0\r\n"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_exchange_that_would_open_a_stream_never_connects() -> None:
    # Given a real listener, when the declared exchange is changed to carry a HEADERS frame,
    # then the engine refuses before connecting: nothing is accepted
    declared = exchange.declared("exchange:ray-client")
    assert declared is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.3)
        forged = dataclasses.replace(declared, payload=declared.payload + HEADERS_FRAME)
        with pytest.raises(exchange.ExchangeRefused, match="nothing sent"):
            exchange.run(forged, "127.0.0.1", listener.getsockname()[1])
        with pytest.raises(TimeoutError):
            listener.accept()
