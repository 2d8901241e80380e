"""Without root the probe degrades and says so: pid unknown for other users' sockets, foreign
namespaces read from procfs, exit 3, never a crash."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import traceback

import pytest

# Imported before the fork: the child runs as nobody, who may not read site-packages
# when Python lives under /root (pyenv), and the CLI imports these lazily.
from netaudit import cli, cmd_probe, inventory, signatures  # noqa: F401
from netaudit.environment import Environment
from tests.lab.netlab import lab_fixture  # noqa: F401

NOBODY = 65534
pytestmark = pytest.mark.requires_root


def _probe_as_nobody() -> tuple[int, dict, str]:
    """Fork, drop to nobody, run the CLI in the child (everything is imported already, so
    no file under /root needs to be readable by nobody)."""
    read_end, write_end = os.pipe()
    shipped = signatures.load()  # as root: nobody may not read a 0700 checkout's probes/
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            cmd_probe.load_signatures = lambda _args, _config: shipped
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out, err = io.StringIO(), io.StringIO()
            status = cli.main(["probe", "--format", "json"], Environment(stdout=out, stderr=err))
            payload = {"status": status, "out": out.getvalue(), "err": err.getvalue()}
        except BaseException:  # report it to the parent instead of dying silently
            payload = {"status": -1, "out": "{}", "err": traceback.format_exc()}
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(json.dumps(payload))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        payload = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert payload["out"], payload["err"]
    return payload["status"], json.loads(payload["out"]), payload["err"]


def test_unprivileged_probe_degrades_and_says_so(lab) -> None:
    # Given a root-owned listener here, and a listener of nobody's in another namespace
    ns = lab.namespace("np")
    lab.link(ns, lab.namespace("np2"), addrs_a=["198.18.9.1/24"], addrs_b=["198.18.9.2/24"])
    server = ns.popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/python3",
         "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',29555)); s.listen();"
               "print('up',flush=True); time.sleep(60)"],
        hostname=False, stdout=-1,
    )  # fmt: skip
    assert server.stdout.readline().strip() == b"up"
    # (a separate root process: a socket of this one would be inherited by the forked child)
    root_server = subprocess.Popen(
        [sys.executable, "-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0));"
         "s.listen(); print(s.getsockname()[1],flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        port = int(root_server.stdout.readline())
        # When nobody probes
        status, document, stderr = _probe_as_nobody()
    finally:
        root_server.kill()
        root_server.wait()

    # Then it completes with exit 3, naming what it could not see
    assert status == 3, stderr
    assert "Traceback" not in stderr
    assert document["privilege"]["is_root"] is False
    assert any("not root" in gap for gap in document["gaps"])
    root_owned = [item for item in document["listeners"] if item["port"] == port]
    assert root_owned and root_owned[0]["pid"] is None and root_owned[0]["uid"] == 0
    # nobody's own listener in the other namespace is found through procfs
    foreign = [i for i in document["listeners"] if i["port"] == 29555 and i["address"] == "0.0.0.0"]
    assert foreign and foreign[0]["source"] == "procfs" and foreign[0]["backlog"] is None
    assert foreign[0]["pid"] == server.pid  # ip netns exec and setpriv exec, they do not fork
    assert any("not entered" in gap for gap in document["gaps"])
