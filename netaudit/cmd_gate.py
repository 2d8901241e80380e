"""`netaudit gate`: the Slurm prolog check under a hard deadline.

The work runs in a forked child; the parent only waits on a pipe with select(). When the
deadline passes, the parent kills the child and decides by --on-error, so a read blocked in
the kernel (an NFS hang, a FIFO where a verdict file should be) cannot hold a job's start.
Quiet on a pass; a failure prints one line starting "netaudit:" that fits a drain reason.
Everything is also logged to syslog, loudly when the gate fails or errs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select

# Before the fork, so that it is imported once for both sides: the worker's netlink needs it,
# and so does the syslog line of a failing gate (about 3 ms each time on the 2-core VM).
import socket  # noqa: F401
import time
from typing import Any

from netaudit.config import Config
from netaudit.environment import Environment
from netaudit.status import ExitStatus

_RESULT_LIMIT = 1 << 20
# syslog(3) severities (netaudit.syslogwire), without importing it on a passing run
_CRITICAL, _ERROR, _WARNING = 2, 3, 4


def _child(args: argparse.Namespace, config: Config, env: Environment, write_fd: int) -> None:
    """Runs in the forked worker: never returns."""
    # The worker makes one answer and leaves by os._exit: the cyclic collector would only
    # walk, again and again, objects that all die with it (at 10,000 listeners, rows by
    # the ten thousand). Reference counting frees what the gate builds; the few cycles left
    # (a vanished process's exception) go with the process.
    gc.disable()
    try:
        from netaudit import gate, options

        result = gate.evaluate(
            options.load_signatures_cached(args, config, env.environ),
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
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        try:
            finished, _status = os.waitpid(pid, os.WNOHANG)
            if finished == 0:
                import signal  # only here: its import costs a passing gate 1.4 ms

                os.kill(pid, signal.SIGKILL)
                # A child stuck in an uninterruptible read may not die at once; we do not wait
                # for it: the deadline is ours to keep, not the child's.
        except (ChildProcessError, ProcessLookupError):
            pass


def _log(env: Environment, lines: list[tuple[int, str]], socket_path: str) -> None:
    if not lines:
        return  # a pass with nothing to say imports and sends nothing
    from netaudit import syslogwire

    problem = syslogwire.send(lines, socket_path, "netaudit-gate")
    if problem and os.path.exists(socket_path):  # no syslog daemon at all is not worth a word
        env.warn(f"gate warning: {problem}")


def run(args: argparse.Namespace, config: Config, env: Environment) -> ExitStatus:
    deadline_s = args.deadline_s if args.deadline_s is not None else config.gate.deadline_s
    on_error = args.on_error or config.gate.on_error
    as_json = args.format == "json"
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
    log: list[tuple[int, str]] = []
    for warning in result.get("warnings") or []:
        env.warn(f"gate warning: {warning}")
        log.append((_WARNING, str(warning)))
    status = result.get("status")
    if as_json:
        env.stdout.write(json.dumps({**result, "on_error": on_error}, sort_keys=True) + "\n")
    if status == "pass":
        exit_status = ExitStatus.OK
    elif status == "fail":
        if not as_json:
            env.stdout.write(str(result.get("line")) + "\n")
        log += [(_ERROR, str(detail)) for detail in result.get("details") or []]
        exit_status = ExitStatus.FINDINGS
    else:
        message = f"gate error ({on_error}): {result.get('line')}"
        log.append((_CRITICAL, message))
        if on_error == "closed":
            if not as_json:
                env.stdout.write(f"netaudit: {message}\n")
            exit_status = ExitStatus.FINDINGS
        else:
            env.warn(f"{message}; passing the node because --on-error=open")
            exit_status = ExitStatus.OK
    _log(env, log, config.output.syslog_socket)
    return exit_status
