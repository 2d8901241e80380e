"""Declared exchanges against the real services, over loopback only: each confirms its service,
reads its version where the answer has one, and leaves it as it was (no message queued, the
next ordinary client served). Services that bind every interface (Ray, TorchServe's gRPC)
run inside a network and PID namespace of the test's own, which also ends all their processes.

Stand-ins, built from the upstream wire format and labelled STAND-IN, replace what cannot run
here: NCCL's RAS server (needs a GPU), Horovod's driver (needs a compiled build), MLflow (too
heavy for this machine's test extra).
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from netaudit import signatures
from netaudit.audit import execute
from netaudit.scan import exchange, handshake

ROOT = Path(__file__).parents[2]
TIMEOUT_S = 2.0
START_S = 60.0


@pytest.fixture(autouse=True)
def _declared() -> None:
    signatures.load()  # declares the shipped exchanges, as a scan's load does


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_port(host: str, port: int, process: subprocess.Popen[bytes], what: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} before listening")
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"{what} did not listen on {host}:{port} within {START_S:g} s")


@contextlib.contextmanager
def _running(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _get(host: str, port: int, path: str) -> bytes:
    with socket.create_connection((host, port), timeout=5) as client:
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        client.sendall(f"GET {path} HTTP/1.0\r\nHost: {host_header}\r\n\r\n".encode())
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ZeroMQ: real pyzmq sockets, NULL and CURVE ---------------------------------------------------


def _events(monitor: object, window_s: float = 0.3) -> list[int]:
    """The monitor events of a socket over ``window_s`` (pyzmq is imported per test: optional)."""
    from zmq.utils.monitor import recv_monitor_message

    seen = []
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        if monitor.poll(50):  # type: ignore[attr-defined]
            seen.append(int(recv_monitor_message(monitor)["event"]))  # type: ignore[arg-type]
    return seen


@pytest.mark.skipif(not _has("zmq"), reason="requires pyzmq (test extra)")
def test_zmtp_greeting_on_a_null_pull_socket_leaves_it_untouched() -> None:
    import zmq as zmq_module

    context = zmq_module.Context()
    pull = context.socket(zmq_module.PULL)
    try:
        monitor = pull.get_monitor_socket()
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        # When netaudit reads the greeting,
        result = exchange.confirm("exchange:zeromq", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        # then the socket is named with its mechanism,
        assert result.confirmed and result.detail.startswith("ZMTP 3.1 greeting; mechanism NULL")
        # the connection was accepted but never completed the handshake, nothing was queued,
        events = _events(monitor)
        assert zmq_module.EVENT_ACCEPTED in events
        assert zmq_module.EVENT_HANDSHAKE_SUCCEEDED not in events
        assert pull.poll(200) == 0
        # and an ordinary client is served as before.
        push = context.socket(zmq_module.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(b"work item")
        assert pull.poll(5000) and pull.recv() == b"work item"
        assert zmq_module.EVENT_HANDSHAKE_SUCCEEDED in _events(monitor)
        push.close(0)
    finally:
        pull.close(0)
        context.destroy(linger=0)  # closes the monitor socket too


@pytest.mark.skipif(not _has("zmq"), reason="requires pyzmq (test extra)")
def test_zmtp_greeting_on_a_curve_rep_socket_names_curve_and_it_still_serves() -> None:
    import zmq as zmq_module

    context = zmq_module.Context()
    server_public, server_secret = zmq_module.curve_keypair()
    rep = context.socket(zmq_module.REP)
    try:
        rep.curve_server = True
        rep.curve_secretkey = server_secret
        rep.curve_publickey = server_public
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        result = exchange.confirm("exchange:zeromq", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed
        assert "mechanism CURVE: the peer requires a security handshake" in result.detail
        # no ZAP handler here, so any client key is admitted (the REQ below has a fresh one):
        # the wire cannot say that credentials are checked
        assert result.authentication is None
        assert rep.poll(200) == 0  # no request is pending: REP would otherwise owe a reply
        req = context.socket(zmq_module.REQ)
        client_public, client_secret = zmq_module.curve_keypair()
        req.curve_serverkey = server_public
        req.curve_publickey = client_public
        req.curve_secretkey = client_secret
        req.connect(f"tcp://127.0.0.1:{port}")
        req.send(b"ping")
        assert rep.poll(5000) and rep.recv() == b"ping"
        rep.send(b"pong")
        assert req.poll(5000) and req.recv() == b"pong"
        req.close(0)
    finally:
        rep.close(0)
        context.destroy(linger=0)  # closes the monitor socket too


@pytest.mark.skipif(not _has("zmq"), reason="requires pyzmq (test extra)")
def test_the_scan_dispatch_runs_a_declared_exchange_by_name() -> None:
    import zmq as zmq_module

    context = zmq_module.Context()
    pull = context.socket(zmq_module.PULL)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        result = execute._confirm("exchange:zeromq", "127.0.0.1", port, "127.0.0.1", TIMEOUT_S)
        assert result.confirmed and "mechanism NULL" in result.detail
        assert not execute._confirm("exchange:nobody", "127.0.0.1", port, "127.0.0.1", TIMEOUT_S).confirmed
    finally:
        pull.close(0)
        context.destroy(linger=0)  # closes the monitor socket too


def test_a_refused_exchange_never_connects() -> None:
    # Given a real listener, when an undeclared exchange is run directly, nothing connects.
    import dataclasses

    declared = exchange.declared("exchange:c10d-debug-frontend")
    assert declared is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.3)
        forged = dataclasses.replace(declared, path="/tcpstore")
        with pytest.raises(exchange.ExchangeRefused):
            exchange.run(forged, "127.0.0.1", listener.getsockname()[1])
        with pytest.raises(TimeoutError):
            listener.accept()


# torch's debug server frontend (real torch) ---------------------------------------------------

FRONTEND = """
import sys
import torch.distributed.debug._frontend as frontend

class Loopback(frontend._IPv6HTTPServer):
    # the real server and handlers, bound to ::1 instead of every interface (test safety)
    def __init__(self, address, handler):
        super().__init__(("::1", 0), handler)

frontend._IPv6HTTPServer = Loopback
server = frontend.FrontendServer(port=0)
print(server._server.server_port, flush=True)
sys.stdin.read()
"""


@pytest.mark.requires_torch
@pytest.mark.skipif(not _has("jinja2"), reason="torch.distributed.debug's frontend requires jinja2")
def test_debug_frontend_is_confirmed_by_its_get_root() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", FRONTEND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        result = exchange.confirm("exchange:c10d-debug-frontend", "::1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed and result.detail.startswith("HTTP/1.0 200 OK: c10d-workerserver")
        # why the signature exists: the built-in GET / looks for the WorkerServer's heading only
        assert not handshake.http_get_root("::1", port, timeout_s=TIMEOUT_S).confirmed
        assert b"Torch Distributed Debug Server" in _get("::1", port, "/")  # still serving
    finally:
        process.kill()
        process.wait(timeout=10)


# Jupyter Server and TensorBoard (real, pip-installed) -----------------------------------------


def _service_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_CONFIG_DIR": str(home / "config")}  # fmt: skip


def _last_activity(port: int) -> str:
    body = _get("127.0.0.1", port, "/api/status").split(b"\r\n\r\n", 1)[1]
    return str(json.loads(body)["last_activity"])


@pytest.mark.slow
@pytest.mark.skipif(not _has("jupyter_server"), reason="requires jupyter_server (test extra)")
@pytest.mark.parametrize("token", ["a-token-is-required", ""])
def test_jupyter_server_answers_get_api_status_saying_whether_a_token_is_required(
    tmp_path: Path, token: str
) -> None:
    port = _free_port()
    argv = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={tmp_path}",
            f"--IdentityProvider.token={token}"]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")
    with _running(argv, env=_service_env(tmp_path)) as process:
        _wait_port("127.0.0.1", port, process, "jupyter_server")
        before = None if token else _last_activity(port)
        result = exchange.confirm("exchange:jupyter-server", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed
        if token:
            assert result.authentication is True
            assert result.detail == "HTTP/1.1 403 Forbidden: jupyter-server with authentication on"
            # the token still guards everything else, and the server keeps serving
            assert _get("127.0.0.1", port, "/api/contents").split(b"\r\n", 1)[0].endswith(b"403 Forbidden")
        else:
            assert result.authentication is False
            assert result.detail == "HTTP/1.1 200 OK: jupyter-server without authentication"
            # the check is not activity: the server's idle clock did not move
            assert _last_activity(port) == before
        assert b'"version"' in _get("127.0.0.1", port, "/api")


@pytest.mark.slow
@pytest.mark.skipif(not _has("tensorboard"), reason="requires tensorboard (test extra)")
def test_tensorboard_answers_data_environment_with_its_version(tmp_path: Path) -> None:
    port = _free_port()
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip
    with _running(argv, env=_service_env(tmp_path)) as process:
        _wait_port("127.0.0.1", port, process, "tensorboard")
        result = exchange.confirm("exchange:tensorboard", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed
        assert result.detail == f"HTTP/1.1 200 OK: tensorboard; version {metadata.version('tensorboard')}"


# Ray and TorchServe (real): in a network and PID namespace of their own ----------------------

CHECK = """
import json, sys
from netaudit import signatures
from netaudit.scan import exchange
signatures.load()
results = {name: exchange.confirm(name, "127.0.0.1", int(port), timeout_s=5.0)
           for name, port in (item.split("@") for item in sys.argv[1:])}
print(json.dumps({name: [r.confirmed, r.detail] for name, r in results.items()}))
"""


@contextlib.contextmanager
def _namespace() -> Iterator[str]:
    name = f"na-svc-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@contextlib.contextmanager
def _isolated(
    namespace: str, argv: list[str], env: dict[str, str], cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` as PID 1 of a new PID namespace inside ``namespace``: ending our child (unshare
    --kill-child) ends every process the service started, daemons included. ``cwd``: where it
    may write (TorchServe writes logs/ and key_file.json into its working directory)."""
    in_namespace = ["ip", "netns", "exec", namespace]
    wrapped = [*in_namespace, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *argv]
    with _running(wrapped, env=env, cwd=cwd) as process:
        yield process


def _check_in(namespace: str, *named_ports: str) -> dict[str, list[object]]:
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", CHECK, *named_ports],
        check=True, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _wait_in(namespace: str, port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        listening = subprocess.run(
            ["ip", "netns", "exec", namespace, "ss", "-Hltn", f"sport = :{port}"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        if listening.strip():
            time.sleep(1.0)  # the route table is set up just after the bind
            return
        time.sleep(0.5)
    pytest.fail(f"{what} did not listen on {port} within {START_S:g} s")


def _ray() -> str | None:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) if _has("ray") else None


@pytest.mark.slow
@pytest.mark.requires_root
@pytest.mark.skipif(_ray() is None, reason="requires ray[default] (optional: heavy)")
@pytest.mark.parametrize("token", [None, "0123456789abcdef0123456789abcdef"])
def test_ray_dashboard_version_and_token_authentication(tmp_path: Path, token: str | None) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    if token:
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    # Ray's unix sockets live under --temp-dir, and AF_UNIX paths end at 107 bytes
    short = tempfile.mkdtemp(prefix="na-ray-", dir="/tmp")
    argv = [str(_ray()), "start", "--head", "--block", "--num-cpus=1", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", "--dashboard-port=8265", f"--temp-dir={short}",
            "--disable-usage-stats"]  # fmt: skip
    try:
        with _namespace() as namespace, _isolated(namespace, argv, env, tmp_path) as process:
            _wait_in(namespace, 8265, process, "ray dashboard")
            confirmed, detail = _check_in(namespace, "exchange:ray-dashboard@8265")["exchange:ray-dashboard"]
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert confirmed is True
    if token:
        assert detail == "HTTP/1.1 401 Unauthorized: ray-dashboard with authentication on"
    else:
        assert detail == f"HTTP/1.1 200 OK: ray-dashboard; version {metadata.version('ray')}"


def _torchserve() -> str | None:
    found = shutil.which("torchserve", path=os.path.dirname(sys.executable))
    return found if found and shutil.which("java") else None


@pytest.mark.slow
@pytest.mark.requires_root
@pytest.mark.skipif(_torchserve() is None, reason="requires torchserve and a Java runtime (optional)")
@pytest.mark.parametrize("is_token_auth", [False, True])
def test_torchserve_ping_and_api_description(tmp_path: Path, is_token_auth: bool) -> None:
    store = tmp_path / "model-store"
    store.mkdir()
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    argv = [str(_torchserve()), "--start", "--foreground", "--ncs", "--model-store", str(store)]
    if not is_token_auth:
        argv.append("--disable-token-auth")
    with _namespace() as namespace, _isolated(namespace, argv, env, tmp_path) as process:
        _wait_in(namespace, 8081, process, "torchserve")
        _wait_in(namespace, 8080, process, "torchserve")
        found = _check_in(
            namespace, "exchange:torchserve-inference@8080", "exchange:torchserve-management@8081"
        )
        version = metadata.version("torchserve")
        assert found["exchange:torchserve-management"] == [
            True,
            f"HTTP/1.1 200 OK: torchserve-management; version {version}",
        ]
        if is_token_auth:
            assert found["exchange:torchserve-inference"] == [
                True, "HTTP/1.1 400 Bad Request: torchserve-inference with authentication on"]  # fmt: skip
        else:
            assert found["exchange:torchserve-inference"] == [True, "HTTP/1.1 200 OK: torchserve-inference"]


# STAND-INS from the upstream wire format --------------------------------------------------------


class _RasStandIn(socketserver.ThreadingTCPServer):
    """STAND-IN for NCCL's RAS client port, from NVIDIA/nccl src/ras/client_support.cc
    rasClientEventLoop: newline-terminated commands, case-insensitive; "CLIENT PROTOCOL <n>" is
    answered "SERVER PROTOCOL 2\\n"; STATUS would start a job-wide collection (recorded here);
    the connection stays open until the client closes it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RasHandler)


class _RasHandler(socketserver.StreamRequestHandler):
    server: _RasStandIn

    def handle(self) -> None:
        for raw in self.rfile:
            command = raw.rstrip(b"\r\n").decode("ascii", "replace")
            with self.server.lock:
                self.server.commands.append(command)
            if command.lower().startswith("client protocol "):
                self.wfile.write(b"SERVER PROTOCOL 2\n")
            elif command.lower() in ("status", "verbose status"):
                self.wfile.write(b"a job-wide collection would start here\n")


@contextlib.contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])  # type: ignore[index]
    finally:
        server.shutdown()
        server.server_close()


def test_nccl_ras_stand_in_hello_only_and_no_status() -> None:
    server = _RasStandIn()
    with _serving(server) as port:
        started = time.monotonic()
        result = exchange.confirm("exchange:nccl-ras", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        took = time.monotonic() - started
        assert result.confirmed and result.detail == "nccl-ras answered 'SERVER PROTOCOL 2'"
        # the server keeps the connection open: the engine stops at the answer, not the deadline
        assert took < TIMEOUT_S / 2
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:  # a real client
            client.sendall(b"CLIENT PROTOCOL 2\n")
            assert client.recv(64) == b"SERVER PROTOCOL 2\n"
        time.sleep(0.1)
        with server.lock:
            assert server.commands == ["CLIENT PROTOCOL 2", "CLIENT PROTOCOL 2"]  # never STATUS


class _RendezvousHandler(http.server.SimpleHTTPRequestHandler):
    """STAND-IN for Horovod's KVStoreHandler (horovod/runner/http/http_server.py): GET of a path
    with fewer than three segments is a 400 with Content-Length 0; GET /scope/key reads a key;
    PUT stores one. The server records which of these happened."""

    def do_GET(self) -> None:
        paths = self.path.split("/")
        if len(paths) < 3:
            self.server.events.append("bad-path")  # type: ignore[attr-defined]
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.events.append("key-read")  # type: ignore[attr-defined]
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self) -> None:
        self.server.events.append("put")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


class _BasicServiceHandler(socketserver.StreamRequestHandler):
    """STAND-IN for Horovod's driver BasicService (horovod/runner/common/util/network.py
    Wire.read): a 32-byte digest, then a 4-byte length, then that many bytes."""

    def handle(self) -> None:
        digest = self.rfile.read(32)
        length = self.rfile.read(4)
        self.server.received.append((len(digest), len(length)))  # type: ignore[attr-defined]


def _rendezvous_server() -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RendezvousHandler)
    server.daemon_threads = True
    server.events = []  # type: ignore[attr-defined]
    return server


def test_horovod_rendezvous_stand_in_is_confirmed_without_reading_a_key() -> None:
    server = _rendezvous_server()
    with _serving(server) as port:
        result = exchange.confirm("exchange:horovod-rendezvous", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed
        assert result.detail.startswith("horovod-rendezvous answered 'HTTP/1.0 400 Bad Request'")
        assert server.events == ["bad-path"]  # type: ignore[attr-defined]


@pytest.mark.skipif(not _has("horovod"), reason="requires horovod (needs a compiled build)")
def test_horovod_rendezvous_real_server() -> None:
    from horovod.runner.http.http_server import RendezvousServer

    rendezvous = RendezvousServer()
    port = rendezvous.start()
    try:
        result = exchange.confirm("exchange:horovod-rendezvous", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed and "answered 'HTTP/1.0 400 Bad Request'" in result.detail
    finally:
        rendezvous.stop()


def test_horovod_driver_service_stand_in_never_reads_a_length() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _BasicServiceHandler)
    server.daemon_threads = True
    server.received = []  # type: ignore[attr-defined]
    with _serving(server) as port:
        result = exchange.confirm("exchange:horovod-rendezvous", "127.0.0.1", port, timeout_s=0.5)
        assert not result.confirmed
        time.sleep(0.2)
        # the digest read ends short at our close: no 4-byte length was ever read
        assert server.received == [(18, 0)]  # type: ignore[attr-defined]


class _MlflowHandler(http.server.BaseHTTPRequestHandler):
    """STAND-IN for MLflow's /version route (mlflow/server/__init__.py: ``return VERSION, 200``)."""

    def do_GET(self) -> None:
        body = b"3.18.0" if self.path == "/version" else b"not found"
        self.send_response(200 if self.path == "/version" else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_mlflow_stand_in_version() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MlflowHandler)
    with _serving(server) as port:
        result = exchange.confirm("exchange:mlflow", "127.0.0.1", port, timeout_s=TIMEOUT_S)
        assert result.confirmed and result.detail.endswith("mlflow; version 3.18.0")


def test_a_silent_peer_costs_one_deadline_and_no_exception() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.monotonic()
        result = exchange.confirm(
            "exchange:jupyter-server", "127.0.0.1", listener.getsockname()[1], timeout_s=0.3
        )
        assert not result.confirmed and result.detail.startswith("no answer within 0.3 s")
        assert time.monotonic() - started < 1.0
