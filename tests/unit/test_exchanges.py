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
    assert request.startswith(b"GET /api HTTP/1.1\r\nHost: [::1]:8888\r\n")
    assert request.endswith(b"Connection: close\r\n\r\n") and request.count(b"\r\n\r\n") == 1
    assert exchange.request(_declared("zeromq"), "127.0.0.1", 1) == bytes.fromhex("ff00000000000000007f03")
    assert exchange.request(_declared("nccl-ras"), "127.0.0.1", 1) == b"CLIENT PROTOCOL 2\n"
    horovod = exchange.request(_declared("horovod-rendezvous"), "127.0.0.1", 1)
    # Horovod's BasicService reads a 32-byte digest, then a length from bytes 32-35
    assert horovod == b"GET / HTTP/1.0\r\n\r\n" and len(horovod) < 32


# Recorded answers ------------------------------------------------------------------------------

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
        ("jupyter-server", b'HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{"version": "2.21.1"}', True,
         "HTTP/1.1 200 OK: jupyter-server; version 2.21.1"),
        ("jupyter-server", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False, "not the jupyter-server answer"),
        ("ray-dashboard", b'HTTP/1.1 200 OK\r\n\r\n{"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}',
         True, "ray-dashboard; version 2.60.0"),
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
