"""Hostlist expressions (``node[001-128]``, ``gpu[1-4]-ib``), as Slurm and ClusterShell write
them, expanded by ClusterShell's NodeSet: the parser HPC sites already trust, rather than one
of ours that would disagree with theirs on an edge case. Expansion is bounded: a typo such as
``node[1-10000000]`` is refused, not allocated."""

from __future__ import annotations

from netaudit.typedread import InputError


class HostlistError(InputError):
    pass


def expand(expression: str, limit: int) -> list[str]:
    """The names of ``expression`` in ClusterShell's order; at most ``limit`` of them."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        nodes = NodeSet(expression)
    except (NodeSetException, ValueError) as error:
        raise HostlistError(f"{expression!r} is not a hostlist expression: {error}") from None
    count = len(nodes)
    if count > limit:
        raise HostlistError(f"{expression!r} names {count} hosts, more than the limit of {limit}")
    return list(nodes)


def fold(names: list[str]) -> str:
    """The compact expression for ``names`` (node[001-004]), for messages and reports."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(names)) if names else ""


def contains(expression: str, name: str) -> bool:
    """Whether ``name`` is in ``expression`` (a hostlist, or a plain name)."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        return name in NodeSet(expression)
    except (NodeSetException, ValueError):
        return False
