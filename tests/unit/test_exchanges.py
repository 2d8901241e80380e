"""Declared exchanges: a signature may declare only what its service's allow-list permits (refused
at load, one line naming the file), the engine sends nothing a loaded signature did not declare
(refused before any connection), and answers are judged from recorded bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from netaudit import bindscope, classify, signatures
from netaudit.models import Classification, Family, Listener, ListenerSource
from netaudit.procinfo import FactsCache
from netaudit.scan import allowlist, exchange, handshake
from netaudit.scan.exchange import ExchangeRefused
from netaudit.signatures import Exchange, SignatureError
from tests.unit.fakeproc import FakeProc, torch_maps

ROOT = Path(__file__).parents[2]
NETNS = 4026531840
NEW_SERVICES = {
    "zeromq": "NA040", "jupyter-server": "NA041", "tensorboard": "NA042", "mlflow": "NA043",
    "ray-dashboard": "NA044", "torchserve-inference": "NA045", "torchserve-management": "NA045",
    "horovod-rendezvous": "NA046", "nccl-ras": "NA047", "c10d-debug-frontend": "NA005",
}  # fmt: skip

DEBUG = """\
schema = 1
id = "site-debug"
service = "c10d-workerserver"
title = "debug server"
risk = "high"
rule_id = "NA005"
connect_safe = true
do_not_touch = false
handshake = "exchange"
fix = "firewall it"

[exchange]
protocol = "http"
method = "GET"
path = "/"
read_cap_bytes = 8192
expect = 'Torch Distributed Debug Server'

[[rules]]
variant = "x"
confidence = "high"
priority = 5
[rules.when]
ports = [25999]
"""


def _loaded() -> dict[str, signatures.Signature]:
    return {s.id: s for s in signatures.load()}


def _declared(signature_id: str) -> Exchange:
    found = _loaded()[signature_id].exchange
    assert found is not None
    return found


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    attempts: list[tuple[object, ...]] = []

    def refuse(*args: object) -> None:
        attempts.append(args)
        raise AssertionError("the engine connected although it should have refused")

    # the engine connects through the shared bounded exchange of netaudit.scan.handshake, which
    # turns every exception into a result: the attempt is recorded and checked afterwards
    monkeypatch.setattr(handshake, "_connect", refuse)
    yield
    assert attempts == [], "the engine connected although it should have refused"


def test_every_new_signature_declares_an_allowed_exchange_and_names_its_rule() -> None:
    loaded = _loaded()
    for signature_id, rule_id in NEW_SERVICES.items():
        signature = loaded[signature_id]
        assert signature.rule_id == rule_id
        assert signature.exchange is not None and signature.handshake == f"exchange:{signature_id}"
        assert (ROOT / "docs" / "rules" / f"{rule_id}.md").is_file()
        assert exchange.declared(signature.handshake) == signature.exchange
    # the built-in confirmations are untouched, TensorPipe still gets nothing
    assert loaded["tcpstore"].handshake == "tcpstore-ping" and loaded["tcpstore"].exchange is None
    assert loaded["c10d-workerserver"].handshake == "http-get-root"
    assert loaded["rpc-tensorpipe"].handshake is None and loaded["rpc-tensorpipe"].is_do_not_touch


def test_a_valid_admin_exchange_loads() -> None:
    found = signatures.parse(DEBUG, "debug.toml").exchange
    assert found is not None and (found.method, found.path, found.status) == ("GET", "/", (200,))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('path = "/"', 'path = "/tcpstore"'), "exchange.path: '/tcpstore' is not allowed for c10d-workerserver"),
        (('method = "GET"', 'method = "POST"'), "exchange.method: 'POST' is not allowed: only GET"),
        (('path = "/"', 'path = "/?x=1"'), "exchange.path: expected an absolute path"),
        (('service = "c10d-workerserver"', 'service = "my-app"'), "no exchange is allowed for service 'my-app'"),
        (('protocol = "http"', 'protocol = "zmtp"'), "exchange.method: only an http exchange has method"),
        (("expect = 'Torch Distributed Debug Server'", "expect = 'Torch.*Server'"), "not a bounded regular expression"),
        (("expect = 'Torch Distributed Debug Server'", "expect = '(a{1,9}){1,9}'"), "a quantifier inside"),
        (("expect = 'Torch Distributed Debug Server'", "expect = '['"), "invalid regular expression"),
        (("expect = 'Torch Distributed Debug Server'", ""), "exchange.expect: an exchange needs expect"),
        (("read_cap_bytes = 8192", "read_cap_bytes = 100000"), "exchange.read_cap_bytes: expected an integer"),
        (('handshake = "exchange"', 'handshake = "none"'), 'exchange: handshake = "exchange" and an [exchange]'),
        (("[exchange]", "[exchange]\nextra = 1"), "exchange.extra: unknown key"),
    ],
)  # fmt: skip
def test_a_forbidden_or_malformed_exchange_is_refused_at_load(edit: tuple[str, str], message: str) -> None:
    text = DEBUG.replace(*edit)
    assert text != DEBUG
    with pytest.raises(SignatureError) as error:
        signatures.parse(text, "site-probes/debug.toml")
    assert str(error.value).startswith("site-probes/debug.toml: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def _zeromq_file(send_hex: str) -> str:
    shipped = (ROOT / "probes" / "zeromq.toml").read_text()
    return shipped.replace('send_hex = "ff00000000000000007f03"', f'send_hex = "{send_hex}"')


@pytest.mark.parametrize(
    "send_hex",
    [
        # our full greeting: the mechanism handshake would start
        "ff00000000000000007f0301" + "4e554c4c" + "00" * 48,
        # a greeting then a READY command
        "ff00000000000000007f03" + "0405" + "5245414459",
    ],
)
def test_zeromq_may_never_go_past_the_greeting_prefix(send_hex: str) -> None:
    with pytest.raises(
        SignatureError, match=r"zeromq\.toml: exchange\.send_hex: these bytes are not allowed for zeromq"
    ):
        signatures.parse(_zeromq_file(send_hex), "probes/zeromq.toml")


def test_nccl_ras_may_send_only_the_hello() -> None:
    shipped = (ROOT / "probes" / "nccl-ras.toml").read_text()
    status = shipped.replace("434c49454e542050524f544f434f4c20320a", b"STATUS\n".hex())
    with pytest.raises(SignatureError, match="not allowed for nccl-ras: STATUS starts a job-wide collection"):
        signatures.parse(status, "nccl-ras.toml")


def test_a_forbidden_file_in_a_probes_dir_stops_the_load_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "debug.toml").write_text(DEBUG.replace('path = "/"', 'path = "/tcpstore"'))
    with pytest.raises(SignatureError) as error:
        signatures.load((str(tmp_path),))
    assert str(error.value).startswith(f"{tmp_path}/debug.toml: exchange.path: '/tcpstore'")


def test_the_engine_refuses_undeclared_bytes_even_when_called_directly(no_connect: None) -> None:
    jupyter = _declared("jupyter-server")
    # Given the declared exchange, when anything in it is changed by hand,
    # then the engine refuses before it connects (no_connect fails the test otherwise).
    for forged in (
        dataclasses.replace(jupyter, path="/api/kernels"),
        dataclasses.replace(jupyter, method="POST"),
        dataclasses.replace(_declared("zeromq"), payload=allowlist.ZMTP_GREETING_PREFIX + b"\x01"),
        dataclasses.replace(_declared("nccl-ras"), payload=b"STATUS\n"),
        dataclasses.replace(jupyter, signature_id="never-loaded"),
    ):
        with pytest.raises(ExchangeRefused, match="not declared by a loaded signature; nothing sent"):
            exchange.run(forged, "127.0.0.1", 9)


def test_the_engine_refuses_what_the_allow_list_forbids_even_if_declared(no_connect: None) -> None:
    forged = dataclasses.replace(_declared("c10d-debug-frontend"), signature_id="forged", path="/tcpstore")
    evil = dataclasses.replace(signatures.parse(DEBUG, "evil.toml"), exchange=forged)
    with pytest.raises(ExchangeRefused, match=r"evil\.toml: exchange: path: '/tcpstore' is not allowed"):
        exchange.declare((evil,))
    assert exchange.declared("exchange:forged") is None
    result = exchange.confirm("exchange:forged", "127.0.0.1", 9)
    assert not result.confirmed and "nothing sent" in result.detail


def test_an_unknown_name_sends_nothing(no_connect: None) -> None:
    assert exchange.confirm("exchange:nobody", "127.0.0.1", 9).detail == (
        "no loaded signature declares exchange:nobody: nothing sent"
    )


def test_what_goes_on_the_wire() -> None:
    jupyter = _declared("jupyter-server")
    request = exchange.request(jupyter, "::1", 8888)
    assert request.startswith(b"GET /api/status HTTP/1.1\r\nHost: [::1]:8888\r\n")
    assert request.endswith(b"Connection: close\r\n\r\n") and request.count(b"\r\n\r\n") == 1
    assert exchange.request(_declared("zeromq"), "127.0.0.1", 1) == bytes.fromhex("ff00000000000000007f03")
    assert exchange.request(_declared("nccl-ras"), "127.0.0.1", 1) == b"CLIENT PROTOCOL 2\n"
    horovod = exchange.request(_declared("horovod-rendezvous"), "127.0.0.1", 1)
    # Horovod's BasicService reads a 32-byte digest, then a length from bytes 32-35
    assert horovod == b"GET / HTTP/1.0\r\n\r\n" and len(horovod) < 32


# Recorded answers ------------------------------------------------------------------------------

# jupyter_server 2.21.1 (Tornado 6.6.1), GET /api/status without and with a token required
JUPYTER_OPEN = (
    b"HTTP/1.1 200 OK\r\nServer: TornadoServer/6.6.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 122\r\nConnection: close\r\n\r\n"
    b'{"connections": 0, "kernels": 0, "last_activity": "2026-12-04T19:23:16.726463Z", '
    b'"started": "2026-12-04T19:23:16.726463Z"}'
)
JUPYTER_TOKEN = (
    b"HTTP/1.1 403 Forbidden\r\nServer: TornadoServer/6.6.1\r\nContent-Type: application/json\r\n"
    b"Date: Fri, 04 Dec 2026 19:23:27 GMT\r\nX-Content-Type-Options: nosniff\r\n"
    b"Content-Length: 40\r\nConnection: close\r\n\r\n"
    b'{"message": "Forbidden", "reason": null}'
)
# pyzmq 27.3.0 (libzmq 4.3.5) PULL socket, NULL and CURVE, after our 11 octets
ZMTP_NULL = bytes.fromhex("ff00000000000000017f") + b"\x03\x01NULL" + b"\0" * 16 + b"\0" + b"\0" * 31
ZMTP_CURVE = bytes.fromhex("ff00000000000000017f") + b"\x03\x01CURVE" + b"\0" * 15 + b"\x01" + b"\0" * 31


@pytest.mark.parametrize(
    ("signature_id", "answer", "confirmed", "detail"),
    [
        ("zeromq", ZMTP_NULL, True, "ZMTP 3.1 greeting; mechanism NULL: no authentication"),
        ("zeromq", ZMTP_CURVE, True, "mechanism CURVE: the peer requires a security handshake"),
        ("zeromq", ZMTP_NULL[:10], True, "ZMTP signature; no version followed"),
        ("zeromq", b"HTTP/1.1 400 Bad Request\r\n\r\n", False, "not a ZMTP greeting"),
        ("jupyter-server", JUPYTER_OPEN, True, "HTTP/1.1 200 OK: jupyter-server without authentication"),
        ("jupyter-server", JUPYTER_TOKEN, True, "HTTP/1.1 403 Forbidden: jupyter-server with authentication on"),
        ("jupyter-server", b'HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{"version": "2.21.1"}', False,
         "not the jupyter-server answer"),
        ("jupyter-server", b"HTTP/1.1 403 Forbidden\r\nServer: nginx\r\n\r\nForbidden", False,
         "not the jupyter-server answer"),
        ("ray-dashboard", b'HTTP/1.1 200 OK\r\n\r\n{"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}',
         True, "ray-dashboard without authentication; version 2.60.0"),
        ("ray-dashboard", b"HTTP/1.1 401 Unauthorized\r\n\r\nUnauthorized: Missing authentication token", True,
         "HTTP/1.1 401 Unauthorized: ray-dashboard with authentication on"),
        ("ray-dashboard", b"HTTP/1.1 401 Unauthorized\r\n\r\nGo away", False, "not the ray-dashboard answer"),
        ("mlflow", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n3.18.0", True, "mlflow; version 3.18.0"),
        ("mlflow", b"HTTP/1.1 200 OK\r\n\r\n<html>3.18.0</html>", False, "not the mlflow answer"),
        ("nccl-ras", b"SERVER PROTOCOL 2\n", True, "nccl-ras answered 'SERVER PROTOCOL 2'"),
        ("nccl-ras", b"ERROR: bad\n", False, "not the nccl-ras answer"),
        ("horovod-rendezvous", b"HTTP/1.0 400 Bad Request\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\n"
         b"Date: x\r\nContent-Length: 0\r\n\r\n", True, "version 3.11.7"),
        ("horovod-rendezvous", b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\n\r\n", False,
         "not the horovod-rendezvous answer"),
        ("tensorboard", b"\xff\xfe\x00garbage", False, "not HTTP"),
        ("tensorboard", b"", False, "closed without an answer"),
    ],
)  # fmt: skip
def test_recorded_answers_are_judged(signature_id: str, answer: bytes, confirmed: bool, detail: str) -> None:
    result = exchange.judge(_declared(signature_id), answer)
    assert result.confirmed is confirmed
    assert detail in result.detail


@pytest.mark.parametrize(
    ("signature_id", "answer", "authentication", "version"),
    [
        ("zeromq", ZMTP_NULL, False, None),
        # CURVE without a ZAP handler admits any client key: the wire cannot tell
        ("zeromq", ZMTP_CURVE, None, None),
        ("zeromq", ZMTP_NULL[:12] + b"BOGUS" + ZMTP_NULL[17:], None, None),
        ("zeromq", ZMTP_NULL[:10], None, None),  # no mechanism arrived: unknown, not "open"
        ("jupyter-server", JUPYTER_OPEN, False, None),
        ("jupyter-server", JUPYTER_TOKEN, True, None),
        ("ray-dashboard", b'HTTP/1.1 200 OK\r\n\r\n{"ray_version": "2.60.0"}', False, "2.60.0"),
        ("ray-dashboard", b"HTTP/1.1 401 Unauthorized\r\n\r\nUnauthorized: Missing authentication token",
         True, None),
        # MLflow's /version is served whatever its auth: answering it proves nothing either way
        ("mlflow", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n3.18.0", None, "3.18.0"),
        ("nccl-ras", b"SERVER PROTOCOL 2\n", None, None),
    ],
)  # fmt: skip
def test_answers_say_whether_authentication_is_on_and_which_version(
    signature_id: str, answer: bytes, authentication: bool | None, version: str | None
) -> None:
    result = exchange.judge(_declared(signature_id), answer)
    assert result.confirmed
    assert result.authentication is authentication
    assert result.version == version


def test_a_flood_is_judged_on_the_capped_window_only() -> None:
    jupyter = _declared("jupyter-server")
    flood = b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * (jupyter.read_cap_bytes + 10) + b'{"version": "9.9.9"}'
    assert not exchange.judge(jupyter, flood).confirmed


# Local recognition on recorded process facts ---------------------------------------------------

ZMQ_THREADS = {"python3": 1, "ZMQbg/IO/0": 1, "ZMQbg/Reaper": 1}
LIBZMQ = "/usr/lib/python3/dist-packages/pyzmq.libs/libzmq-2f02442c.so.5.2.5"
PY = "/usr/bin/python3"


@pytest.mark.parametrize(
    ("process", "port", "address", "backlog", "expected"),
    [
        ({"cmdline": (PY, "/usr/local/bin/vllm", "serve", "m"), "maps": torch_maps(LIBZMQ), "threads": ZMQ_THREADS},
         45100, "0.0.0.0", 100, "zeromq/zeromq/llm-server/high"),
        ({"cmdline": (PY, "-m", "sglang.launch_server"), "maps": torch_maps(LIBZMQ), "threads": ZMQ_THREADS},
         45101, "0.0.0.0", 100, "zeromq/zeromq/llm-server/high"),
        ({"cmdline": (PY, "worker.py"), "maps": (LIBZMQ,), "threads": ZMQ_THREADS},
         45102, "0.0.0.0", 100, "zeromq/zeromq/socket/high"),
        ({"maps": torch_maps(), "threads": {"python3": 1}}, 25999, "::", 1024,
         "c10d-debug-frontend/c10d-workerserver/debug-frontend/high"),
        ({"comm": "jupyter-lab", "cmdline": (PY, "/usr/local/bin/jupyter-lab", "--ip=0.0.0.0")}, 8888, "0.0.0.0",
         128, "jupyter-server/jupyter-server/server/high"),
        ({"cmdline": (PY, "/usr/local/bin/tensorboard", "--logdir", "/data/tensorboard")}, 6006, "0.0.0.0", 128,
         "tensorboard/tensorboard/server/high"),
        ({"cmdline": (PY, "/usr/bin/gunicorn", "-b", "0.0.0.0:5000", "mlflow.server:app")}, 5000, "0.0.0.0", 2048,
         "mlflow/mlflow/server/high"),
        ({"cmdline": (PY, "/opt/ray/python/ray/dashboard/dashboard.py", "--host=0.0.0.0", "--port=8265")}, 8265,
         "0.0.0.0", 128, "ray-dashboard/ray-dashboard/dashboard/high"),
        ({"comm": "java", "cmdline": ("java", "-cp", "model-server.jar", "org.pytorch.serve.ModelServer")}, 8081,
         "0.0.0.0", 1024, "torchserve-management/torchserve-management/management/high"),
        ({"comm": "java", "cmdline": ("java", "-cp", "model-server.jar", "org.pytorch.serve.ModelServer")}, 8080,
         "0.0.0.0", 1024, "torchserve-inference/torchserve-inference/inference/high"),
        ({"comm": "horovodrun", "cmdline": (PY, "/usr/local/bin/horovodrun", "-np", "4", "python", "train.py")},
         41234, "0.0.0.0", 5, "horovod-rendezvous/horovod-rendezvous/driver/high"),
        ({"maps": torch_maps("/usr/lib/libnccl.so.2")}, 28028, "127.0.0.1", 4096, "nccl-ras/nccl-ras/ras-client/high"),
    ],
)  # fmt: skip
def test_local_recognition(
    tmp_path: Path, process: dict[str, object], port: int, address: str, backlog: int, expected: str
) -> None:
    proc = FakeProc(tmp_path / "proc")
    proc.process(700, **process)  # type: ignore[arg-type]
    found = _classify(proc, [_listener(port, 700, address, backlog)])[0]
    assert found is not None
    assert f"{found.signature}/{found.service}/{found.variant}/{found.confidence.value}" == expected
    assert found.handshake == f"exchange:{found.signature}"


def test_tensorboards_data_server_and_a_plain_torch_listener_are_not_taken(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    data_server = ("/usr/lib/python3/site-packages/tensorboard_data_server/bin/server", "--logdir", "/data/x")
    proc.process(710, comm="server", cmdline=data_server)
    proc.process(711, maps=torch_maps(), threads={"python3": 1})
    found = _classify(proc, [_listener(40000, 710, "127.0.0.1", 1024), _listener(45000, 711, "::", 1024)])
    assert found[0] is None
    assert found[1] is not None and found[1].service == "torch-unknown"  # 1024 without 25999


def test_an_unattributed_default_port_is_a_candidate(tmp_path: Path) -> None:
    found = _classify(FakeProc(tmp_path / "proc"), [_listener(8888, None, "0.0.0.0", 128)])[0]
    assert found is not None and (found.service, found.variant, found.confidence.value) == (
        "jupyter-server", "candidate", "medium")  # fmt: skip


def _listener(port: int, pid: int | None, address: str, backlog: int) -> Listener:
    family = Family.IPV6 if ":" in address else Family.IPV4
    return Listener(
        netns=NETNS, family=family, address=address, port=port, inode=port * 10,
        source=ListenerSource.NETLINK, v6only=False if family is Family.IPV6 else None, backlog=backlog,
        uid=0, pid=pid, pids=(pid,) if pid else (), process=None,
    )  # fmt: skip


def _classify(proc: FakeProc, listeners: list[Listener]) -> list[Classification | None]:
    cache = FactsCache(str(proc.root))
    scopes = {
        index: bindscope.scope_of(item.family, item.address, item.v6only, False)
        for index, item in enumerate(listeners)
    }
    context = classify.ListenerContext(scopes, {NETNS: 4096})
    facts = {item.pid: cache.get(item.pid) for item in listeners if item.pid is not None}
    found, _vanished = classify.classify(listeners, signatures.load(), facts, context)
    return [found.get(index) for index in range(len(listeners))]


# Ray's head over gRPC (ray-gcs, ray-client): the HTTP/2 preface, never a call ---------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# grpcio 1.85.3 on loopback, its first frame after our preface (SETTINGS: initial window,
# max frame size, max header list size, 0xfe03 grpc-allow-true-binary-metadata)
GRPC_SETTINGS = bytes.fromhex(
    "000018040000000000" "000400400000" "000500400000" "000600004000" "fe0300000001"
)  # fmt: skip


def _ray_file(name: str) -> str:
    return (ROOT / "probes" / f"{name}.toml").read_text()


def test_ray_head_signatures_declare_the_http2_preface_and_name_their_rule() -> None:
    loaded = _loaded()
    for signature_id, rule_id, port in (("ray-gcs", "NA048", 6379), ("ray-client", "NA049", 10001)):
        signature = loaded[signature_id]
        assert (signature.rule_id, signature.default_ports) == (rule_id, (port,))
        assert signature.risk.value == "critical"
        assert (ROOT / "docs" / "rules" / f"{rule_id}.md").is_file()
        declared = exchange.declared(f"exchange:{signature_id}")
        assert declared == signature.exchange and declared.protocol == "http2"
        # Given the declared bytes, then they are the 24-octet preface and one empty SETTINGS
        # frame (length 0, type 4, flags 0, stream 0): no HEADERS frame, so no stream, no call
        wire = exchange.request(declared, "127.0.0.1", port)
        assert wire == H2_PREFACE + bytes.fromhex("000000040000000000") == allowlist.H2_PREFACE_EMPTY_SETTINGS


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # a HEADERS frame (type 1) after the preface would open stream 1
        (("000000040000000000\"", "000000040000000000" + "000005010400000001" + "8286418a\""),
         "exchange.send_hex: these bytes are not allowed for ray-gcs: no HEADERS frame"),
        (('protocol = "http2"', 'protocol = "bytes"'), "exchange.protocol: 'bytes' is not allowed for ray-gcs"),
        (('service = "ray-gcs"', 'service = "zeromq"'), "exchange.protocol: 'http2' is not allowed for zeromq"),
        (('service = "ray-gcs"', 'service = "my-grpc"'), "no exchange is allowed for service 'my-grpc'"),
    ],
)  # fmt: skip
def test_an_http2_exchange_may_send_only_the_preface(edit: tuple[str, str], message: str) -> None:
    shipped = _ray_file("ray-gcs")
    text = shipped.replace(*edit)
    assert text != shipped
    with pytest.raises(SignatureError) as error:
        signatures.parse(text, "site-probes/ray-gcs.toml")
    assert str(error.value).startswith("site-probes/ray-gcs.toml: ") and message in str(error.value)


def test_the_engine_refuses_a_grpc_call_even_when_called_directly(no_connect: None) -> None:
    gcs = _declared("ray-gcs")
    headers = bytes.fromhex("000005010400000001") + b"\x82\x86\x41\x8a\x00"
    for forged in (
        dataclasses.replace(gcs, payload=gcs.payload + headers),
        dataclasses.replace(gcs, payload=H2_PREFACE),
        dataclasses.replace(gcs, protocol="bytes"),
    ):
        with pytest.raises(ExchangeRefused, match="nothing sent"):
            exchange.run(forged, "127.0.0.1", 9)


@pytest.mark.parametrize(
    ("answer", "confirmed", "detail"),
    [
        (GRPC_SETTINGS + bytes.fromhex("0000040800000000000000003f0001"), True,
         "HTTP/2 SETTINGS (4 settings): gRPC (grpc-core settings); ray-gcs, no stream opened"),
        # nghttp2's default server settings (MAX_CONCURRENT_STREAMS 100): HTTP/2, not grpc-core
        (bytes.fromhex("000006040000000000" "000300000064"), True,
         "HTTP/2 SETTINGS (1 settings): HTTP/2 without grpc-core's settings"),
        (bytes.fromhex("000000040000000000"), True, "HTTP/2 SETTINGS (0 settings)"),
        # an ACK first, a SETTINGS on a stream, a GOAWAY, a torn or oversized frame: not a preface
        (bytes.fromhex("000000040100000000"), False, "not an HTTP/2 server preface"),
        (bytes.fromhex("000000040000000001"), False, "not an HTTP/2 server preface"),
        (bytes.fromhex("000008070000000000" "0000000000000001"), False, "not an HTTP/2 server preface"),
        (bytes.fromhex("000005040000000000" "0003000000"), False, "not an HTTP/2 server preface"),
        (bytes.fromhex("004002040000000000"), False, "not an HTTP/2 server preface"),
        (bytes.fromhex("0000"), False, "not an HTTP/2 frame"),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False,
         "an HTTP/1 answer, not HTTP/2: 'HTTP/1.1 400 Bad Request'"),
        # redis-server 7.0.15 on the same port (6379 is Redis's default too)
        (b"-ERR unknown command 'PRI', with args beginning with: '*' 'HTTP/2.0' \r\n", False,
         "not an HTTP/2 server preface: \"-ERR unknown command 'PRI'"),
        (b"", False, "closed without an answer"),
    ],
)  # fmt: skip
def test_recorded_http2_answers_are_judged(answer: bytes, confirmed: bool, detail: str) -> None:
    result = exchange.judge(_declared("ray-gcs"), answer)
    assert result.confirmed is confirmed
    assert detail in result.detail


def test_the_engine_checks_the_frame_itself_whatever_expect_declares() -> None:
    import re

    # Given a declaration whose expect would take any answer, then the engine still wants the
    # server's SETTINGS: no ACK, stream 0, a bounded length of whole settings
    loose = dataclasses.replace(_declared("ray-gcs"), expect=re.compile("^"))
    assert exchange.judge(loose, GRPC_SETTINGS).confirmed
    for answer in ("000000040100000000", "000000040000000001", "000005040000000000", "004002040000000000"):
        assert not exchange.judge(loose, bytes.fromhex(answer) + bytes(6)).confirmed, answer


GCS_ARGV = (
    "/usr/local/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server", "--log_dir=/tmp/ray/logs",
    "--gcs_server_port=6379", "--node-ip-address=10.0.0.5", "--session-name=session_x",
)  # fmt: skip
CLIENT_ARGV = (
    PY, "/usr/local/lib/python3.11/site-packages/ray/_private/workers/setup_worker.py", "-m",
    "ray.util.client.server", "--address=10.0.0.5:6379", "--host=0.0.0.0", "--port=10001", "--mode=proxy",
)  # fmt: skip


@pytest.mark.parametrize(
    ("process", "port", "expected"),
    [
        ({"comm": "gcs_server", "cmdline": GCS_ARGV}, 6379, "ray-gcs/ray-gcs/gcs/high"),
        ({"comm": "ray::GCS", "cmdline": GCS_ARGV}, 6379, "ray-gcs/ray-gcs/gcs/high"),
        ({"cmdline": CLIENT_ARGV}, 10001, "ray-client/ray-client/server/high"),
        ({"cmdline": (PY, "-m", "ray.util.client.server", "--port=23001", "--mode=specific-server")}, 23001,
         "ray-client/ray-client/server/high"),
    ],
)  # fmt: skip
def test_ray_head_processes_are_recognised(
    tmp_path: Path, process: dict[str, object], port: int, expected: str
) -> None:
    proc = FakeProc(tmp_path / "proc")
    proc.process(720, **process)  # type: ignore[arg-type]
    found = _classify(proc, [_listener(port, 720, "0.0.0.0", 4096)])[0]
    assert found is not None
    assert f"{found.signature}/{found.service}/{found.variant}/{found.confidence.value}" == expected
    assert found.handshake == f"exchange:{found.signature}"


def test_ray_head_ports_are_not_claimed_by_name_or_port_alone(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    # gcs_server's other listeners are not its --gcs_server_port; a plain Python on 10001 is not Ray
    proc.process(730, comm="gcs_server", cmdline=GCS_ARGV)
    proc.process(731, cmdline=(PY, "server.py", "--port=10001"))
    proc.process(732, cmdline=CLIENT_ARGV)
    found = _classify(proc, [
        _listener(41000, 730, "0.0.0.0", 4096), _listener(10001, 731, "0.0.0.0", 128),
        _listener(41001, 732, "0.0.0.0", 4096),
    ])  # fmt: skip
    assert found == [None, None, None]
    unattributed = _classify(proc, [_listener(6379, None, "0.0.0.0", 511), _listener(10001, None, "::", 128)])
    assert [(f.service, f.variant, f.confidence.value) for f in unattributed if f] == [
        ("ray-gcs", "candidate", "medium"), ("ray-client", "candidate", "medium")]  # fmt: skip


# The Kubernetes launchers' master port (training operator and Volcano: 23456) --------------

K8S_TORCHRUN = (PY, "/usr/local/bin/torchrun", "--nnodes=2", "--nproc-per-node=1", "train.py")
PYTORCHJOB_ENV = {"MASTER_PORT": "23456", "PET_MASTER_PORT": "23456", "MASTER_ADDR": "job-master-0"}


def _store(proc: FakeProc, pid: int, **process: object) -> Classification | None:
    proc.process(pid, maps=torch_maps(), **process)  # type: ignore[arg-type]
    return _classify(proc, [_listener(23456, pid, "::", 4096)])[0]


def _label(found: Classification | None) -> str | None:
    return None if found is None else f"{found.service}/{found.variant}/{found.confidence.value}"


def test_a_pytorchjob_agent_store_is_named_by_its_master_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netaudit import environ

    # the training operator hands torchrun its port as PET_MASTER_PORT (master.go); the probe
    # reads only allowlisted variables, so this test lets it keep that one
    monkeypatch.setattr(environ, "ALLOWED", environ.ALLOWED | {"PET_MASTER_PORT", "PET_RDZV_ENDPOINT"})
    proc = FakeProc(tmp_path / "proc")
    threads = {"pt_elastic": 1, "pt_tcpstore_uv": 1}
    # Given an agent whose workers are not started yet, then its PET_MASTER_PORT names the store
    found = _store(
        proc, 740, comm="pt_elastic", cmdline=K8S_TORCHRUN, threads=threads, environ=PYTORCHJOB_ENV
    )
    assert _label(found) == "tcpstore/agent-worker-store/high"
    assert found is not None and "port 23456 = PET_MASTER_PORT of this process" in found.evidence
    # an elastic PyTorchJob: PET_RDZV_ENDPOINT (elastic.go) names the rendezvous store
    elastic = {"PET_RDZV_ENDPOINT": "job-worker-0:23456", "PET_RDZV_BACKEND": "c10d"}
    found = _store(proc, 741, comm="pt_elastic", cmdline=K8S_TORCHRUN, threads=threads, environ=elastic)
    assert _label(found) == "tcpstore/rendezvous-store/high"
    assert found is not None and "port 23456 = PET_RDZV_ENDPOINT of this process" in found.evidence


def test_a_volcano_job_store_is_named_by_master_port_argument_or_env(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    threads = {"pt_elastic": 1, "pt_tcpstore_uv": 1}
    # Volcano sets MASTER_PORT (pytorch.go); torchrun is handed it as --master_port $MASTER_PORT
    argv = (*K8S_TORCHRUN[:-1], "--master_addr=job-master-0", "--master_port", "23456", "train.py")
    found = _store(proc, 750, comm="pt_elastic", cmdline=argv, threads=threads)
    assert _label(found) == "tcpstore/agent-worker-store/high"
    assert found is not None and "port 23456 = --master_port 23456" in found.evidence
    # without torchrun, rank 0 hosts the store at its MASTER_PORT
    rank0 = {"MASTER_PORT": "23456", "RANK": "0", "WORLD_SIZE": "2"}
    found = _store(
        proc, 751, cmdline=(PY, "train.py"), threads={"python3": 1, "pt_tcpstore_uv": 1}, environ=rank0
    )
    assert _label(found) == "tcpstore/rank0-store/high"
    # and an unattributed listener on 23456 is a candidate for the TCPStore ping
    unattributed = _classify(proc, [_listener(23456, None, "0.0.0.0", 4096)])[0]
    assert _label(unattributed) == "tcpstore/candidate-store/medium"
    assert unattributed is not None and unattributed.handshake == "tcpstore-ping"


def test_a_plain_target_sweep_confirms_the_launchers_and_ray_head_ports() -> None:
    from netaudit.audit.plan import handshake_for
    from netaudit.models import Endpoint

    # Given an address no inventory covers, when one of these ports answers, then it gets its
    # service's read-only confirmation (the TCPStore ping on the PyTorchJob master port)
    loaded = signatures.load()
    expected = {23456: "tcpstore-ping", 6379: "exchange:ray-gcs", 10001: "exchange:ray-client"}
    for port, name in expected.items():
        endpoint = Endpoint("198.51.100.7", "198.51.100.7", Family.IPV4, port, None, None, True)
        assert handshake_for(endpoint, loaded, 60.0) == name
