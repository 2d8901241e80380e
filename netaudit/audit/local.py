"""The local audit: `netaudit scan` with no target, no inventory and no fan-out audits this
host without sending to any non-loopback address — its probe, the static exposure analysis,
and read-only confirmation over loopback — and says that proving reachability needs a peer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from netaudit import __version__, advisories, bindscope
from netaudit.audit import policy
from netaudit.audit.settings import ScanSettings
from netaudit.config import Config
from netaudit.models import (
    Attempt,
    BindScope,
    Confidence,
    Endpoint,
    Gap,
    GapKind,
    Method,
    PortState,
    Report,
)
from netaudit.scan import handshake
from netaudit.signatures import Signature

PEER_NOTE = (
    "this host was audited over loopback only: a bind address is a hint, and proving what is "
    "reachable needs a peer. Save `netaudit probe --format json` here and run `netaudit scan "
    "--inventory FILE` from a host outside the intended subnets."
)


def _loopback_for(scope: BindScope, address: str) -> str | None:
    if scope in (BindScope.DUAL_STACK, BindScope.WILDCARD_V4):
        return "127.0.0.1"
    if scope is BindScope.WILDCARD_V6:
        return "::1"
    if scope is BindScope.LOOPBACK:
        return address
    return None


def _attempt(endpoint: Endpoint, timeout_s: float) -> tuple[Attempt, ...]:
    listener = endpoint.listener
    found = endpoint.classification
    if listener is None or found is None:
        return ()
    scope = bindscope.scope_of(listener.family, listener.address, listener.v6only, False)
    loopback = _loopback_for(scope, listener.address)
    if (
        loopback is None
        or found.handshake is None
        or found.is_do_not_touch
        or found.confidence is not Confidence.HIGH
    ):
        return ()
    if found.handshake == "tcpstore-ping":
        result = handshake.tcpstore_ping(loopback, listener.port, timeout_s=timeout_s)
    elif found.handshake == "http-get-root":
        result = handshake.http_get_root(loopback, listener.port, timeout_s=timeout_s)
    else:
        from netaudit.scan import exchange  # a signature's declared exchange, by its name

        result = exchange.confirm(found.handshake, loopback, listener.port, timeout_s=timeout_s)
    state = PortState.CLOSED if result.detail.startswith("connect failed") else PortState.OPEN
    attempt = Attempt(
        loopback,
        state,
        Method.HANDSHAKE,
        "loopback handshake",
        None,
        True,
        True,
        result.confirmed,
        result.detail,
        authentication=result.authentication,
        version=result.version,
    )
    return (attempt,)


def audit(
    config: Config,
    scan: ScanSettings,
    intended: tuple[policy.Network, ...],
    signatures: Sequence[Signature],
    started: float,
    now: datetime,
) -> Report:
    from netaudit import inventory

    node = inventory.collect(signatures, intended)
    own = next((ns.inode for ns in node.namespaces if ns.is_probe_namespace), None)
    endpoints = []
    for listener in node.listeners:
        if listener.classification is None:
            continue
        endpoint = Endpoint(
            host=node.host,
            address=listener.address,
            family=listener.family,
            port=listener.port,
            listener=listener,
            inventory_age_s=0.0,
            is_outside_address=bool(listener.exposure and listener.exposure.outside_intended),
        )
        if listener.netns == own:
            endpoint = replace(endpoint, attempts=_attempt(endpoint, scan.timeout_s))
        endpoints.append(endpoint)
    rules = policy.Policy(scan.trust_scope, config.exceptions, now.date(), node.host, advisories.shipped())
    findings = policy.static_findings(endpoints, signatures, rules)
    return Report(
        generated_at=now,
        netaudit_version=__version__,
        vantage_host=node.host,
        mode="local",
        sources=(),
        intended_subnets=node.intended_subnets,
        trust_scope=scan.trust_scope,
        fail_on=scan.fail_on,
        findings=findings,
        endpoints=tuple(endpoints),
        gaps=tuple(Gap(node.host, GapKind.INVENTORY, gap) for gap in node.gaps),
        notes=(PEER_NOTE, *policy.expired_exceptions(rules)),
        duration_s=round(time.monotonic() - started, 3),
        probes_sent=0,
    )
