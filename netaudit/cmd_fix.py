"""`netaudit fix`: write the nftables ruleset that closes what a report (or inventories) found.

Prints the ruleset (or writes it with --output), checks it with ``nft -c`` and applies it only
with --apply. The settings that close the same exposures at the source (bind to the fabric
interface) are printed beside it, as comments, because a firewall is the second line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from collections import Counter
from datetime import UTC, datetime

from netaudit import atomic, cgroupmap, docparse, exposure, options, safeio
from netaudit.config import Config
from netaudit.environment import Environment
from netaudit.fix import cgroups, closing, nftables
from netaudit.models import Inventory
from netaudit.status import ExitStatus
from netaudit.typedread import InputError

_REPORT_LIMIT = 512 << 20
# Where each service's listener can be bound to the fabric, in the service's own settings.
_AT_THE_SOURCE = {
    "tcpstore": "TCPStore: pass master_listen_fd, a socket bound to the fabric (docs/rules/NA001.md)",
    "elastic-agent": "torchrun agent store: --rdzv-endpoint on the fabric address, docs/rules/NA006.md",
    "c10d-gloo": "Gloo: GLOO_SOCKET_IFNAME={iface} for every rank, docs/rules/NA003.md",
    "c10d-nccl": "NCCL: NCCL_SOCKET_IFNAME={iface} for every rank, docs/rules/NA004.md",
    "rpc-tensorpipe": "RPC: TP_SOCKET_IFNAME={iface} for every worker, docs/rules/NA002.md",
    "c10d-workerserver": "debug WorkerServer: leave it off outside debugging, docs/rules/NA005.md",
}


def _interface(inventories: list[Inventory], allowed: tuple[exposure.Network, ...]) -> str:
    for inventory in inventories:
        for namespace in inventory.namespaces:
            for item in namespace.interfaces:
                address = ipaddress.ip_address(item.address)
                if not item.is_loopback and any(address in network for network in allowed):
                    return item.name
    return "<fabric interface>"


def _load(
    args: argparse.Namespace, config: Config, env: Environment
) -> tuple[closing.Closing, list[Inventory], tuple[str, ...]]:
    signatures = options.load_signatures(args, config)
    if args.report:
        from netaudit.report import report_read

        path = args.report
        try:
            raw = (
                safeio.read_stream(env.stdin, _REPORT_LIMIT)
                if path == "-"
                else safeio.read_document(path, _REPORT_LIMIT)
            )
        except OSError as error:
            raise docparse.read_error(path, error, InputError) from None
        report = report_read.loads(raw, "stdin" if path == "-" else path)
        return closing.from_findings(report.findings, signatures), [], report.intended_subnets
    from netaudit.cmd_scan import load_inventories

    inventories = load_inventories(args.inventory, env)
    return closing.from_inventories(inventories, signatures), inventories, ()


def _mount(args: argparse.Namespace, inventories: list[Inventory]) -> tuple[str, list[str]]:
    """Where the nodes mount cgroup v2, for the rule's path: --cgroup-mount, else what the
    inventories recorded (the most common, with a warning when nodes differ), else this host's."""
    if args.cgroup_mount:
        return args.cgroup_mount, []
    counts = Counter(inventory.cgroup2_mount for inventory in inventories if inventory.cgroup2_mount)
    if not counts:
        return cgroupmap.node_mount() or cgroups.NFT_CGROUP_BASE, []
    ranked = sorted(counts, key=lambda mount: (-counts[mount], mount))
    if len(ranked) == 1:
        return ranked[0], []
    others = sorted(i.host for i in inventories if i.cgroup2_mount and i.cgroup2_mount != ranked[0])
    shown = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
    return ranked[0], [
        f"nodes mount cgroup v2 in {len(ranked)} places; this ruleset is for {ranked[0]}: write one with "
        f"--cgroup-mount for {shown}"
    ]


def _job_cgroups(
    args: argparse.Namespace, found: closing.Closing, mount: str
) -> tuple[list[cgroups.JobCgroup], list[str]]:
    notes: list[str] = []
    if args.no_cgroup:
        return [], notes
    paths = list(args.cgroup) or list(cgroups.infer(opening.cgroup for opening in found.openings))
    if not paths and os.path.isdir(mount + cgroups.SLURM_SCOPE):
        paths = [cgroups.SLURM_SCOPE]
    chosen = []
    for path in paths:
        made = cgroups.job_cgroup(path, mount)
        if isinstance(made, str):
            if args.cgroup:
                raise InputError(f"--cgroup: {made}")
            notes.append(made)
        else:
            chosen.append(made)
    return chosen, notes


def run(args: argparse.Namespace, config: Config, env: Environment) -> ExitStatus:
    found, inventories, report_subnets = _load(args, config, env)
    texts = args.intended_subnet or list(config.intended_subnets) or list(report_subnets)
    if not texts:
        raise InputError(
            "--intended-subnet: needed (the networks allowed to connect); none in the config or the report"
        )
    allowed = options.intended_subnets(texts, Config())
    mount, mount_note = _mount(args, inventories)
    job_cgroups, notes = _job_cgroups(args, found, mount)
    ephemeral = sorted({o.port for o in found.openings if not o.is_fixed_port})
    warnings = list(found.notes) + notes + mount_note
    if ephemeral and not job_cgroups:
        warnings.append(
            f"no job cgroup to match, so the {len(ephemeral)} ephemeral port(s) seen are listed: they "
            "change every job; name the jobs' cgroup with --cgroup (Slurm: /system.slice/slurmstepd.scope)"
        )
    iface = _interface(inventories, allowed)
    closes = [f"  {o.rule_id} {o.service} {o.host} port {o.port}" for o in found.openings]
    comments = [
        f"netaudit fix, {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}: closes {len(found.openings)} listener(s)",
        *closes[:50],
        *([f"  ... and {len(closes) - 50} more"] if len(closes) > 50 else []),
        "Load on every node: nft -f FILE (one transaction; replaces only table inet netaudit).",
        f"cgroup paths assume cgroup v2 mounted at {mount} on the nodes (--cgroup-mount).",
        *(f"warning: {w}" for w in warnings),
        "",
        "Close them at the source too:",
        *(
            f"  {_AT_THE_SOURCE[s].format(iface=iface)}"
            for s in sorted(found.services)
            if s in _AT_THE_SOURCE
        ),
    ]
    ruleset = nftables.Ruleset(
        allowed=allowed,
        fixed_ports=tuple(sorted({o.port for o in found.openings if o.is_fixed_port})),
        cgroups=tuple(job_cgroups),
        job_ports=tuple(ephemeral) if not job_cgroups else (),
        comments=tuple(comments),
    )
    text = nftables.render(ruleset)
    for warning in warnings:
        env.warn(warning)
    status = ExitStatus.OK
    checked = False
    if args.no_check:
        status = ExitStatus.INCOMPLETE
    elif not nftables.nft_available():
        env.warn("not checked: nft is not installed here")
        status = ExitStatus.INCOMPLETE
    elif os.geteuid() != 0:
        env.warn("not checked: nft -c needs root")
        status = ExitStatus.INCOMPLETE
    else:
        problem = nftables.check(_checkable(text, job_cgroups, mount))
        if problem:
            raise InputError(f"nft -c rejected the ruleset: {problem}")
        checked = True
        missing = [c.path for c in job_cgroups if not os.path.isdir(mount + c.path)]
        if missing:
            env.warn(
                f"checked with nft -c; cgroup {', '.join(missing)} does not exist here: nft resolves it "
                "when a node loads the ruleset"
            )
    if args.output:
        atomic.write(args.output, text)
    elif args.format == "json":
        document = {
            "kind": "netaudit.fix",
            "closes": [
                {"host": o.host, "service": o.service, "port": o.port, "rule_id": o.rule_id,
                 "is_fixed_port": o.is_fixed_port}
                for o in found.openings
            ],
            "cgroups": [c.path for c in job_cgroups],
            "warnings": warnings,
            "is_checked": checked,
            "ruleset": text,
        }  # fmt: skip
        env.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        env.stdout.write(text)
    if args.apply:
        problem = nftables.apply(text)
        if problem:
            raise InputError(f"nft -f failed: {problem}")
        env.warn(f"applied: table inet {nftables.TABLE}")
    return status


def _checkable(text: str, job_cgroups: list[cgroups.JobCgroup], mount: str) -> str:
    """nft -c resolves every cgroup path on this host: one that exists only on the nodes is
    checked as the cgroup v2 root's path instead, which proves the rest of the rule."""
    for cgroup in job_cgroups:
        if not os.path.isdir(mount + cgroup.path):
            stand_in = os.path.relpath(mount, cgroups.NFT_CGROUP_BASE)
            text = text.replace(f'"{cgroup.nft_path}"', f'"{stand_in}"')
    return text
