"""Whether this process may send raw IP packets, asked of the kernel.

Its own module so that a dry run can plan the methods a real run would use without importing
the SYN engine (a sixth of a dry run's imports).
"""

from __future__ import annotations

import socket


def raw_available() -> bool:
    """True when this process may open raw IP sockets (CAP_NET_RAW in its namespace)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
    except OSError:
        return False
    return True
