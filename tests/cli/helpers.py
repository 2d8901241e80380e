"""Run `netaudit` in-process with captured streams (httpie's MockEnvironment, in our terms)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from netaudit import cli
from netaudit.environment import Environment


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str, tty: bool = False, environ: dict[str, str] | None = None, stdin: str = "") -> Result:
    stdout = TtyStringIO() if tty else io.StringIO()
    stderr = io.StringIO()
    env = Environment(stdout=stdout, stderr=stderr, stdin=io.StringIO(stdin), environ=environ or {})
    status = cli.main(list(argv), env)
    return Result(status, stdout.getvalue(), stderr.getvalue())
