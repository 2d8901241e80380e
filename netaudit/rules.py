"""The finding rules: stable ids, one page each in docs/rules/<ID>.md with the fix.

Service rules (NA001-NA007) are named by the signatures in probes/; a new signature may reuse
one or add its own id here. A test checks that every id has its page and every page its id.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaudit.models import Severity

DOCS = "docs/rules"


@dataclass(frozen=True, slots=True)
class RuleInfo:
    rule_id: str
    title: str
    severity: Severity | None  # None: the service's risk decides

    @property
    def doc(self) -> str:
        return f"{DOCS}/{self.rule_id}.md"


RULES: dict[str, RuleInfo] = {
    info.rule_id: info
    for info in (
        RuleInfo("NA001", "TCPStore reachable from outside the intended subnets", Severity.CRITICAL),
        RuleInfo("NA002", "RPC (TensorPipe) listener reachable from outside", Severity.CRITICAL),
        RuleInfo("NA003", "c10d Gloo listener reachable from outside", Severity.HIGH),
        RuleInfo("NA004", "NCCL listener reachable from outside", Severity.HIGH),
        RuleInfo("NA005", "c10d debug WorkerServer reachable from outside", Severity.HIGH),
        RuleInfo("NA006", "torchrun agent listener reachable from outside", Severity.HIGH),
        RuleInfo("NA007", "unidentified torch listener reachable from outside", Severity.HIGH),
        RuleInfo(
            "NA010",
            "listener answers on outside addresses, only a firewall stops it",
            Severity.MEDIUM,
        ),
        RuleInfo(
            "NA011",
            "reachable from nodes of the intended subnet outside the job (trust scope job)",
            None,
        ),
        RuleInfo("NA012", "open port on a PyTorch default port, service not confirmed", Severity.LOW),
        RuleInfo("NA020", "potentially exposed (static analysis, not yet proven)", Severity.MEDIUM),
        RuleInfo("NA030", "stale exposed listener: no active Slurm job owns it", Severity.HIGH),
        RuleInfo("NA040", "ZeroMQ socket reachable from outside", Severity.CRITICAL),
        RuleInfo("NA041", "Jupyter Server reachable from outside", Severity.CRITICAL),
        RuleInfo("NA042", "TensorBoard reachable from outside", Severity.MEDIUM),
        RuleInfo("NA043", "MLflow tracking server reachable from outside", Severity.HIGH),
        RuleInfo("NA044", "Ray dashboard / Jobs API reachable from outside", Severity.CRITICAL),
        RuleInfo("NA045", "TorchServe API reachable from outside", None),
        RuleInfo("NA046", "Horovod rendezvous server reachable from outside", Severity.CRITICAL),
        RuleInfo("NA047", "NCCL RAS client port reachable from outside", Severity.HIGH),
        RuleInfo("NA048", "Ray GCS server (head's gRPC port) reachable from outside", Severity.CRITICAL),
        RuleInfo("NA049", "Ray Client server reachable from outside", Severity.CRITICAL),
    )
}
