"""Options that several commands resolve the same way: the intended subnets (flags override
the config) and the signature directories."""

from __future__ import annotations

import argparse

from netaudit import exposure, signatures
from netaudit.config import Config
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
