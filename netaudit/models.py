"""The nouns of netaudit: frozen, slotted dataclasses with tuples, and StrEnums whose values are
the JSON spelling. Every optional field says when it is set.

Probes, scanner and policy build these; only the CLI and the renderers turn them into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

INVENTORY_SCHEMA_VERSION = 1
REPORT_SCHEMA_VERSION = 1


class Family(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class Confidence(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"high": 3, "medium": 2, "low": 1}[self.value]


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 5, "high": 4, "medium": 3, "low": 2, "info": 1}[self.value]


class BindScope(StrEnum):
    """Where a listening socket accepts connections, from its bind address and v6only."""

    DUAL_STACK = "dual-stack-wildcard"  # [::] with v6only=0: every IPv4 and IPv6 address
    WILDCARD_V4 = "ipv4-wildcard"  # 0.0.0.0
    WILDCARD_V6 = "ipv6-wildcard"  # [::] with v6only=1
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    SPECIFIC = "specific"

    @property
    def is_wildcard(self) -> bool:
        return self in (BindScope.DUAL_STACK, BindScope.WILDCARD_V4, BindScope.WILDCARD_V6)


class ListenerSource(StrEnum):
    NETLINK = "sock_diag"  # NETLINK_SOCK_DIAG dump: backlog and v6only known
    PROCFS = "procfs"  # /proc/<pid>/net/tcp{,6}: backlog and v6only unknown


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    name: str
    family: Family
    address: str
    prefix: int
    is_loopback: bool
    is_link_local: bool


@dataclass(frozen=True, slots=True)
class NetNamespace:
    """One network namespace of the node.

    Attributes:
        inode: the namespace's inode, as in ``/proc/<pid>/ns/net`` -> ``net:[inode]``.
        is_probe_namespace: the namespace the probe itself runs in (the host's, normally).
        names: names under /run/netns that point at it (``ip netns``), if any.
        pids: how many processes live in it (0 for a namespace known only from /run/netns).
        source: how its listeners were read. None when they could not be read at all.
        interfaces: its addresses. Empty when they could not be read (see Inventory.gaps).
    """

    inode: int
    is_probe_namespace: bool
    names: tuple[str, ...]
    pids: int
    source: ListenerSource | None
    interfaces: tuple[InterfaceAddress, ...]


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """Who a process works for. Every field is None when unknown."""

    slurm_job_id: str | None = None  # SLURM_JOB_ID, else the cgroup path (job_<id> or SLUID)
    slurm_job_user: str | None = None
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    torchelastic_run_id: str | None = None
    master_addr: str | None = None
    master_port: int | None = None
    torch_version: str | None = None  # __version__ of the torch whose libtorch is mapped

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Facts about one process that owns a listener.

    Attributes:
        user: the user name; the numeric uid as text when the name does not resolve.
        cmdline: argv with secret-looking values replaced by ``<redacted>``.
        environment: allowlisted variables only (netaudit.environ.ALLOWED), sorted.
        threads: (thread name, count) for every distinct /proc/<pid>/task/*/comm, sorted.
        libraries: basenames of the mapped shared objects that classification cares about.
        is_complete: False when part of the facts was unreadable (privilege, a race).
        packages: (name, version) of the Python packages netaudit knows CVEs of (vLLM, Ray,
            TorchServe...) found beside the process: the installed distribution of a package
            it maps or runs from, sorted. torch's own is job.torch_version.
    """

    pid: int
    ppid: int | None
    name: str
    uid: int | None
    user: str | None
    cmdline: tuple[str, ...]
    netns: int | None
    environment: tuple[tuple[str, str], ...]
    threads: tuple[tuple[str, int], ...]
    libraries: tuple[str, ...]
    cgroup: str | None
    job: JobIdentity
    is_complete: bool = True
    packages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Classification:
    """What a listener is, and why we think so.

    Attributes:
        service: the signature's service id (``tcpstore``, ``c10d-gloo``, ...).
        variant: the matching rule's variant (``rendezvous-store``), or None.
        evidence: the facts the match rests on, human readable, in rule order.
        is_do_not_touch: never complete a TCP handshake with it (TensorPipe).
        is_connect_safe: a plain connect() and close is harmless to it.
        handshake: the read-only confirmation the engine may run (``tcpstore-ping``,
            ``http-get-root``), or None for "send nothing".
    """

    signature: str
    service: str
    variant: str | None
    confidence: Confidence
    evidence: tuple[str, ...]
    risk: Severity
    is_do_not_touch: bool
    is_connect_safe: bool
    handshake: str | None


@dataclass(frozen=True, slots=True)
class ExposureHint:
    """Static exposure: the node addresses a listener answers on, from its bind and the
    node's interfaces. A hint ("potentially exposed"), not proof: only the scanner proves.

    Attributes:
        answers_on: non-loopback addresses of the listener's namespace it accepts on. For a
            specific bind this is the bound address alone, although routing may deliver to
            it through other interfaces (weak host model): ``note`` says so.
        outside_intended: those of ``answers_on`` that lie outside the intended subnets.
    """

    scope: BindScope
    answers_on: tuple[str, ...]
    outside_intended: tuple[str, ...]
    note: str

    @property
    def is_potentially_exposed(self) -> bool:
        return bool(self.outside_intended)


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening TCP socket.

    Attributes:
        pid: the lowest pid holding the socket; None without the privilege to see it.
        pids: every pid holding it (forked children share sockets).
        process: facts about ``pid``; None when pid is None or the process vanished.
        uid: the socket owner's uid from sock_diag or procfs (known even without pid).
        v6only, backlog: None when read from procfs.
        classification: None for a listener no signature recognised.
        exposure: None until the static analysis ran (always set in an Inventory).
    """

    netns: int
    family: Family
    address: str
    port: int
    inode: int
    source: ListenerSource
    v6only: bool | None
    backlog: int | None
    uid: int | None
    pid: int | None
    pids: tuple[int, ...]
    process: ProcessInfo | None
    classification: Classification | None = None
    exposure: ExposureHint | None = None

    @property
    def endpoint(self) -> str:
        return (
            f"[{self.address}]:{self.port}" if self.family is Family.IPV6 else f"{self.address}:{self.port}"
        )


@dataclass(frozen=True, slots=True)
class Privilege:
    is_root: bool
    can_enter_namespaces: bool
    can_read_all_processes: bool


@dataclass(frozen=True, slots=True)
class Inventory:
    """What listens on one node (DESIGN.md §4, schema_version 1).

    Attributes:
        gaps: what could not be seen, one sentence each. Empty means complete.
    """

    host: str
    collected_at: datetime
    netaudit_version: str
    privilege: Privilege
    intended_subnets: tuple[str, ...]
    namespaces: tuple[NetNamespace, ...]
    listeners: tuple[Listener, ...]
    gaps: tuple[str, ...] = field(default_factory=tuple)
    schema_version: int = INVENTORY_SCHEMA_VERSION
    cgroup2_mount: str | None = None  # where the node mounts cgroup v2 (netaudit fix's rule paths)

    @property
    def is_complete(self) -> bool:
        return not self.gaps


class PortState(StrEnum):
    """What one attempt from one source learned about one address and port."""

    OPEN = "open"  # SYN-ACK (or connect() succeeded)
    CLOSED = "closed"  # RST: the host answered, nothing listens (or a firewall rejects with RST)
    FILTERED = "filtered"  # no answer within the timeout, or ICMP unreachable
    NOT_TESTED = "not-tested"  # deliberately not probed (unsafe, no privilege, no route)


class Method(StrEnum):
    """How an attempt was made."""

    SYN = "syn"  # half-open: a SYN, the kernel's RST ends it
    CONNECT = "connect"  # connect() and close, no bytes (no raw-socket privilege)
    HANDSHAKE = "handshake"  # read-only confirmation over loopback (local audit)
    NONE = "none"  # not sent (not-tested)


@dataclass(frozen=True, slots=True)
class VantageSource:
    """A source address this scan sent from.

    Attributes:
        network: the source's interface network (203.0.113.0/24): "the network it was reached
            from", which findings and baselines are keyed on.
        is_inside: the address lies in an intended subnet.
    """

    address: str
    interface: str | None
    network: str
    is_inside: bool


@dataclass(frozen=True, slots=True)
class Attempt:
    """One source's try at one endpoint.

    Attributes:
        is_local_path: the packet never left this host (a host probing itself goes through
            loopback): not evidence of what an outsider sees.
        is_path_verified: something on this source-to-address path answered (SYN-ACK, RST or
            ICMP), so a timeout here means a filter, not a dead path.
        confirmed: the read-only handshake's verdict from this source; None when none ran.
        detail: the handshake's own words (nonce echoed, status line), or None.
        authentication: the confirmed service asked for credentials (True), served the
            read-only request without any (False); None when its answer does not say.
        version: the service's version as its answer carried it, or None.
    """

    source: str
    state: PortState
    method: Method
    reason: str
    rtt_ms: float | None
    is_local_path: bool
    is_path_verified: bool
    confirmed: bool | None = None
    detail: str | None = None
    vantage: str = ""  # the host that sent it
    authentication: bool | None = None
    version: str | None = None

    @property
    def is_unverified_filter(self) -> bool:
        """Filtered, but no canary answered through the same path: a filter and a dead path
        look the same."""
        return self.state is PortState.FILTERED and not self.is_path_verified


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address and port that a PyTorch listener answers on, with every attempt at it.

    Attributes:
        host: the node (inventory host name), or the target as given when no inventory
            covers it.
        listener: the inventory's listener; None for a plain target's default port.
        inventory_age_s: age of the inventory at scan time; None without inventory.
        is_outside_address: the address lies outside the intended subnets.
    """

    host: str
    address: str
    family: Family
    port: int
    listener: Listener | None
    inventory_age_s: float | None
    is_outside_address: bool
    attempts: tuple[Attempt, ...] = ()

    @property
    def classification(self) -> Classification | None:
        return self.listener.classification if self.listener else None

    @property
    def text(self) -> str:
        shown = f"[{self.address}]" if self.family is Family.IPV6 else self.address
        return f"{shown}:{self.port}"


def with_attempts(endpoint: Endpoint, attempts: tuple[Attempt, ...]) -> Endpoint:
    """``dataclasses.replace`` for the hot path: it introspects the fields on every call, which
    cost 0.3 s over a 16,384-endpoint scan."""
    return Endpoint(
        endpoint.host, endpoint.address, endpoint.family, endpoint.port, endpoint.listener,
        endpoint.inventory_age_s, endpoint.is_outside_address, attempts,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CveEvidence:
    """A known CVE of the version seen behind a finding (netaudit.advisories).

    Attributes:
        version: the version that falls in the affected range.
        seen: "local" (the probe read it on the node) or "answer" (the service's answer said it).
        fixed: the first fixed release; "" where none exists.
        source: the advisory the range comes from.
        condition: the configuration the CVE needs beyond the version, "" when none: the
            version alone does not prove the process is vulnerable.
    """

    id: str
    package: str
    version: str
    seen: str
    fixed: str
    disputed: bool
    summary: str
    source: str
    condition: str = ""  # the configuration it needs beyond the version ("" when none)

    @property
    def text(self) -> str:
        fixed = f"fixed in {self.fixed}" if self.fixed else "no fixed release"
        disputed = "; disputed by the vendor" if self.disputed else ""
        only = f" (only when {self.condition})" if self.condition else ""
        what = f"{self.id}: {self.package} {self.version} ({self.seen})"
        return f"{what}, {fixed}{disputed}: {self.summary}{only}"


@dataclass(frozen=True, slots=True)
class Finding:
    """A policy violation with its evidence and fix.

    Attributes:
        source: the vantage address it was reached from ("" for static findings).
        source_network: that address's network; "static" for findings of the local audit.
        confirmed: the handshake answered (True), did not (False), or none ran (None).
        accepted: the reason of the config exception that accepts it, or None. Accepted
            findings are reported but never fail a run.
    """

    rule_id: str
    title: str
    severity: Severity
    service: str
    variant: str | None
    host: str
    address: str
    family: Family
    port: int
    source: str
    source_network: str
    state: PortState
    confirmed: bool | None
    pid: int | None
    process_name: str | None
    user: str | None
    job: JobIdentity | None
    remediation: str
    doc: str
    evidence: tuple[str, ...]
    accepted: str | None = None
    accepted_until: str | None = None
    vantage: str = ""  # the host that ran the scan (peers' reports are merged)
    baseline_state: str | None = None  # "new" or "unchanged" with --baseline, else None
    is_unverified: bool = False  # filtered, but no canary answered on any path it was seen from
    cves: tuple[CveEvidence, ...] = ()  # known CVEs of the versions seen behind it

    @property
    def state_text(self) -> str:
        """The state as every format shows it: an unverified filter says so."""
        return f"{self.state.value} (unverified)" if self.is_unverified else self.state.value

    @property
    def baseline_key(self) -> str:
        """What makes two runs' findings "the same": rule, host, service, address family and
        the network it was reached from. Job, process and port are attributes: they change
        with every job."""
        return "|".join((self.rule_id, self.host, self.service, self.family.value, self.source_network))

    @property
    def sort_key(self) -> tuple[int, str, str, int, str, str]:
        return (-self.severity.rank, self.host, self.address, self.port, self.rule_id, self.source)


class GapKind(StrEnum):
    """Why something could not be inspected. The exit status and the baseline read the kind,
    never the wording of the reason."""

    HOST_DOWN = "host-down"  # host-unreachable from our kernel or a router: nothing answered
    UNRESOLVED = "unresolved"  # a target name that does not resolve
    SILENT = "silent"  # no answer from any source, and no fresh inventory says it is up
    NOT_TESTED = "not-tested"  # endpoints no outside source of their family could test
    NO_SOURCE = "no-source"  # this host has no usable source address at all
    INVENTORY = "inventory"  # the node's own inventory names gaps (privilege, a namespace)
    FANOUT = "fanout"  # the node's probe could not be gathered
    PEER = "peer"  # a scanning peer failed, or its report names a gap
    INTERNAL = "internal"  # a netaudit crash on that node or peer (exit 4 for the run)


@dataclass(frozen=True, slots=True)
class Gap:
    """One thing the run could not inspect.

    Attributes:
        host: the node, target or peer it concerns; None for the run as a whole.
        vantage: the peer whose report named it ("" for this host's own run).
    """

    host: str | None
    kind: GapKind
    reason: str
    vantage: str = ""

    @property
    def text(self) -> str:
        where = f"peer {self.vantage}: " if self.vantage else ""
        return f"{where}{self.host}: {self.reason}" if self.host else f"{where}{self.reason}"


@dataclass(frozen=True, slots=True)
class ScopeSummary:
    """What the scan looked at, as derived from the inventories and the targets.

    Attributes:
        derived_from: "inventories", "targets" or "inventories+targets".
        nodes: inventories whose addresses were in scope.
        addresses: node addresses in scope per family (after the filters).
        filters: the targets that restricted the inventories' scope (CIDRs, addresses).
        swept_addresses: addresses without an inventory, tried on the default ports.
    """

    derived_from: str
    nodes: int
    addresses_ipv4: int
    addresses_ipv6: int
    filters: tuple[str, ...]
    swept_addresses: int


@dataclass(frozen=True, slots=True)
class BaselineChanges:
    """What changed since the last run (--baseline).

    Attributes:
        resolved: baseline entries (rule, host, service, ...) no longer seen.
        new_failures, resolved_failures: incomplete items, compared the same way.
        is_first_run: no baseline existed: everything is new.
    """

    new: tuple[str, ...]
    unchanged: tuple[str, ...]
    resolved: tuple[str, ...]
    new_failures: tuple[str, ...]
    resolved_failures: tuple[str, ...]
    is_first_run: bool


@dataclass(frozen=True, slots=True)
class Report:
    """What `netaudit scan` found (DESIGN.md §4, schema_version 1).

    Attributes:
        mode: "syn", "connect", "local" (this host over loopback), or "dry-run".
        gaps: what could not be inspected; empty means complete.
        notes: what the reader must know to read it right (e.g. proof needs a peer).
        scope: what was in scope; None for the local audit.
    """

    generated_at: datetime
    netaudit_version: str
    vantage_host: str
    mode: str
    sources: tuple[VantageSource, ...]
    intended_subnets: tuple[str, ...]
    trust_scope: str
    fail_on: Severity
    findings: tuple[Finding, ...]
    endpoints: tuple[Endpoint, ...]
    gaps: tuple[Gap, ...]
    notes: tuple[str, ...]
    duration_s: float
    probes_sent: int
    is_interrupted: bool = False
    failed_hosts: tuple[str, ...] = ()  # hosts whose data is missing this run
    changes: BaselineChanges | None = None
    scope: ScopeSummary | None = None
    schema_version: int = REPORT_SCHEMA_VERSION

    @property
    def incomplete(self) -> tuple[str, ...]:
        """The gaps as sentences, for renderers."""
        return tuple(gap.text for gap in self.gaps)

    @property
    def has_internal_error(self) -> bool:
        return any(gap.kind is GapKind.INTERNAL for gap in self.gaps)
