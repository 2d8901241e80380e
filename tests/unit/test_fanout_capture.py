"""A node's command is read as it prints: capped, timed out and killed, never read whole."""

from __future__ import annotations

import sys
import time

from netaudit.fanout import capture, results, subprocesses


def test_endless_output_stops_at_the_cap_and_the_command_is_killed() -> None:
    started = time.monotonic()
    got = capture.run_capped(["yes", "x" * 100], None, timeout_s=30, stdout_limit=1 << 20)
    assert len(got.stdout) == (1 << 20) + 1
    assert got.error is None and got.returncode is not None and got.returncode < 0
    assert time.monotonic() - started < 10


def test_a_capped_node_is_named_too_large_not_parsed() -> None:
    output = subprocesses._run("node7", ["yes"], 30, None)
    failure = results.to_inventory(output)
    assert isinstance(failure, results.NodeFailure)
    assert failure.node == "node7" and "larger than" in failure.reason


def test_stdin_reaches_the_command_and_stdout_comes_back_whole() -> None:
    payload = b"".join(b"%08d\n" % i for i in range(200_000))  # larger than a pipe buffer
    got = capture.run_capped(["cat"], payload, timeout_s=30, stdout_limit=len(payload))
    assert got.returncode == 0 and got.stdout == payload


def test_timeout_kills_a_silent_command() -> None:
    started = time.monotonic()
    got = capture.run_capped(["sleep", "30"], None, timeout_s=0.5, stdout_limit=100)
    assert got.returncode is None and got.error == "timed out after 0.5 s"
    assert time.monotonic() - started < 5


def test_a_command_that_closes_its_output_but_keeps_running_times_out() -> None:
    code = "import os, time; os.close(1); os.close(2); time.sleep(30)"
    got = capture.run_capped([sys.executable, "-c", code], None, timeout_s=1, stdout_limit=100)
    assert got.returncode is None and got.error is not None and "timed out" in got.error


def test_stderr_keeps_only_its_tail() -> None:
    code = "import sys; sys.stderr.write('a' * 500000 + 'THE END')"
    got = capture.run_capped(
        [sys.executable, "-c", code], None, timeout_s=30, stdout_limit=100, stderr_keep=1000
    )
    assert got.returncode == 0 and len(got.stderr) == 1000 and got.stderr.endswith(b"THE END")


def test_missing_program_is_an_error_not_an_exception() -> None:
    got = capture.run_capped(["/nonexistent/netaudit-node"], None, timeout_s=1, stdout_limit=100)
    assert got.returncode is None and got.error == "cannot run '/nonexistent/netaudit-node': not found"
