"""Shared by the test jobs: say "ready", then hold until the test releases us.

A job writes its facts to $NETAUDIT_TEST_DIR/ready-<rank>.json and waits for the file
$NETAUDIT_TEST_DIR/release, so the test inspects it while its listeners exist. A job never
outlives NETAUDIT_TEST_HOLD_S (default 120 s): a crashed test leaves no process behind.
"""

from __future__ import annotations

import json
import os
import time


def ready(rank: int, **facts: object) -> None:
    directory = os.environ["NETAUDIT_TEST_DIR"]
    path = os.path.join(directory, f"ready-{rank}.json")
    with open(path + ".tmp", "w") as handle:
        json.dump({"pid": os.getpid(), "rank": rank, **facts}, handle)
    os.replace(path + ".tmp", path)


def hold() -> None:
    directory = os.environ["NETAUDIT_TEST_DIR"]
    deadline = time.monotonic() + float(os.environ.get("NETAUDIT_TEST_HOLD_S", "120"))
    while time.monotonic() < deadline and not os.path.exists(os.path.join(directory, "release")):
        time.sleep(0.05)
