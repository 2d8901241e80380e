"""Runs one scan inside whatever network namespace it was started in (``ip netns exec``) and
prints one JSON line per outcome, then a summary line. Used by the integration tests so that
the scanner never sends from the test runner's own namespace.

stdin: {"engine": "syn"|"connect", "specs": [[source, address, port], ...],
        "limits": {ScanLimits fields}, "stop_after_s": float|null}
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main() -> int:
    request = json.load(sys.stdin)
    started = time.monotonic()
    from netaudit.scan.probe_types import ProbeSpec, ScanLimits

    if request["engine"] == "syn":
        from netaudit.scan.synscan import syn_scan as scan
    else:
        from netaudit.scan.connectscan import connect_scan as scan
    specs = [ProbeSpec(src, addr, int(port)) for src, addr, port in request["specs"]]
    limits = ScanLimits(**request.get("limits", {}))
    # Only when asked: a stop_event caps every sleep of the engine at 50 ms, which would hide
    # a loop that sleeps too long.
    stop_event: threading.Event | None = None
    stop_after = request.get("stop_after_s")
    if stop_after is not None:
        stop_event = threading.Event()
        threading.Timer(stop_after, stop_event.set).start()
    scan_started = time.monotonic()
    for outcome in scan(specs, limits, stop_event):
        line = {
            "source": outcome.spec.source,
            "address": outcome.spec.address,
            "port": outcome.spec.port,
            "state": outcome.state.value,
            "reason": outcome.reason,
            "rtt_s": outcome.rtt_s,
            "syns_sent": outcome.syns_sent,
            "t": time.monotonic() - scan_started,
        }
        print(json.dumps(line), flush=True)
    ended = time.monotonic()
    summary = {"done": True, "scan_s": ended - scan_started, "process_s": ended - started}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
