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
            f"[{self.address}]:{self.port}"
            if self.family is Family.IPV6
            else f"{self.address}:{self.port}"
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

    @property
    def is_complete(self) -> bool:
        return not self.gaps


class PortState(StrEnum):
    """What one attempt from one source learned about one address and port."""

    OPEN = "open"  # SYN-ACK (or connect() succeeded)
    CLOSED = "closed"  # RST: the host answered, nothing listens (or a firewall rejects with RST)
    FILTERED = "filtered"  # no answer within the timeout, or ICMP unreachable
    NOT_TESTED = "not-tested"  # deliberately not probed (unsafe, no privilege, no route)
