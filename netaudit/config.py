"""The site configuration (TOML, stdlib tomllib): intended subnets, scan targets and limits,
fan-out, outputs, the prolog gate and accepted exceptions. Flags override it.

Every field is validated on load; an unknown key is an error, not a silent no-op, because a
misspelt ``intended_subnet`` would otherwise turn a whole audit into noise. Errors are one line
naming the file and the field. docs/configuration.md lists every key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from netaudit import exposure
from netaudit.audit import settings as scan_settings
from netaudit.audit.settings import ScanSettings
from netaudit.typedread import InputError, Table

FANOUT_METHODS = frozenset({"clustershell", "ssh", "srun", "command"})
FORMATS = frozenset({"table", "json", "sarif", "junit"})
ON_ERROR = frozenset({"open", "closed"})


class ConfigError(InputError):
    """A config file that cannot be used."""


@dataclass(frozen=True, slots=True)
class FanoutSettings:
    """Attributes:
    method: None when no fan-out is configured (scan uses this host and --inventory files).
    command: the template for method "command"; %h is the node name.
    topology: a ClusterShell topology.conf; with it, method "clustershell" fans out in tree
        mode through the gateways it names (thousands of nodes).
    remote_command: what runs on each node (ssh, clustershell, srun).
    scan_from: nodes that run the scan themselves as extra vantage points.
    """

    method: str | None = None
    nodes: str | None = None
    width: int = 64
    timeout_s: float = 120.0
    command: str | None = None
    remote_command: str = "netaudit probe --format json"
    remote_scan_command: str = "netaudit scan"
    ssh_options: tuple[str, ...] = ()
    topology: str | None = None  # ClusterShell topology.conf: tree mode through gateways
    srun_options: tuple[str, ...] = ()
    scan_from: tuple[str, ...] = ()
    scan_command: str | None = None  # method "command": the template that runs a peer's scan


@dataclass(frozen=True, slots=True)
class OutputSettings:
    format: str | None = None
    textfile_dir: str | None = None
    syslog: bool = False
    syslog_socket: str = "/dev/log"
    baseline: str | None = None


@dataclass(frozen=True, slots=True)
class GateSettings:
    deadline_s: float = 5.0
    on_error: str = "open"
    verdict_path: str | None = None  # %h is replaced by the node name
    verdict_max_age_s: float = 2 * 86400.0
    fail_on_stale_verdict: bool = False


@dataclass(frozen=True, slots=True)
class AcceptedException:
    """An accepted risk: findings matching every given field are reported as accepted, not
    failed, until ``expires``. ``hosts`` is a hostlist expression or glob, ``networks`` CIDRs
    of the target address."""

    rule: str
    reason: str
    expires: dt.date
    hosts: str | None = None
    service: str | None = None
    port: int | None = None
    networks: tuple[str, ...] = ()
    source: str = ""  # file:index, for messages


@dataclass(frozen=True, slots=True)
class Config:
    path: str | None = None
    intended_subnets: tuple[str, ...] = ()
    probes_dirs: tuple[str, ...] = ()
    scan: ScanSettings = field(default_factory=ScanSettings)
    fanout: FanoutSettings = field(default_factory=FanoutSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    exceptions: tuple[AcceptedException, ...] = ()


def _subnets(table: Table, key: str) -> tuple[str, ...]:
    values = table.strings(key, allow_empty=True) or ()
    try:
        return tuple(str(net) for net in exposure.parse_subnets(values))
    except ValueError as error:
        table.fail(key, str(error))


def _fanout(table: Table | None) -> FanoutSettings:
    base = FanoutSettings()
    if table is None:
        return base
    method = table.choice("method", FANOUT_METHODS)
    settings = FanoutSettings(
        method=method,
        nodes=table.get("nodes", str),
        width=table.integer("width", 1, 4096) or base.width,
        timeout_s=table.number("timeout_s", 1, 86400) or base.timeout_s,
        command=table.get("command", str),
        remote_command=table.get("remote_command", str) or base.remote_command,
        remote_scan_command=table.get("remote_scan_command", str) or base.remote_scan_command,
        ssh_options=table.strings("ssh_options", allow_empty=True) or (),
        topology=table.get("topology", str),
        srun_options=table.strings("srun_options", allow_empty=True) or (),
        scan_from=table.strings("scan_from", allow_empty=True) or (),
        scan_command=table.get("scan_command", str),
    )
    if method == "command" and settings.scan_from and not settings.scan_command:
        table.fail(
            "scan_command",
            'is required with method = "command" and scan_from (e.g. "ssh %h netaudit scan"): '
            "the command template runs the probe",
        )
    if method == "command" and not settings.command:
        table.fail(
            "command",
            'is required with method = "command" (e.g. "ssh %h netaudit probe --format json")',
        )
    if method is not None and method != "srun" and not settings.nodes:
        table.fail("nodes", f'is required with method = "{method}" (a hostlist such as "node[001-064]")')
    table.finish()
    return settings


def _output(table: Table | None) -> OutputSettings:
    if table is None:
        return OutputSettings()
    settings = OutputSettings(
        format=table.choice("format", FORMATS),
        textfile_dir=table.get("textfile_dir", str),
        syslog=bool(table.get("syslog", bool)),
        syslog_socket=table.get("syslog_socket", str) or "/dev/log",
        baseline=table.get("baseline", str),
    )
    table.finish()
    return settings


def _gate(table: Table | None) -> GateSettings:
    base = GateSettings()
    if table is None:
        return base
    settings = GateSettings(
        deadline_s=table.number("deadline_s", 0.05, 600) or base.deadline_s,
        on_error=table.choice("on_error", ON_ERROR) or base.on_error,
        verdict_path=table.get("verdict_path", str),
        verdict_max_age_s=table.number("verdict_max_age_s", 1, 365 * 86400) or base.verdict_max_age_s,
        fail_on_stale_verdict=bool(table.get("fail_on_stale_verdict", bool)),
    )
    table.finish()
    return settings


def _exceptions(top: Table) -> tuple[AcceptedException, ...]:
    accepted = []
    for table in top.tables("exceptions"):
        rule = table.get("rule", str, required=True)
        if not (len(rule) == 5 and rule.startswith("NA") and rule[2:].isdigit()):
            table.fail("rule", f"{rule!r} is not a rule id such as NA001")
        reason = table.get("reason", str, required=True)
        if not reason.strip():
            table.fail("reason", "say why this risk is accepted")
        expires = table.get("expires", dt.date, required=True)
        if isinstance(expires, dt.datetime):
            expires = expires.date()
        accepted.append(
            AcceptedException(
                rule=rule,
                reason=reason.strip(),
                expires=expires,
                hosts=table.get("hosts", str),
                service=table.get("service", str),
                port=table.integer("port", 1, 65535),
                networks=_subnets(table, "networks"),
                source=f"{table.source}:{table.where}",
            )
        )
        table.finish()
    return tuple(accepted)


CONFIG_LIMIT_BYTES = 4 << 20


def parse(text: str, path: str) -> Config:
    # Imported here: without --config (the Slurm prolog's gate), no TOML parser is needed.
    from netaudit import docparse

    data = docparse.parse_toml(text, path, ConfigError)
    top = Table(path, "", data, ConfigError)
    config = Config(
        path=path,
        intended_subnets=_subnets(top, "intended_subnets"),
        probes_dirs=top.strings("probes_dirs", allow_empty=True) or (),
        scan=scan_settings.from_table(top.sub("scan")),
        fanout=_fanout(top.sub("fanout")),
        output=_output(top.sub("output")),
        gate=_gate(top.sub("gate")),
        exceptions=_exceptions(top),
    )
    top.finish()
    return config


def load(path: str) -> Config:
    from netaudit import docparse, safeio

    try:
        raw = safeio.read_document(path, CONFIG_LIMIT_BYTES)
    except OSError as error:
        raise docparse.read_error(path, error, ConfigError) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse(text, path)
