"""What a declared exchange may ever send, per service: the allow-list in code, and the
exchanges the loaded signatures declared (the engine's two locks, kept here so that loading
signatures, as the prolog gate does, never imports the engine).

A signature file declares its exchange as data (netaudit.signatures.Exchange). Declaring is
not enough: loading refuses a declaration this table does not permit, and the engine
(netaudit.scan.exchange) checks again before it connects. A service that is not here may
declare no exchange at all, so an admin's --probes-dir can add recognition rules but never
new bytes on the wire.

HTTP exchanges are one GET of one path; the engine writes the request itself. ZMTP, HTTP/2
and byte exchanges are exact byte strings. Every constant names the upstream file it was read in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netaudit.signatures import Exchange, Signature

HTTP = "http"
ZMTP = "zmtp"
BYTES = "bytes"
HTTP2 = "http2"
PROTOCOLS = frozenset({HTTP, ZMTP, BYTES, HTTP2})
HTTP_METHODS = frozenset({"GET"})
MAX_READ_CAP_BYTES = 65536
MAX_PAYLOAD_BYTES = 256

# ZMTP 3.x greeting, first 11 octets (rfc.zeromq.org/spec/23 "Greeting"; libzmq
# src/zmtp_engine.cpp receive_greeting/receive_greeting_versioned): signature = %xFF, 8 octets
# of padding, %x7F, then the major version 3. A libzmq peer answers with its own 64-octet
# greeting (minor version, mechanism, as-server) as soon as it has read these 11 octets; we
# close before sending the rest of ours, so no mechanism handshake, READY, SUBSCRIBE or
# message ever starts.
ZMTP_GREETING_PREFIX = bytes.fromhex("ff00000000000000007f03")
# NCCL >= 2.24.3 RAS client hello (src/ras/client.cc; src/ras/client_support.cc answers
# "SERVER PROTOCOL 2\n" and nothing else; NCCL_RAS_CLIENT_PROTOCOL in src/ras/ras_internal.h).
NCCL_RAS_HELLO = b"CLIENT PROTOCOL 2\n"
# Horovod's rendezvous server (horovod/runner/http/http_server.py, KVStoreHandler.do_GET)
# answers a path of fewer than three segments with 400 and reads no key. The request is
# 18 bytes on purpose: the driver's BasicService (horovod/runner/common/util/network.py
# Wire.read) binds the same way and reads a 4-byte length from bytes 32-35 of whatever it
# receives; a request that ends before byte 32 can never make it allocate.
HOROVOD_BARE_GET = b"GET / HTTP/1.0\r\n\r\n"
# HTTP/2 (gRPC) without a call: the client connection preface, the 24 octets of RFC 9113 §3.4,
# then the SETTINGS frame that must follow it, empty (§6.5: length 0, type 0x4, no flags,
# stream 0). A stream, and with it an RPC, only starts with a HEADERS frame (§5.1), which is
# never sent. grpc-core checks these 24 octets (chttp2 internal.h GRPC_CHTTP2_CLIENT_CONNECT_STRING,
# parsing.cc) and sends its own SETTINGS, the server connection preface; we close before
# acknowledging it.
H2_PREFACE_EMPTY_SETTINGS = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


@dataclass(frozen=True, slots=True)
class Allowance:
    """What one service may receive. ``paths``: the HTTP GET paths; ``payloads``: the exact
    byte strings (ZMTP, bytes); ``never``: what it must never receive and why, quoted in
    every refusal."""

    protocol: str
    paths: frozenset[str] = frozenset()
    payloads: frozenset[bytes] = frozenset()
    never: str = ""


ALLOWED: dict[str, Allowance] = {
    # torch/distributed/debug/_debug_handlers.py (2.13): "/" renders a static index; every other
    # route fetches from all ranks, and /tcpstore dumps every key of the job's store.
    "c10d-workerserver": Allowance(
        HTTP, paths=frozenset({"/"}),
        never="/tcpstore dumps every key, the other routes collect from every rank, and no POST",
    ),
    "zeromq": Allowance(
        ZMTP, payloads=frozenset({ZMTP_GREETING_PREFIX}),
        never="nothing past the greeting: no READY, no SUBSCRIBE, no message (vLLM, SGLang "
        "and TensorRT-LLM unpickle what they receive)",
    ),
    # jupyter_server/services/api/handlers.py APIStatusHandler: @web.authenticated, so 403
    # when a token or password is required; _track_activity = False, so no activity either way
    "jupyter-server": Allowance(
        HTTP, paths=frozenset({"/api/status"}), never="kernels, contents and terminals run code or read files"
    ),
    # tensorboard/plugins/core/core_plugin.py _serve_environment
    "tensorboard": Allowance(HTTP, paths=frozenset({"/data/environment"}), never="no plugin data"),
    # mlflow/server/__init__.py version(): the version string, nothing else
    "mlflow": Allowance(HTTP, paths=frozenset({"/version"}), never="no experiment, run or artifact"),
    # python/ray/dashboard/modules/job/job_head.py get_version
    "ray-dashboard": Allowance(
        HTTP, paths=frozenset({"/api/version"}),
        never="/api/jobs/ submits code (CVE-2023-48022); nothing but the version",
    ),
    # frontend/server/.../InferenceRequestHandler.java "ping"
    "torchserve-inference": Allowance(HTTP, paths=frozenset({"/ping"}), never="no prediction"),
    # frontend/server/.../ApiDescriptionRequestHandler.java: answered before token authorization
    "torchserve-management": Allowance(
        HTTP, paths=frozenset({"/api-description"}),
        never="/models registers models from URLs (CVE-2023-43654); only the API description",
    ),
    "horovod-rendezvous": Allowance(
        BYTES, payloads=frozenset({HOROVOD_BARE_GET}),
        never="PUT stores a value every worker unpickles (CVE-2024-10190), and no key is read",
    ),
    "nccl-ras": Allowance(
        BYTES, payloads=frozenset({NCCL_RAS_HELLO}),
        never="STATUS starts a job-wide collection; only the client protocol hello",
    ),
    # ray src/ray/gcs/gcs_server (grpc-core): every GCS call is behind a HEADERS frame
    "ray-gcs": Allowance(
        HTTP2, payloads=frozenset({H2_PREFACE_EMPTY_SETTINGS}),
        never="no HEADERS frame, so no stream and no call: GCS calls register jobs, actors "
        "and nodes; only the connection preface",
    ),
    # ray python/ray/util/client/server (grpcio): the same preface, no call
    "ray-client": Allowance(
        HTTP2, payloads=frozenset({H2_PREFACE_EMPTY_SETTINGS}),
        never="no HEADERS frame, so no stream and no call: a Ray Client session runs code on "
        "the cluster; only the connection preface",
    ),
}  # fmt: skip


def refusal(
    service: str,
    protocol: str,
    method: str | None,
    path: str | None,
    payload: bytes,
    read_cap_bytes: int,
) -> tuple[str, str] | None:
    """None when ``service`` may receive this exchange, else (field, why) in one line."""
    allowance = ALLOWED.get(service)
    if allowance is None:
        return "exchange", (
            f"no exchange is allowed for service {service!r}; netaudit sends bytes only to "
            f"services it knows ({', '.join(sorted(ALLOWED))})"
        )
    if protocol != allowance.protocol:
        return "protocol", f"{protocol!r} is not allowed for {service}: only {allowance.protocol!r}"
    if not 1 <= read_cap_bytes <= MAX_READ_CAP_BYTES:
        return "read_cap_bytes", f"expected 1..{MAX_READ_CAP_BYTES}, got {read_cap_bytes}"
    if protocol == HTTP:
        if method not in HTTP_METHODS:
            return "method", f"{method!r} is not allowed: only GET is ever sent"
        if path not in allowance.paths:
            allowed = ", ".join(repr(item) for item in sorted(allowance.paths))
            return "path", f"{path!r} is not allowed for {service} (only {allowed}): {allowance.never}"
        return None
    if payload not in allowance.payloads:
        return "send_hex", f"these bytes are not allowed for {service}: {allowance.never}"
    return None


class ExchangeRefused(ValueError):
    """An exchange no loaded signature declared, or that the allow-list does not permit."""


_declared: dict[str, Exchange] = {}


def refusal_of(exchange: Exchange) -> str | None:
    """``refusal`` for a whole exchange, as "field: why", or None."""
    refused = refusal(
        exchange.service,
        exchange.protocol,
        exchange.method,
        exchange.path,
        exchange.payload,
        exchange.read_cap_bytes,
    )
    return None if refused is None else f"{refused[0]}: {refused[1]}"


def declare(signatures: Iterable[Signature]) -> None:
    """Record the exchanges of loaded signatures; a later load of the same signature id
    replaces the earlier one (an admin's override). Raises ExchangeRefused for one the
    allow-list does not permit (the parser refused it already: this is the second lock), and
    then declares none of the set."""
    checked: dict[str, Exchange] = {}
    for signature in signatures:
        exchange = signature.exchange
        if exchange is None:
            continue
        why = refusal_of(exchange)
        if why is not None:
            raise ExchangeRefused(f"{signature.path}: exchange: {why}")
        checked[exchange.name] = exchange
    _declared.update(checked)


def declared(name: str) -> Exchange | None:
    """The exchange a loaded signature declared under ``name``, or None."""
    return _declared.get(name)
