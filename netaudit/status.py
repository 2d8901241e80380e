"""Exit statuses, one enum for every command (DESIGN.md §4)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, unique


@unique
class ExitStatus(IntEnum):
    OK = 0
    FINDINGS = 1  # a finding at or above --fail-on
    USAGE = 2  # bad flags, unreadable config or inventory syntax; nothing was done
    INCOMPLETE = 3  # something could not be inspected (privilege, host down, port not tested)
    INTERNAL = 4  # a netaudit bug
    INTERRUPTED = 130  # 128 + SIGINT, as shells report it


# Across hosts the worst wins, and a known violation outranks missing data (DESIGN.md §4).
# USAGE is never combined: it stops a run before anything is inspected.
_RANK = {
    ExitStatus.OK: 0,
    ExitStatus.INCOMPLETE: 1,
    ExitStatus.FINDINGS: 2,
    ExitStatus.USAGE: 3,
    ExitStatus.INTERNAL: 4,
    ExitStatus.INTERRUPTED: 5,
}


def worst(statuses: Iterable[ExitStatus]) -> ExitStatus:
    """The combined status of several hosts or stages: 130 > 4 > 2 > 1 > 3 > 0."""
    result = ExitStatus.OK
    for status in statuses:
        if _RANK[status] > _RANK[result]:
            result = status
    return result
