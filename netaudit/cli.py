"""The command line: `netaudit probe|scan|gate`. The one funnel that turns results and
exceptions into output and an exit status; nothing below it prints or exits.

Imports stay light here (a Slurm prolog runs `netaudit gate`): each command's module, and
tabulate, are imported only when that command or format runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from netaudit import __version__
from netaudit.environment import Environment
from netaudit.status import ExitStatus
from netaudit.typedread import InputError

EXIT_STATUS_HELP = """\
exit status:
  0    clean
  1    findings at or above --fail-on (scan, default: high) or a failing gate
  2    usage or config error: bad flags, unreadable config or inventory; nothing was done
  3    incomplete: something could not be inspected (privilege, host down, port not tested)
  4    internal error (a netaudit bug; --debug shows the traceback)
  130  interrupted
Across hosts the worst wins: 4 > 1 > 3 > 0.
"""


class UsageError(Exception):
    """Bad command line: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse would print the whole usage and exit; we want one line and the funnel.
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_common(parser: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    parser.add_argument("--config", metavar="FILE", help="site configuration (TOML)")
    parser.add_argument(
        "--format",
        choices=formats,
        help="what goes to stdout (default: table on a terminal, else json)",
    )
    parser.add_argument(
        "--probes-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="extra signature directory (repeatable); its files override shipped ones by id",
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of internal errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="netaudit",
        description="Audit the network exposure of PyTorch distributed services "
        "(TCPStore, c10d Gloo/NCCL, RPC/TensorPipe).",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"netaudit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    probe = commands.add_parser(
        "probe",
        help="list this node's PyTorch distributed listeners, per process, with evidence",
        description="List every listening TCP socket of this node in every network namespace, "
        "recognise the PyTorch distributed ones, and say where they answer (static hints).",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(probe, ("table", "json"))
    probe.add_argument(
        "--intended-subnet",
        metavar="CIDR",
        action="append",
        default=[],
        help="a network where distributed ports may answer (repeatable)",
    )
    probe.add_argument(
        "--namespaces",
        choices=("all", "own"),
        default="all",
        help="all network namespaces of the node (default), or only the probe's own "
        "(run inside a container or pod to describe just that one)",
    )

    scan = commands.add_parser(
        "scan",
        help="prove from peers which ports are reachable from outside the intended subnets",
        description="Scan PyTorch distributed listeners from this host's source addresses with "
        "half-open SYN probes, confirm stores read-only, and report exposures.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(scan, ("table", "json", "sarif", "junit"))
    scan.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="restrict the scope: a CIDR filters the inventories' addresses; a host or address "
        "without an inventory is swept on the default ports (default: every inventory address; "
        "with no inventory either, this host over loopback)",
    )
    scan.add_argument(
        "--intended-subnet",
        metavar="CIDR",
        action="append",
        default=[],
        help="a network where distributed ports may answer (repeatable: once per subnet)",
    )
    scan.add_argument(
        "--inventory",
        metavar="FILE",
        action="append",
        default=[],
        help="inventory from `netaudit probe --format json` (repeatable, - for stdin)",
    )
    scan.add_argument(
        "--source",
        metavar="ADDR|IFACE",
        action="append",
        default=[],
        help="vantage source address or interface (repeatable; default: all of this host's)",
    )
    scan.add_argument(
        "--port",
        metavar="PORT[-PORT]",
        action="append",
        default=[],
        help="ports to try on hosts without an inventory (repeatable)",
    )
    scan.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    scan.add_argument(
        "--rate", type=float, metavar="PER_S", help="probes per second, all hosts (default 2000)"
    )
    scan.add_argument("--in-flight", type=int, metavar="N", help="probes in flight per host (default 64)")
    scan.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="probe timeout, shortened to the measured round trip (default 1)",
    )
    scan.add_argument("--retries", type=int, metavar="N", help="resends of an unanswered probe (default 1)")
    scan.add_argument(
        "--max-targets",
        type=int,
        metavar="N",
        help="most addresses swept without an inventory (default 65536)",
    )
    scan.add_argument(
        "--max-endpoints",
        type=int,
        metavar="N",
        help="most address x port pairs one run may plan (default 1048576)",
    )
    scan.add_argument(
        "--max-inventory-age",
        type=float,
        metavar="S",
        help="older inventories are not trusted for connect() or handshakes (default 60)",
    )
    scan.add_argument(
        "--allow-connect",
        action="store_true",
        help="without raw sockets, connect() also to listeners not known to be safe (never TensorPipe)",
    )
    scan.add_argument(
        "--fail-on",
        choices=("critical", "high", "medium", "low", "info"),
        help="lowest severity that makes the exit status 1 (default high)",
    )
    scan.add_argument(
        "--trust-scope",
        choices=("subnet", "job"),
        help="job: nodes of the subnet outside the job's allocation count as outsiders",
    )
    scan.add_argument(
        "--baseline",
        metavar="FILE",
        help="report only what changed since the last run, then update FILE",
    )
    scan.add_argument(
        "--textfile",
        metavar="DIR",
        help="write Prometheus node_exporter metrics to DIR/netaudit.prom",
    )
    scan.add_argument(
        "--syslog", action="store_true", help="also log a summary and each new finding to syslog"
    )

    gate = commands.add_parser(
        "gate",
        help="Slurm prolog check: fail this node for a stale exposed listener (local, fast, quiet)",
        description="Fail (exit 1, one `netaudit:` line) if a PyTorch distributed listener on a "
        "non-loopback address belongs to no active Slurm job on this node, or if the scheduled "
        "audit's verdict for this node holds an unresolved critical exposure.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(gate, ("table", "json"))
    gate.add_argument("--deadline-s", type=float, metavar="S", help="hard deadline (default 5)")
    gate.add_argument(
        "--on-error",
        choices=("open", "closed"),
        help="what an auditor fault or a blown deadline does: open passes (default), closed fails",
    )
    gate.add_argument(
        "--verdict",
        metavar="PATH",
        help="verdict file the scheduled audit leaves for this node (%%h = node name)",
    )
    _add_fix(commands)
    return parser


def _add_fix(commands: Any) -> None:
    parser = commands.add_parser(
        "fix",
        help="write the nftables ruleset that closes what a scan found (IPv4 and IPv6)",
        description="Write one `table inet netaudit` that drops new connections from outside the "
        "intended subnets to what a report (or inventories) found: the stores' fixed ports, and "
        "every listener of the job cgroups (socket cgroupv2) whatever its port. Checked with "
        "`nft -c`; applied only with --apply.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, ("nft", "json"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--report", metavar="FILE", help="a JSON report of `netaudit scan` ('-' for stdin)")
    source.add_argument(
        "--inventory",
        metavar="FILE",
        action="append",
        help="inventories of `netaudit probe --format json` (repeatable): close every "
        "listener that answers beyond loopback",
    )
    parser.add_argument(
        "--intended-subnet",
        metavar="CIDR",
        action="append",
        default=[],
        help="networks allowed to connect (repeatable; default: the config's, else the report's)",
    )
    parser.add_argument(
        "--cgroup",
        metavar="PATH",
        action="append",
        default=[],
        help="cgroup v2 path holding the jobs (repeatable; default: inferred from the "
        "inventories, else /system.slice/slurmstepd.scope when it exists here)",
    )
    parser.add_argument(
        "--no-cgroup",
        action="store_true",
        help="never match by cgroup: list the ephemeral ports seen instead",
    )
    parser.add_argument(
        "--cgroup-mount", metavar="DIR", help="where the nodes mount cgroup v2 (default: this host's mount)"
    )
    parser.add_argument("--output", metavar="FILE", help="write the ruleset here (0600, atomically)")
    parser.add_argument("--no-check", action="store_true", help="do not run `nft -c`")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="load it on this host with `nft -f` (replaces only table inet netaudit)",
    )


def _format(args: argparse.Namespace, configured: str | None, env: Environment) -> str:
    chosen: str | None = args.format or configured
    if chosen is not None:
        return chosen
    return "table" if env.is_stdout_tty else "json"


def _dispatch(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.command is None:
        raise UsageError("a command is required: probe, scan, gate or fix (see `netaudit --help`)")
    from netaudit import config as config_module

    config = config_module.load(args.config) if args.config else config_module.Config()
    if args.command == "probe":
        from netaudit import cmd_probe

        return cmd_probe.run(args, config, _format(args, None, env), env)
    if args.command == "scan":
        from netaudit import cmd_scan

        return cmd_scan.run(args, config, _format(args, config.output.format, env), env)
    if args.command == "gate":
        from netaudit import cmd_gate

        return cmd_gate.run(args, config, env)
    if args.command == "fix":
        from netaudit import cmd_fix

        return cmd_fix.run(args, config, env)
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    arguments = list(sys.argv[1:] if argv is None else argv)
    is_debug = "--debug" in arguments
    try:
        args = build_parser().parse_args(arguments)
        return int(_dispatch(args, env))
    except SystemExit as done:  # --help and --version
        return int(done.code or 0)
    except UsageError as error:
        env.warn(f"error: {error}")
        return int(ExitStatus.USAGE)
    except InputError as error:
        env.warn(f"error: {error}")
        return int(ExitStatus.USAGE)
    except KeyboardInterrupt:
        env.warn("interrupted")
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitStatus.OK)  # `netaudit probe | head`: the reader left, nothing is lost
    except Exception as error:
        env.warn(f"internal error: {type(error).__name__}: {error}")
        if is_debug:
            import traceback  # only here: a Slurm prolog's passing run never needs it

            env.stderr.write(traceback.format_exc())
        else:
            env.warn("this is a bug; rerun with --debug for the traceback")
        return int(ExitStatus.INTERNAL)


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
