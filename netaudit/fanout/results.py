"""What a fan-out brings back, and turning it into inventories and named failures."""

from __future__ import annotations

from dataclasses import dataclass, replace

from netaudit import docparse, inventory_json
from netaudit.models import Inventory
from netaudit.status import ExitStatus
from netaudit.typedread import InputError

OUTPUT_LIMIT = 256 << 20  # an inventory of 200k listeners is ~100 MB of JSON; more is not ours


@dataclass(frozen=True, slots=True)
class NodeOutput:
    """Attributes:
    returncode: None when the node timed out or never ran the command.
    error: the transport's complaint (timeout, connection refused), or None.
    """

    node: str
    returncode: int | None
    stdout: bytes
    stderr: bytes
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NodeFailure:
    """Attributes:
    is_internal_error: the node's netaudit crashed (exit 4): a bug, not a node that is down.
    """

    node: str
    reason: str
    is_internal_error: bool = False

    @property
    def text(self) -> str:
        return f"{self.node}: {self.reason}"


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text[-200:] if text else ""


def to_inventory(output: NodeOutput) -> Inventory | NodeFailure:
    """The node's inventory, or why there is none. Exit 3 (incomplete) with JSON is fine:
    the inventory names its own gaps."""
    if output.error is not None:
        return NodeFailure(output.node, output.error)
    if not output.stdout.strip():
        stderr = _tail(output.stderr)
        return NodeFailure(
            output.node,
            f"exit {output.returncode} and no output" + (f": {stderr}" if stderr else ""),
            is_internal_error=output.returncode == ExitStatus.INTERNAL,
        )
    if len(output.stdout) > OUTPUT_LIMIT:
        return NodeFailure(output.node, f"output larger than {OUTPUT_LIMIT} bytes")
    from netaudit import inventory_fast  # msgspec: only where inventories are read

    fast = inventory_fast.decode(output.stdout)
    if fast is not None:  # what it declines, the readers below judge and name
        return fast if fast.host == output.node else replace(fast, host=output.node)
    try:
        data = docparse.parse_json(output.stdout, output.node, InputError)
    except InputError as error:
        why = str(error).removeprefix(f"{output.node}: not JSON: ")
        return NodeFailure(output.node, f"bad JSON ({why[:80]})")
    try:
        found = inventory_json.from_json(data, output.node)
    except InputError as error:
        return NodeFailure(output.node, f"foreign JSON: {str(error).removeprefix(output.node + ': ')}")
    if found.host != output.node:
        # The fan-out's name is the one admins use in hostlists, exceptions and baselines.
        found = replace(found, host=output.node)
    return found
