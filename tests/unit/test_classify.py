"""The classifier on recorded process facts (a fake /proc tree, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netaudit import bindscope, classify, signatures
from netaudit.models import Classification, Family, Listener, ListenerSource
from netaudit.procinfo import FactsCache
from tests.unit.fakeproc import FakeProc, torch_maps

NETNS = 4026531840
SOMAXCONN = 4096
NCCL = "/usr/local/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2"
TORCHRUN = (
    "/usr/bin/python3",
    "/usr/local/bin/torchrun",
    "--standalone",
    "--nproc-per-node=2",
    "train.py",
)


def listener(
    port: int, pid: int | None, address: str = "::", *, backlog: int | None = SOMAXCONN,
    v6only: bool | None = False, source: ListenerSource = ListenerSource.NETLINK,
) -> Listener:  # fmt: skip
    family = Family.IPV6 if ":" in address else Family.IPV4
    return Listener(
        netns=NETNS, family=family, address=address, port=port, inode=port * 10,
        source=source, v6only=v6only if family is Family.IPV6 else None, backlog=backlog,
        uid=0, pid=pid, pids=(pid,) if pid else (), process=None,
    )  # fmt: skip


def run(proc: FakeProc, listeners: list[Listener]) -> list[Classification | None]:
    cache = FactsCache(str(proc.root))
    scopes = {
        index: bindscope.scope_of(item.family, item.address, item.v6only, False)
        for index, item in enumerate(listeners)
    }
    context = classify.ListenerContext(scopes, {NETNS: SOMAXCONN})
    facts = {item.pid: cache.get(item.pid) for item in listeners if item.pid is not None}
    found, vanished = classify.classify(listeners, signatures.load(), facts, context)
    assert not vanished
    return [found.get(index) for index in range(len(listeners))]


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def label(found: Classification | None) -> str | None:
    return None if found is None else f"{found.service}/{found.variant}/{found.confidence.value}"


def test_torchrun_agent_hosts_rendezvous_and_worker_stores(proc: FakeProc) -> None:
    # Given the torchrun agent of a --standalone job: two store threads, two children whose
    # MASTER_PORT names the workers' store.
    proc.process(100, comm="pt_elastic", cmdline=TORCHRUN, maps=torch_maps(),
                 threads={"pt_elastic": 1, "pt_tcpstore_uv": 2}, children=(101, 102))  # fmt: skip
    for child in (101, 102):
        proc.process(child, ppid=100, maps=torch_maps(),
                     environ={"MASTER_PORT": "43941", "RANK": str(child - 101),
                              "TORCHELASTIC_USE_AGENT_STORE": "True"})  # fmt: skip
    # When its two wildcard listeners are classified
    found = run(proc, [listener(35435, 100), listener(43941, 100)])
    # Then the worker store is named by the child's MASTER_PORT, the other is the rendezvous
    assert [label(f) for f in found] == [
        "tcpstore/rendezvous-store/high", "tcpstore/agent-worker-store/high",
    ]  # fmt: skip
    assert "port 43941 = MASTER_PORT of child pid 101" in found[1].evidence
    assert "thread pt_tcpstore_uv x2 (libuv backend)" in found[1].evidence
    assert "process name pt_elastic" in found[1].evidence


def test_rendezvous_endpoint_argument_names_the_rendezvous_store(proc: FakeProc) -> None:
    argv = ("python3", "-m", "torch.distributed.run", "--rdzv-backend=c10d",
            "--rdzv-endpoint=198.18.0.1:29400", "train.py")  # fmt: skip
    proc.process(100, cmdline=argv, maps=torch_maps(), threads={"python3": 1, "pt_tcpstore_uv": 2})
    found = run(proc, [listener(29400, 100), listener(33785, 100)])
    assert label(found[0]) == "tcpstore/rendezvous-store/high"
    assert "port 29400 = --rdzv-endpoint 198.18.0.1:29400" in found[0].evidence
    assert "command line has 'torch.distributed.run'" in found[0].evidence


def test_store_count_is_capped_by_store_threads(proc: FakeProc) -> None:
    # One pt_tcpstore thread: only one wildcard listener of this process is a store.
    proc.process(200, maps=torch_maps(), threads={"python3": 1, "pt_tcpstore": 1})
    found = run(proc, [listener(40000, 200), listener(40001, 200)])
    assert label(found[0]) == "tcpstore/store/high"
    assert "thread pt_tcpstore x1 (legacy backend)" in found[0].evidence
    assert label(found[1]) == "torch-unknown/listener/low"


def test_rank0_hosted_store_needs_rank0_and_no_agent_store(proc: FakeProc) -> None:
    proc.process(300, maps=torch_maps(), threads={"python3": 1, "pt_tcpstore_uv": 1},
                 environ={"RANK": "0", "MASTER_PORT": "29500", "WORLD_SIZE": "4"})  # fmt: skip
    proc.process(301, maps=torch_maps(), threads={"python3": 1, "pt_tcpstore_uv": 1},
                 environ={"RANK": "0", "MASTER_PORT": "29501",
                          "TORCHELASTIC_USE_AGENT_STORE": "True"})  # fmt: skip
    found = run(proc, [listener(29500, 300), listener(29501, 301)])
    assert label(found[0]) == "tcpstore/rank0-store/high"
    assert {"RANK=0", "TORCHELASTIC_USE_AGENT_STORE is not True"} <= set(found[0].evidence)
    assert label(found[1]) == "tcpstore/store/high"


def test_gloo_and_tensorpipe_are_told_apart_by_backlog(proc: FakeProc) -> None:
    # An RPC worker: 17 TP_UV_loop threads (1 transport + 16 lanes, backlog 128) and a Gloo
    # listener (somaxconn). Ports interleave on purpose.
    proc.process(400, maps=torch_maps(),
                 threads={"python3": 1, "TP_UV_loop": 17, "gloo_tcp_loop": 1})  # fmt: skip
    items = [listener(41000 + i, 400, "198.18.0.1", backlog=128) for i in range(17)]
    items.insert(5, listener(40990, 400, "198.18.0.1", backlog=SOMAXCONN))
    found = run(proc, items)
    gloo = [f for f, item in zip(found, items, strict=True) if item.port == 40990]
    rpc = [f for f, item in zip(found, items, strict=True) if item.port != 40990]
    assert [label(f) for f in gloo] == ["c10d-gloo/pair-listener/high"]
    assert {label(f) for f in rpc} == {"rpc-tensorpipe/listener/high"}
    assert all(f.is_do_not_touch and not f.is_connect_safe for f in rpc)
    assert "backlog 4096 (somaxconn)" in gloo[0].evidence


def test_without_backlog_a_tensorpipe_process_is_never_called_connect_safe(proc: FakeProc) -> None:
    # procfs gives no backlog: in a process with both TensorPipe and Gloo threads, no listener
    # may be labelled a high-confidence connect-safe Gloo listener.
    proc.process(500, maps=torch_maps(), threads={"TP_UV_loop": 17, "gloo_tcp_loop": 1})
    items = [listener(42000 + i, 500, "198.18.0.1", backlog=None, source=ListenerSource.PROCFS)
             for i in range(18)]  # fmt: skip
    found = run(proc, items)
    risky = [f for f in found if f and f.is_connect_safe and f.confidence.value == "high"]
    assert risky == []
    assert sum(1 for f in found if f and f.service == "rpc-tensorpipe") == 17


def test_gloo_without_backlog_is_high_when_no_tensorpipe(proc: FakeProc) -> None:
    proc.process(600, maps=torch_maps(), threads={"python3": 1, "gloo_tcp_loop": 2})
    items = [
        listener(43000, 600, "127.0.0.1", backlog=None),
        listener(43001, 600, "198.18.0.1", backlog=None),
    ]
    found = run(proc, items)
    assert [label(f) for f in found] == ["c10d-gloo/pair-listener/high"] * 2


def test_nccl_confidence_follows_its_evidence(proc: FakeProc) -> None:
    # libnccl alone: every CUDA torch maps it, so medium.
    proc.process(700, maps=torch_maps(NCCL), threads={"python3": 1})
    # With ProcessGroupNCCL's watchdog thread running, high.
    proc.process(701, maps=torch_maps(NCCL), threads={"python3": 1, "pt_nccl_watchdg": 1},
                 environ={"NCCL_COMM_ID": "198.18.0.1:29600"})  # fmt: skip
    found = run(proc, [
        listener(44000, 700, "198.18.0.1"), listener(29600, 701, "198.18.0.1"),
        listener(44001, 701, "198.18.0.1"), listener(28028, 701, "127.0.0.1"),
    ])  # fmt: skip
    assert [label(f) for f in found] == [
        "c10d-nccl/listener/medium", "c10d-nccl/bootstrap-root/high",
        # 28028 is NCCL's RAS port: its own signature (nccl-ras) outranks c10d-nccl's rule
        "c10d-nccl/listener/high", "nccl-ras/ras-client/high",
    ]  # fmt: skip


def test_worker_server_is_told_from_a_store_by_backlog(proc: FakeProc) -> None:
    proc.process(800, maps=torch_maps(), threads={"pt_workerserver": 9, "pt_tcpstore_uv": 1})
    found = run(proc, [listener(45000, 800, backlog=SOMAXCONN), listener(45001, 800, backlog=5)])
    assert label(found[0]) == "tcpstore/store/high"
    assert label(found[1]) == "c10d-workerserver/worker-server/high"
    assert found[1].handshake == "http-get-root"


def test_unattributed_default_ports_are_candidate_stores_only(proc: FakeProc) -> None:
    proc.process(900, comm="nginx", cmdline=("nginx",), maps=("/usr/sbin/nginx",))
    found = run(proc, [listener(29500, None), listener(29400, None), listener(29500, 900),
                       listener(8080, None)])  # fmt: skip
    assert [label(f) for f in found] == [
        "tcpstore/candidate-store/medium", "tcpstore/candidate-store/medium", None, None,
    ]  # fmt: skip


def test_non_torch_processes_stay_unclassified(proc: FakeProc) -> None:
    proc.process(1000, comm="sshd", cmdline=("sshd", "-D"), maps=("/usr/sbin/sshd",))
    assert run(proc, [listener(22, 1000, "0.0.0.0"), listener(2222, 1000)]) == [None, None]


def test_a_vanished_process_is_gone_not_an_error(proc: FakeProc, tmp_path: Path) -> None:
    proc.process(1100, maps=torch_maps(), threads={"pt_tcpstore_uv": 1})
    cache = FactsCache(str(proc.root))
    items = [listener(46000, 1100), listener(46001, 1101)]  # 1101 exited before we looked
    scopes = {i: bindscope.scope_of(x.family, x.address, x.v6only, False) for i, x in enumerate(items)}
    context = classify.ListenerContext(scopes, {NETNS: SOMAXCONN})
    facts = {1100: cache.get(1100), 1101: cache.get(1101)}
    found, vanished = classify.classify(items, signatures.load(), facts, context)
    assert vanished == {1101}
    assert label(found.get(0)) == "tcpstore/store/high"
    assert 1 not in found


@pytest.mark.parametrize(
    ("value", "port"),
    [("29500", 29500), ("host:29400", 29400), ("[::1]:29501", 29501), ("localhost:0", None),
     ("node01", None), ("70000", None)],
)  # fmt: skip
def test_port_of(value: str, port: int | None) -> None:
    assert classify.port_of(value) == port
