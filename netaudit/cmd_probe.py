"""`netaudit probe`: this node's inventory, as a table or as the JSON contract."""

from __future__ import annotations

import argparse

from netaudit import inventory, inventory_json, jsonout
from netaudit.config import Config
from netaudit.environment import Environment
from netaudit.options import intended_subnets, load_signatures
from netaudit.status import ExitStatus


def run(args: argparse.Namespace, config: Config, fmt: str, env: Environment) -> ExitStatus:
    subnets = intended_subnets(args.intended_subnet, config)
    found = inventory.collect(
        load_signatures(args, config), subnets, is_own_namespace_only=args.namespaces == "own"
    )
    if fmt == "json":
        jsonout.write(inventory_json.to_json(found), len(found.listeners), env.stdout)
    else:
        from netaudit.report import inventory_table

        env.stdout.write(inventory_table.render(found))
    env.stdout.flush()
    if fmt != "table":  # the table lists them itself
        for gap in found.gaps:
            env.warn(f"incomplete: {gap}")
    return ExitStatus.OK if found.is_complete else ExitStatus.INCOMPLETE
