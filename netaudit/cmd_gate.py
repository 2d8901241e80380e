"""`netaudit gate`: the Slurm prolog check under a hard deadline.

The work runs in a forked child; the parent only waits on a pipe with select(). When the
deadline passes, the parent kills the child and decides by --on-error, so a read blocked in
the kernel (an NFS hang, a FIFO where a verdict file should be) cannot hold a job's start.
Quiet on a pass; a failure prints one line starting "netaudit:" that fits a drain reason.
Everything is also logged to syslog, loudly when the gate fails or errs.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import time
from typing import Any

from netaudit.config import Config
from netaudit.environment import Environment
from netaudit.status import ExitStatus

_RESULT_LIMIT = 1 << 20
# logging's levels, without importing logging on a passing run
_WARNING, _ERROR, _CRITICAL = 30, 40, 50


def _child(args: argparse.Namespace, config: Config, env: Environment, write_fd: int) -> None:
    """Runs in the forked worker: never returns."""
    try:
        from netaudit import gate, options

        result = gate.evaluate(
            options.load_signatures(args, config),
            config.gate,
            dict(env.environ),
            args.verdict or config.gate.verdict_path,
        )
        payload = {"status": "pass" if result.is_pass else "fail", "line": result.line,
                   "details": list(result.details), "warnings": list(result.warnings)}  # fmt: skip
    except BaseException as error:  # everything becomes the parent's decision
        payload = {
            "status": "error",
            "line": f"{type(error).__name__}: {error}",
            "details": [],
            "warnings": [],
        }
    data = json.dumps(payload).encode()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(0)


def _wait(read_fd: int, pid: int, deadline_s: float) -> dict[str, Any] | None:
    """The child's result, or None when the deadline passed first (the child is killed)."""
    end = time.monotonic() + deadline_s
    chunks: list[bytes] = []
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(len(c) for c in chunks) > _RESULT_LIMIT:
                return None
        data = json.loads(b"".join(chunks))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
    finally:
        try:
            finished, _status = os.waitpid(pid, os.WNOHANG)
            if finished == 0:
                os.kill(pid, signal.SIGKILL)
                # A child stuck in an uninterruptible read may not die at once; we do not wait
                # for it: the deadline is ours to keep, not the child's.
        except (ChildProcessError, ProcessLookupError):
            pass


def _log(level: int, message: str, socket_path: str) -> None:
    if not os.path.exists(socket_path):
        return
    import logging.handlers  # only when there is something to log: a pass imports nothing

    try:
        handler = logging.handlers.SysLogHandler(
            address=socket_path, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
    except OSError:
        return
    handler.setFormatter(logging.Formatter("netaudit-gate: %(message)s"))
    logger = logging.getLogger("netaudit.gate")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.log(level, message)
    finally:
        logger.removeHandler(handler)
        handler.close()


def run(args: argparse.Namespace, config: Config, env: Environment) -> ExitStatus:
    deadline_s = args.deadline_s if args.deadline_s is not None else config.gate.deadline_s
    on_error = args.on_error or config.gate.on_error
    as_json = args.format == "json"
    syslog = config.output.syslog_socket
    read_fd, write_fd = os.pipe()
    env.stdout.flush()
    env.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(args, config, env, write_fd)
    os.close(write_fd)
    try:
        result = _wait(read_fd, pid, deadline_s)
    finally:
        os.close(read_fd)
    if result is None:
        result = {
            "status": "error",
            "line": f"deadline of {deadline_s:g} s exceeded",
            "details": [],
            "warnings": [],
        }
    for warning in result.get("warnings") or []:
        env.warn(f"gate warning: {warning}")
        _log(_WARNING, str(warning), syslog)
    status = result.get("status")
    if as_json:
        env.stdout.write(json.dumps({**result, "on_error": on_error}, sort_keys=True) + "\n")
    if status == "pass":
        return ExitStatus.OK
    if status == "fail":
        line = str(result.get("line"))
        if not as_json:
            env.stdout.write(line + "\n")
        for detail in result.get("details") or []:
            _log(_ERROR, str(detail), syslog)
        return ExitStatus.FINDINGS
    message = f"gate error ({on_error}): {result.get('line')}"
    _log(_CRITICAL, message, syslog)
    if on_error == "closed":
        if not as_json:
            env.stdout.write(f"netaudit: {message}\n")
        return ExitStatus.FINDINGS
    env.warn(f"{message}; passing the node because --on-error=open")
    return ExitStatus.OK
