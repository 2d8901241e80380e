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
