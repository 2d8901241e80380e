"""The declared-exchange engine: the read-only confirmation a signature file declares as data
([exchange], docs/signatures.md), run under two locks.

1. Declared: the engine sends only an exchange a loaded signature declared. Loading
   (netaudit.signatures.build, netaudit.sigcache) hands the exchanges over with ``declare``;
   scan plans name them ``exchange:<signature id>``. An exchange built by hand, or changed
   after loading, is refused before any connection (``ExchangeRefused``).
2. Allowed: each declaration is checked against the per-service allow-list in code
   (netaudit.scan.allowlist) when it is loaded, and again before every connection.

What goes on the wire is one write: an HTTP GET written here from the declared path, or the
declared bytes exactly (ZMTP greeting prefix, a binary hello, the HTTP/2 connection preface).
Then one bounded read (the declared cap, one deadline over connect, send and read) that stops
as soon as the answer is settled, and close. Answers are judged by ``judge``, a pure function
of the bytes, so unit tests run it on recorded answers. Like netaudit.scan.handshake, network
failures are results, never exceptions.
"""

from __future__ import annotations

import re

from netaudit import __version__
from netaudit.advisories import VERSION_TEXT
from netaudit.scan import allowlist
from netaudit.scan.allowlist import ExchangeRefused, declare, declared, refusal_of
from netaudit.scan.handshake import DEFAULT_TIMEOUT_S, HandshakeResult, _exchange, _host_header
from netaudit.signatures import EXCHANGE_PREFIX, Exchange

__all__ = ["ExchangeRefused", "confirm", "declare", "declared", "is_exchange_name", "judge", "request", "run"]

# rfc.zeromq.org/spec/23: a full ZMTP 3.x greeting is 64 octets; the mechanism is octets 12-31.
ZMTP_GREETING_BYTES = 64
_ZMTP_MECHANISM = slice(12, 32)
_ZMTP_SECURED = frozenset({"CURVE", "PLAIN", "GSSAPI"})
_STATUS_LINE = re.compile(r"HTTP/1\.[01] ([1-5][0-9]{2})[^\r\n]{0,120}")
_CONTENT_LENGTH = re.compile(r"\r\ncontent-length:[ \t]{0,8}([0-9]{1,9})\r\n", re.IGNORECASE)
_CHUNKED = re.compile(r"\r\ntransfer-encoding:[ \t]{0,8}chunked\r\n", re.IGNORECASE)
_QUOTED_BYTES = 24
# RFC 9113 §4.1: a frame starts with a 9-octet header (length 24 bits, type, flags, stream 31
# bits); §6.5: SETTINGS is type 0x4, ACK is flag 0x1, each setting 6 octets, always stream 0.
_H2_HEADER_BYTES = 9
_H2_SETTINGS = 0x4
_H2_ACK = 0x1
_H2_SETTING_BYTES = 6
# §4.2: no frame may exceed the peer's SETTINGS_MAX_FRAME_SIZE, 2^14 until it says otherwise
# (our SETTINGS is empty)
_H2_MAX_FRAME_BYTES = 16384
# grpc-core's own settings (src/core/ext/transport/chttp2/transport/http2_settings.h:
# kGrpcAllowTrueBinaryMetadataWireId 65027 .. kGrpcAllowSecurityFrameWireId 65029): a server
# that sends one is gRPC's C core (C++ servers such as Ray's GCS, and grpcio).
_GRPC_SETTING_IDS = range(0xFE03, 0xFE06)


def is_exchange_name(name: str) -> bool:
    return name.startswith(EXCHANGE_PREFIX)


def request(exchange: Exchange, address: str, port: int) -> bytes:
    """The one write the exchange makes to ``address``:``port``."""
    if exchange.protocol != allowlist.HTTP:
        return exchange.payload
    return (
        f"{exchange.method} {exchange.path} HTTP/1.1\r\n"
        f"Host: {_host_header(address, port)}\r\n"
        f"User-Agent: netaudit/{__version__} (read-only check)\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")


def _check(exchange: Exchange) -> None:
    if declared(exchange.name) != exchange:
        raise ExchangeRefused(f"{exchange.name}: not declared by a loaded signature; nothing sent")
    why = refusal_of(exchange)
    if why is not None:
        raise ExchangeRefused(f"{exchange.name}: {why}; nothing sent")


def confirm(
    name: str, address: str, port: int, source: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> HandshakeResult:
    """Run the exchange a loaded signature declared under ``name``."""
    exchange = declared(name)
    if exchange is None:
        return HandshakeResult(False, f"no loaded signature declares {name}: nothing sent")
    return run(exchange, address, port, source=source, timeout_s=timeout_s)


def run(
    exchange: Exchange,
    address: str,
    port: int,
    source: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> HandshakeResult:
    """Connect, write ``request``, read until the answer is settled or the cap, the end or
    the deadline comes, close, and judge. Raises ExchangeRefused, before connecting, for an
    exchange that is not declared or not allowed."""
    _check(exchange)
    reply = _exchange(
        address, port, source, request(exchange, address, port), exchange.read_cap_bytes, timeout_s,
        is_settled=lambda so_far: _is_settled(exchange, so_far),
    )  # fmt: skip
    if isinstance(reply, HandshakeResult):
        return reply
    return judge(exchange, reply)


def _is_settled(exchange: Exchange, reply: bytes) -> bool:
    """Whether more bytes could change the verdict (a peer that keeps the connection open,
    as NCCL's RAS server does, must not cost the whole deadline)."""
    if exchange.protocol == allowlist.ZMTP:
        return len(reply) >= ZMTP_GREETING_BYTES or reply[:1] != b"\xff"
    if exchange.protocol == allowlist.HTTP2:
        # the first frame is the verdict: a whole SETTINGS frame, or 9 octets that are not one
        if len(reply) < _H2_HEADER_BYTES:
            return False
        return reply[3] != _H2_SETTINGS or len(reply) >= _H2_HEADER_BYTES + int.from_bytes(reply[:3], "big")
    text = reply.decode("latin-1")
    if exchange.protocol == allowlist.HTTP:
        head, separator, body = text.partition("\r\n\r\n")
        if not separator:
            return False
        length = _CONTENT_LENGTH.search(head + "\r\n")
        if length is not None:
            return len(body) >= int(length.group(1))
        return bool(_CHUNKED.search(head + "\r\n")) and body.endswith("0\r\n\r\n")
    if exchange.version is not None and _version(exchange, text) is None:
        return False
    return _expected(exchange, reply, text)


def _expected(exchange: Exchange, reply: bytes, text: str) -> bool:
    if exchange.expect_prefix is not None and not reply.startswith(exchange.expect_prefix):
        return False
    return exchange.expect is None or exchange.expect.search(text) is not None


def _version(exchange: Exchange, text: str) -> str | None:
    if exchange.version is None:
        return None
    found = exchange.version.search(text)
    if found is None or not VERSION_TEXT.match(found.group(1)):
        return None
    return str(found.group(1))


def _quote(reply: bytes) -> str:
    return repr(reply[:_QUOTED_BYTES])


def _with_version(detail: str, version: str | None) -> str:
    return detail if version is None else f"{detail}; version {version}"


def judge(exchange: Exchange, reply: bytes) -> HandshakeResult:
    """The verdict on an answer, from its bytes alone."""
    if not reply:
        return HandshakeResult(False, "closed without an answer")
    reply = reply[: exchange.read_cap_bytes]
    text = reply.decode("latin-1")
    if exchange.protocol == allowlist.ZMTP:
        return _judge_zmtp(exchange, reply, text)
    if exchange.protocol == allowlist.HTTP:
        return _judge_http(exchange, reply, text)
    if exchange.protocol == allowlist.HTTP2:
        return _judge_http2(exchange, reply, text)
    version = _version(exchange, text)
    first_line = text.split("\n", 1)[0].rstrip("\r")[:80]
    printable = first_line.isprintable() and first_line.isascii()
    shown = repr(first_line) if printable else _quote(reply)
    if _expected(exchange, reply, text):
        detail = _with_version(f"{exchange.service} answered {shown}", version)
        return HandshakeResult(True, detail, version=version)
    return HandshakeResult(False, f"not the {exchange.service} answer: {shown}")


def _judge_http(exchange: Exchange, reply: bytes, text: str) -> HandshakeResult:
    status_line = _STATUS_LINE.match(text)
    if status_line is None:
        return HandshakeResult(False, f"not HTTP: {_quote(reply)}")
    status = int(status_line.group(1))
    shown = status_line.group(0).strip()
    if status in exchange.status and _expected(exchange, reply, text):
        version = _version(exchange, text)
        # Only a path the service guards when authentication is on (it declares what that
        # answer looks like) proves, by answering, that it is off.
        is_open = False if exchange.auth_status else None
        detail = f"{shown}: {exchange.service}" + (" without authentication" if is_open is False else "")
        return HandshakeResult(True, _with_version(detail, version), authentication=is_open, version=version)
    auth = exchange.auth_expect
    if status in exchange.auth_status and auth is not None and auth.search(text):
        detail = f"{shown}: {exchange.service} with authentication on"
        return HandshakeResult(True, detail, authentication=True)
    return HandshakeResult(False, f"{shown} (not the {exchange.service} answer)")


def _judge_zmtp(exchange: Exchange, reply: bytes, text: str) -> HandshakeResult:
    if not _expected(exchange, reply, text):
        return HandshakeResult(False, f"not a ZMTP greeting: {_quote(reply)}")
    if len(reply) < 12:
        return HandshakeResult(True, "ZMTP signature; no version followed (a ZMTP 1.0 or 2.0 peer?)")
    major, minor = reply[10], reply[11]
    if major < 3:
        return HandshakeResult(True, f"ZMTP revision {major} greeting: no security mechanism before ZMTP 3.0")
    if len(reply) < _ZMTP_MECHANISM.stop:
        return HandshakeResult(True, f"ZMTP {major}.{minor} greeting; the mechanism did not arrive")
    raw = reply[_ZMTP_MECHANISM].rstrip(b"\0")
    is_name = raw.replace(b"_", b"").isalnum() and raw.isascii()
    mechanism = raw.decode("ascii") if is_name else repr(raw)
    if mechanism == "NULL":
        meaning = "no authentication, anyone who connects may send"
    elif mechanism in _ZMTP_SECURED:
        # libzmq admits every CURVE key and PLAIN password unless the application runs a ZAP
        # handler, which the wire does not show: encrypted, perhaps not authenticated.
        meaning = (
            "the peer requires a security handshake; whether it checks who connects depends on a ZAP handler"
        )
    else:
        meaning = "not a mechanism ZMTP defines"
    detail = f"ZMTP {major}.{minor} greeting; mechanism {mechanism}: {meaning}"
    return HandshakeResult(True, detail, authentication=False if mechanism == "NULL" else None)


def _judge_http2(exchange: Exchange, reply: bytes, text: str) -> HandshakeResult:
    """The server connection preface (RFC 9113 §3.4) is a SETTINGS frame, not an ACK, on stream
    0: an HTTP/2 server. Its settings say whether it is grpc-core."""
    first_line = text.split("\n", 1)[0].rstrip("\r")[:80]
    is_text = bool(first_line) and first_line.isprintable() and first_line.isascii()
    shown = repr(first_line) if is_text else _quote(reply)
    if is_text and first_line.startswith("HTTP/"):
        return HandshakeResult(False, f"an HTTP/1 answer, not HTTP/2: {shown}")
    if len(reply) < _H2_HEADER_BYTES:
        return HandshakeResult(False, f"not an HTTP/2 frame: {shown}")
    length = int.from_bytes(reply[:3], "big")
    kind, flags = reply[3], reply[4]
    stream = int.from_bytes(reply[5:9], "big") & 0x7FFFFFFF
    is_settings = kind == _H2_SETTINGS and not flags & _H2_ACK and stream == 0
    is_settings = is_settings and length <= _H2_MAX_FRAME_BYTES and not length % _H2_SETTING_BYTES
    if not is_settings or not _expected(exchange, reply, text):
        return HandshakeResult(False, f"not an HTTP/2 server preface: {shown}")
    end = min(_H2_HEADER_BYTES + length, len(reply))
    ids = [
        int.from_bytes(reply[offset : offset + 2], "big")
        for offset in range(_H2_HEADER_BYTES, end - _H2_SETTING_BYTES + 1, _H2_SETTING_BYTES)
    ]
    if any(setting in _GRPC_SETTING_IDS for setting in ids):
        peer = "gRPC (grpc-core settings)"
    else:
        peer = "HTTP/2 without grpc-core's settings"
    detail = f"HTTP/2 SETTINGS ({length // _H2_SETTING_BYTES} settings): {peer}; {exchange.service}"
    return HandshakeResult(True, f"{detail}, no stream opened")
