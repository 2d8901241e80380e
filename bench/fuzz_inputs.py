#!/usr/bin/env python3
"""Hostile inventories, configs and baselines by the thousand, through the real CLI.

The same generator as tests/cli/test_hostile_inputs.py (seeded mutations of a valid inventory,
baseline and every sample config, plus the hand-made cases: traversal host names, foreign
addresses, deep nesting, 5,000-digit integers, FIFOs, /dev/zero, directories), each run as
`netaudit scan --dry-run ... 198.18.0.1` in this process with a per-case timer. Nothing is
sent: a dry run only plans. It prints the count per exit status and every case that ended in
an internal error (exit 4), printed a traceback, hung, or wrote a file outside its directory.

Run by hand from the repository root; it is not a test:

    python3 bench/fuzz_inputs.py                       # 3,000 cases, seed 1
    python3 bench/fuzz_inputs.py --cases 10000 --seed 7 --timeout 10 --keep /tmp/fuzz

Exit status: 0 when no case had a problem, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cli import test_hostile_inputs as hostile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="random cases (hand-made ones come on top)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=hostile.CASE_TIMEOUT_S, help="seconds per case")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the inputs (default: a temp dir)")
    args = parser.parse_args()

    cases = hostile.generate(args.cases, args.seed)
    root = Path(args.keep or tempfile.mkdtemp(prefix="netaudit-fuzz-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    statuses: collections.Counter[str] = collections.Counter()
    per_role: collections.Counter[tuple[str, str]] = collections.Counter()
    bad: list[tuple[str, list[str], list[str], str]] = []
    home = os.getcwd()
    valid_text = json.dumps(hostile.valid_inventory())
    started = time.monotonic()
    slowest: list[tuple[float, str]] = []
    try:
        for number, case in enumerate(cases):
            own = root / "cases" / case.name
            directory = own / "a" / "b"
            shutil.rmtree(own, ignore_errors=True)
            directory.mkdir(parents=True)
            valid = directory / "valid-inventory.json"
            valid.write_text(valid_text)
            argv = hostile.materialize(case, directory, valid, root)
            os.chdir(directory)
            before = hostile.snapshot(root)
            case_started = time.monotonic()
            outcome = hostile.run_case(argv, args.timeout)
            slowest.append((time.monotonic() - case_started, case.name))
            os.chdir(home)
            problems = hostile.problems(outcome)
            outside = sorted(p for p in hostile.snapshot(root) - before if not p.startswith(f"{own}/"))
            if outside:
                problems.append(f"wrote outside its directory: {outside[:3]}")
            shown = "hung" if outcome.status is None else str(outcome.status)
            statuses[shown] += 1
            per_role[(case.role, shown)] += 1
            if problems:
                bad.append((case.name, argv, problems, outcome.stderr[-600:]))
            if not args.keep:
                shutil.rmtree(own)
            if (number + 1) % 500 == 0:
                print(f"... {number + 1}/{len(cases)} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        os.chdir(home)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    elapsed_s = time.monotonic() - started
    print(
        f"{len(cases)} cases (seed {args.seed}) in {elapsed_s:.1f} s"
        + (f", inputs under {root}" if args.keep else "")
    )
    print("exit status counts: " + ", ".join(f"{key}: {value}" for key, value in sorted(statuses.items())))
    for role in ("inventory", "config", "baseline"):
        counts = {status: n for (r, status), n in sorted(per_role.items()) if r == role}
        print(f"  {role}: {counts}")
    print("slowest: " + ", ".join(f"{name} {seconds:.2f} s" for seconds, name in sorted(slowest)[-5:]))
    for name, argv, problems, stderr in bad:
        print(f"PROBLEM {name}: {'; '.join(problems)}\n  argv: {argv}\n  stderr: {stderr.strip()}")
    print(f"{len(bad)} case(s) with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
