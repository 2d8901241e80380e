"""The node probe against real torch jobs from the CPU wheel: stores on both backends, a
torchrun Gloo job, a static --master-port run, an RPC job, a store in another network
namespace, and plain listeners that must stay unclassified."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from netaudit import inventory, signatures
from netaudit.models import Inventory, Listener
from tests.lab.netlab import lab_fixture  # noqa: F401
from tests.lab.torchjobs import JOBS, TorchJob, torchrun

pytestmark = [pytest.mark.requires_torch, pytest.mark.slow]


def probe() -> Inventory:
    return inventory.collect(signatures.load())


def owned_by(found: Inventory, pids: set[int]) -> list[Listener]:
    return [item for item in found.listeners if set(item.pids) & pids]


def only(items: list[Listener]) -> Listener:
    assert len(items) == 1, [(i.endpoint, i.classification) for i in items]
    return items[0]


@pytest.mark.parametrize("legacy", [False, True], ids=["libuv", "legacy"])
def test_tcpstore_backends_are_recognised_with_evidence(tmp_path: Path, legacy: bool) -> None:
    argv = [str(JOBS / "tcpstore_server.py")] + (["--legacy"] if legacy else [])
    with TorchJob(tmp_path, argv) as job:
        facts = job.wait_ready()[0]
        found = probe()
        store = only([item for item in found.listeners if item.port == facts["port"]])

    assert store.pid == facts["pid"]
    assert store.address == "::" and store.v6only is False  # dual-stack whatever host we gave
    assert store.classification is not None
    assert store.classification.service == "tcpstore"
    assert store.classification.variant == "store"
    assert store.classification.confidence.value == "high"
    thread = "pt_tcpstore" if legacy else "pt_tcpstore_uv"
    backend = "legacy backend" if legacy else "libuv backend"
    assert f"thread {thread} x1 ({backend})" in store.classification.evidence
    assert store.process is not None and store.process.job.torch_version.startswith("2.13.0")
    assert store.exposure is not None and store.exposure.scope.value == "dual-stack-wildcard"


def test_rank0_hosted_store_and_gloo_listener_of_a_plain_env_launch(tmp_path: Path) -> None:
    port = _free_port()
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "GLOO_SOCKET_IFNAME": "lo"}  # fmt: skip
    with TorchJob(tmp_path, [str(JOBS / "gloo_worker.py")], env=env) as job:
        facts = job.wait_ready()[0]
        found = probe()
        mine = owned_by(found, {facts["pid"]})

    store = only([item for item in mine if item.port == port])
    assert store.classification is not None and store.classification.variant == "rank0-store"
    assert f"port {port} = MASTER_PORT of this process" in store.classification.evidence
    assert "RANK=0" in store.classification.evidence
    gloo = only([item for item in mine if item.port != port])
    assert gloo.address == "127.0.0.1"
    assert gloo.classification is not None and gloo.classification.service == "c10d-gloo"
    assert gloo.process is not None
    assert gloo.process.job.rank == 0 and gloo.process.job.world_size == 1


def test_torchrun_standalone_gloo_job(tmp_path: Path) -> None:
    argv = torchrun("--standalone", "--nproc-per-node=2", str(JOBS / "gloo_worker.py"))
    with TorchJob(tmp_path, argv, ranks=2, env={"GLOO_SOCKET_IFNAME": "lo"}) as job:
        ready = job.wait_ready()
        found = probe()
        agent_pid = job.process.pid
        workers = {ready[0]["pid"], ready[1]["pid"]}
        agent = owned_by(found, {agent_pid})
        worker_listeners = owned_by(found, workers)

    # Given torchrun --standalone, the agent hosts two stores: rendezvous (random port) and
    # the workers' store at their MASTER_PORT.
    assert sorted(item.classification.variant for item in agent if item.classification) == [
        "agent-worker-store", "rendezvous-store",
    ]  # fmt: skip
    worker_store = only([i for i in agent if i.port == ready[0]["master_port"]])
    assert worker_store.classification is not None
    assert worker_store.classification.variant == "agent-worker-store"
    assert any("MASTER_PORT of child pid" in e for e in worker_store.classification.evidence)
    assert "process name pt_elastic" in worker_store.classification.evidence
    # Every Gloo listener is found, with its rank and the torchelastic run id.
    assert len(worker_listeners) == 2
    ranks = set()
    for item in worker_listeners:
        assert item.classification is not None and item.classification.service == "c10d-gloo"
        assert item.process is not None
        ranks.add(item.process.job.rank)
        assert item.process.job.world_size == 2
        assert item.process.job.torchelastic_run_id
    assert ranks == {0, 1}
    # The agent inherits the run id from its workers.
    assert worker_store.process is not None
    assert worker_store.process.job.torchelastic_run_id == worker_listeners[0].process.job.torchelastic_run_id


def test_torchrun_static_master_port(tmp_path: Path) -> None:
    port = _free_port()
    argv = torchrun("--nnodes=1", "--nproc-per-node=1", "--master-addr=127.0.0.1",
                    f"--master-port={port}", str(JOBS / "gloo_worker.py"))  # fmt: skip
    with TorchJob(tmp_path, argv, ranks=1, env={"GLOO_SOCKET_IFNAME": "lo"}) as job:
        job.wait_ready()
        found = probe()
        agent = owned_by(found, {job.process.pid})

    store = only([item for item in agent if item.port == port])
    assert store.classification is not None
    assert store.classification.service == "tcpstore"
    assert store.classification.variant == "agent-worker-store"


def test_rpc_job_listeners_are_marked_do_not_touch(tmp_path: Path) -> None:
    argv = torchrun("--standalone", "--nproc-per-node=2", str(JOBS / "rpc_worker.py"))
    env = {"TP_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo"}
    with TorchJob(tmp_path, argv, ranks=2, env=env) as job:
        ready = job.wait_ready()
        found = probe()
        for rank in (0, 1):
            mine = owned_by(found, {ready[rank]["pid"]})
            rpc = [i for i in mine if i.classification and i.classification.service == "rpc-tensorpipe"]
            # 1 transport + 16 mpt_uv lanes per agent (ground truth §5)
            assert len(rpc) == 17
            assert all(i.classification.is_do_not_touch and i.backlog == 128 for i in rpc)
            assert all(not i.classification.is_connect_safe for i in rpc)
            others = [i for i in mine if i not in rpc]
            assert all(i.classification and i.classification.service == "c10d-gloo" for i in others)
        # Probing is local and read-only: the job still works afterwards.
        assert job.finish() == 0


def test_plain_listeners_stay_unclassified(tmp_path: Path) -> None:
    with socket.socket() as plain, socket.socket(socket.AF_INET6) as store_port:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        store_port.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            store_port.bind(("::", 29500))
        except OSError:
            pytest.skip("port 29500 is busy on this machine")
        store_port.listen()
        plain_port = plain.getsockname()[1]
        found = probe()
    ours = [item for item in found.listeners if item.pid == os.getpid()]
    assert {item.port for item in ours} >= {plain_port, 29500}
    # A visible non-torch owner on 29500 is not a candidate store: only unattributed ones are.
    assert all(item.classification is None for item in ours)


@pytest.mark.requires_root
def test_store_in_another_network_namespace(lab, tmp_path: Path) -> None:
    node = lab.namespace("n1")
    lab.link(node, lab.namespace("peer"), addrs_a=["198.18.5.1/24"], addrs_b=["198.18.5.2/24"])
    argv = [str(JOBS / "tcpstore_server.py")]
    with TorchJob(tmp_path, argv, popen=lambda cmd, **kw: node.popen(cmd, hostname=False, **kw)) as job:
        facts = job.wait_ready()[0]
        found = probe()
    store = only([item for item in found.listeners if item.pid == facts["pid"]])
    namespace = next(ns for ns in found.namespaces if ns.inode == store.netns)
    assert not namespace.is_probe_namespace
    assert node.name in namespace.names
    assert any(i.address == "198.18.5.1" for i in namespace.interfaces)
    assert store.classification is not None and store.classification.service == "tcpstore"
    assert store.backlog is not None  # read by sock_diag inside the namespace, not procfs
    assert store.exposure is not None and store.exposure.outside_intended == ("198.18.5.1",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
