"""What a command may touch of the outside world: its streams and environment variables.

Injected into ``cli.main`` so tests capture stdout and stderr and set variables without
touching the process's own (httpie's Environment, tests/utils MockEnvironment).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(slots=True)
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def is_stdout_tty(self) -> bool:
        try:
            return self.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    def warn(self, message: str) -> None:
        """One diagnostic line on stderr, never on stdout (stdout carries the report)."""
        self.stderr.write(f"netaudit: {message}\n")
        self.stderr.flush()
