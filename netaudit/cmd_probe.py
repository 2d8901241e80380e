"""`netaudit probe`: this node's inventory, as a table or as the JSON contract."""

from __future__ import annotations

import argparse
import json

from netaudit import exposure, inventory, inventory_json, signatures
from netaudit.config import Config
from netaudit.environment import Environment
from netaudit.status import ExitStatus
from netaudit.typedread import InputError


def intended_subnets(flags: list[str], config: Config) -> tuple[exposure.Network, ...]:
    """Flags override the config; a bad CIDR is a usage error naming where it came from."""
    texts = flags or list(config.intended_subnets)
    try:
        return exposure.parse_subnets(texts)
    except ValueError as error:
        raise InputError(f"--intended-subnet: {error}") from None


def load_signatures(args: argparse.Namespace, config: Config) -> tuple[signatures.Signature, ...]:
    return signatures.load(tuple(config.probes_dirs) + tuple(args.probes_dir))


def run(args: argparse.Namespace, config: Config, fmt: str, env: Environment) -> ExitStatus:
    subnets = intended_subnets(args.intended_subnet, config)
    found = inventory.collect(
        load_signatures(args, config), subnets, is_own_namespace_only=args.namespaces == "own"
    )
    if fmt == "json":
        env.stdout.write(json.dumps(inventory_json.to_json(found), indent=2, sort_keys=True) + "\n")
    else:
        from netaudit.report import inventory_table

        env.stdout.write(inventory_table.render(found))
    env.stdout.flush()
    if fmt != "table":  # the table lists them itself
        for gap in found.gaps:
            env.warn(f"incomplete: {gap}")
    return ExitStatus.OK if found.is_complete else ExitStatus.INCOMPLETE
