"""Suite-wide markers: tests that need root, network namespaces or torch skip with a reason."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "requires root (network namespaces, raw sockets, other users' /proc)"
    if shutil.which("ip") is None:
        return "requires iproute2's `ip` for network namespaces"
    return None


def _torch_skip_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "requires the torch CPU wheel: pip install -e '.[test]'"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {"requires_root": _root_skip_reason(), "requires_torch": _torch_skip_reason()}
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_configure(config: pytest.Config) -> None:
    # The gate caches compiled signatures under $XDG_CACHE_HOME (else /var/cache/netaudit as
    # root): the suite's runs, and the processes they start, keep theirs in a directory of the
    # session's own instead of the machine's.
    if "XDG_CACHE_HOME" not in os.environ:
        import tempfile

        os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="netaudit-test-cache-")
