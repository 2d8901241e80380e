"""Host names from documents other nodes wrote: a name is not a file name, a log line or a
baseline key until it is validated here.

A valid host is an RFC 1123 name (letters, digits, ``-``; ``_`` too, as sites use it),
dot-separated, at most 253 characters, or an IP address literal. No ``/``, no ``..``, no
control characters, no ``|`` (the baseline key's separator), no spaces.
"""

from __future__ import annotations

import ipaddress
import re

from netaudit.typedread import InputError

_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_NAME = re.compile(rf"^(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?\Z")


def is_valid_host(text: str) -> bool:
    if not isinstance(text, str) or not text or len(text) > 253:
        return False
    if _NAME.match(text):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_host(text: str, where: str) -> str:
    """``text`` if it is a valid host, else InputError naming ``where``."""
    if not is_valid_host(text):
        shown = text if len(text) <= 64 else text[:61] + "..."
        raise InputError(f"{where}: {shown!r} is not a host name (letters, digits, '-', '_' and '.')")
    return text
