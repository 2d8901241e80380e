"""Start real torch jobs for tests and hold them while the test inspects their sockets.

The jobs live in tests/integration/jobs/ and report readiness through files (see _hold.py).
Every job runs in its own session so that `stop()` ends it and its torchrun workers by
process group, and only those.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

JOBS = Path(__file__).resolve().parent.parent / "integration" / "jobs"


class JobFailed(AssertionError):
    pass


class TorchJob:
    def __init__(
        self,
        workdir: Path,
        argv: list[str],
        ranks: int = 1,
        env: dict[str, str] | None = None,
        popen: Any = None,
    ) -> None:
        """``popen`` is a callable like subprocess.Popen (a netlab Namespace.popen runs the
        job inside a namespace); ``argv`` is run with this Python."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ranks = ranks
        self.log = workdir / "job.log"
        full_env = dict(os.environ)
        full_env.update(
            {
                "NETAUDIT_TEST_DIR": str(workdir),
                "PYTHONPATH": str(JOBS) + os.pathsep + full_env.get("PYTHONPATH", ""),
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1",
            }
        )
        full_env.update(env or {})
        self._log_handle = self.log.open("wb")
        command = [sys.executable, *argv]
        if popen is None:
            self.process = subprocess.Popen(
                command, env=full_env, stdout=self._log_handle, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=workdir,
            )  # fmt: skip
        else:
            self.process = popen(command, env=full_env, stdout=self._log_handle,
                                 stderr=subprocess.STDOUT, cwd=workdir)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = 90.0, offset: int = 0) -> dict[int, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        wanted = [self.workdir / f"ready-{rank + offset}.json" for rank in range(self.ranks)]
        while time.monotonic() < deadline:
            if all(path.exists() for path in wanted):
                return {rank: json.loads(path.read_text()) for rank, path in enumerate(wanted)}
            if self.process.poll() is not None:
                raise JobFailed(f"job exited {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise JobFailed(f"job not ready after {timeout_s} s:\n{self.output()}")

    def release(self) -> None:
        (self.workdir / "release").touch()

    def finish(self, timeout_s: float = 60.0) -> int:
        self.release()
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log_handle.close()

    def __enter__(self) -> TorchJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        self.stop()


def torchrun(*args: str) -> list[str]:
    """argv for `torchrun` run with this Python (the console script may not be on PATH)."""
    return ["-m", "torch.distributed.run", *args]
