"""Options that several commands resolve the same way: the intended subnets (flags override
the config) and the signature directories."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from netaudit import exposure
from netaudit.config import Config
from netaudit.typedread import InputError

if TYPE_CHECKING:
    from netaudit.signatures import Signature


def intended_subnets(flags: list[str], config: Config) -> tuple[exposure.Network, ...]:
    """Flags override the config; a bad CIDR is a usage error naming where it came from."""
    texts = flags or list(config.intended_subnets)
    try:
        return exposure.parse_subnets(texts)
    except ValueError as error:
        raise InputError(f"--intended-subnet: {error}") from None


def _signature_dirs(args: argparse.Namespace, config: Config) -> tuple[str, ...]:
    return tuple(config.probes_dirs) + tuple(args.probes_dir)


def load_signatures(args: argparse.Namespace, config: Config) -> tuple[Signature, ...]:
    from netaudit import signatures

    return signatures.load(_signature_dirs(args, config))


def load_signatures_cached(
    args: argparse.Namespace, config: Config, environ: Mapping[str, str]
) -> tuple[Signature, ...]:
    """``load_signatures`` through the compiled cache (netaudit.sigcache) of the user whose
    ``environ`` this is: the same signatures, and the same errors for a bad file."""
    from netaudit import sigcache

    return sigcache.load(_signature_dirs(args, config), sigcache.directory(environ))
