"""One ``table inet netaudit`` that drops new connections from outside the intended subnets to
what the scan found, for IPv4 and IPv6 alike.

Why it is shaped this way:
- its own table, replaced atomically (``table`` + ``delete table`` + the new table in one
  ``nft -f`` transaction), so it never touches the site's own rules;
- "drop unless the source is allowed": in nftables an accept ends only its own chain, and every
  other table still sees the packet, so a drop here holds whatever accepts elsewhere say;
- only a connection's first packet (a SYN) is judged: replies to the jobs' own outbound
  connections (a dataset download) must keep flowing, and without a SYN nothing is opened;
- IPv4 and IPv6 in the same rules' sets: a rule written for IPv4 alone is the exposure the scan
  keeps finding over IPv6. An empty set for a family means no source of it is allowed.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from netaudit.exposure import Network
from netaudit.fix.cgroups import JobCgroup

TABLE = "netaudit"


@dataclass(frozen=True, slots=True)
class Ruleset:
    allowed: tuple[Network, ...]
    fixed_ports: tuple[int, ...]
    cgroups: tuple[JobCgroup, ...]
    job_ports: tuple[int, ...]  # ephemeral ports seen, only where no cgroup could be named
    comments: tuple[str, ...]


def _ranges(ports: Sequence[int]) -> list[str]:
    spans: list[list[int]] = []
    for port in sorted(set(ports)):
        if spans and port == spans[-1][1] + 1:
            spans[-1][1] = port
        else:
            spans.append([port, port])
    return [str(low) if low == high else f"{low}-{high}" for low, high in spans]


def _set(name: str, kind: str, elements: Sequence[str]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}", "\t\tflags interval"]
    if elements:
        lines.append("\t\telements = { " + ", ".join(elements) + " }")
    return [*lines, "\t}"]


def render(ruleset: Ruleset) -> str:
    v4 = [str(n) for n in ruleset.allowed if isinstance(n, ipaddress.IPv4Network)]
    v6 = [str(n) for n in ruleset.allowed if isinstance(n, ipaddress.IPv6Network)]
    lines = [f"# {line}" if line else "#" for line in ruleset.comments]
    lines += [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    lines += _set("allowed_v4", "ipv4_addr", v4)
    lines += _set("allowed_v6", "ipv6_addr", v6)
    matches: list[tuple[str, str]] = []
    if ruleset.fixed_ports:
        lines += _set("fixed_ports", "inet_service", _ranges(ruleset.fixed_ports))
        matches.append(("tcp dport @fixed_ports", "the stores' fixed ports, whoever runs them"))
    for cgroup in ruleset.cgroups:
        matches.append(
            (
                f'socket cgroupv2 level {cgroup.level} "{cgroup.nft_path}"',
                f"every listener of the jobs under {cgroup.path}, whatever its port",
            )
        )
    if ruleset.job_ports:
        lines += _set("job_ports", "inet_service", _ranges(ruleset.job_ports))
        matches.append(("tcp dport @job_ports", "ephemeral ports seen in this scan: they change every job"))
    lines += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 10; policy accept;",
        '\t\tiif "lo" accept',
        "\t\tmeta l4proto != tcp accept",
        "\t\ttcp flags & (fin | syn | rst | ack) != syn accept",
    ]
    for match, why in matches:
        lines.append(f"\t\t# {why}")
        lines.append(f"\t\t{match} meta nfproto ipv4 ip saddr != @allowed_v4 counter drop")
        lines.append(f"\t\t{match} meta nfproto ipv6 ip6 saddr != @allowed_v6 counter drop")
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def nft_available() -> bool:
    return shutil.which("nft") is not None


def _nft(args: list[str], text: str, prefix: Sequence[str] = ()) -> str | None:
    """nft's complaint as one line, or None when it accepted the ruleset."""
    try:
        argv = [*prefix, "nft", *args, "-f", "-"]
        done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot run nft: {error}"
    if done.returncode == 0:
        return None
    errors = [line.strip() for line in done.stderr.splitlines() if "Error" in line]
    return errors[0] if errors else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]


def check(text: str) -> str | None:
    """``nft -c``: parsed and validated against this kernel, nothing applied; in a network
    namespace of its own where unshare(1) is there, so not even a check touches the host's."""
    if shutil.which("unshare"):
        return _nft(["-c"], text, prefix=["unshare", "--net"])
    return _nft(["-c"], text)


def apply(text: str) -> str | None:
    return _nft([], text)
