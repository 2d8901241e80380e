"""Lines to the local syslog socket (and so journald), as the quiet tools need it.

logging.handlers.SysLogHandler prints a traceback to stderr when the socket is missing or is
not a socket, which breaks the gate's one-line contract in a Slurm prolog, and importing
logging costs the gate time on every pass. This sends RFC 3164-style datagrams itself: it
refuses what is not a socket, never raises, and says what went wrong so the caller can warn.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

# syslog(3) severities, by the name of the logging level a caller thinks in
CRITICAL, ERROR, WARNING, INFO = 2, 3, 4, 6
_DAEMON = 3 << 3
_LINE_BYTES = 2048  # what every syslog daemon takes without truncating


def clean(text: str) -> str:
    """One line whatever the text holds: a process name or an argument may carry a newline
    that would otherwise forge a second log line."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def send(lines: list[tuple[int, str]], path: str, tag: str) -> str | None:
    """Send (severity, text) lines; the problem as one line, or None when all were sent."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return f"syslog socket {path}: not a socket"
    except OSError as error:
        return f"syslog socket {path}: {error.strerror or error}"
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.settimeout(1.0)
                sock.connect(path)
                for severity, text in lines:
                    data = f"<{_DAEMON | severity}>{tag}: {clean(text)}".encode()[:_LINE_BYTES]
                    sock.sendall(data + b"\0" if kind == socket.SOCK_STREAM else data)
            return None
        except OSError as error:
            if error.errno == errno.EPROTOTYPE and kind == socket.SOCK_DGRAM:
                continue  # a stream-only daemon (rsyslog's imuxsock can be either)
            return f"syslog socket {path}: {error.strerror or error}"
    return None
