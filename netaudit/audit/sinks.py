"""Where a scan's results go besides stdout: the baseline (only news), Prometheus textfile
metrics, syslog, and the per-node verdicts the prolog gate reads.

Every destination is checked before the scan sends anything, so a typo in --textfile fails
in a second (exit 2), not after an hour of scanning; and every file is replaced atomically,
so neither a crash nor a full disk leaves a half-written state behind.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from netaudit import __version__, atomic
from netaudit.audit import baseline, verdict
from netaudit.config import Config
from netaudit.models import Report
from netaudit.report import prometheus, syslog_out
from netaudit.status import ExitStatus
from netaudit.typedread import InputError


class OutputError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class Sinks:
    baseline_path: str | None
    textfile_dir: str | None
    syslog_socket: str | None
    verdict_template: str | None

    problems: tuple[str, ...] = ()  # dry run: what a real run would have stopped on

    @classmethod
    def from_config(cls, args: argparse.Namespace, config: Config) -> Sinks:
        """The destinations, each checked now. A dry run writes none of them: what a real run
        would stop on becomes a note instead of an error, so a site's config can be tried
        on a laptop."""
        output = config.output
        baseline_path = args.baseline or output.baseline
        textfile_dir = args.textfile or output.textfile_dir
        template = config.gate.verdict_path
        problems: list[str] = []

        def check(path: str, what: str) -> None:
            problem = atomic.check_writable_directory(path)
            if problem and not args.dry_run:
                raise OutputError(f"{what}: {problem}")
            if problem:
                problems.append(f"dry run: {what}: {problem} (a real run would stop here)")

        if baseline_path:
            check(os.path.dirname(os.path.abspath(baseline_path)), "--baseline")
            if not args.dry_run or os.path.exists(baseline_path):
                baseline.load(baseline_path)  # a corrupt or foreign baseline stops us now, untouched
        if textfile_dir:
            check(textfile_dir, "--textfile")
        if template:
            try:
                verdict.check_template(template)
            except verdict.VerdictError as error:
                raise OutputError(str(error)) from None
            check(os.path.dirname(os.path.abspath(verdict.path_for(template, "x"))), "gate.verdict_path")
        if args.dry_run:
            return cls(None, None, None, None, tuple(problems))
        return cls(
            baseline_path=baseline_path,
            textfile_dir=textfile_dir,
            syslog_socket=output.syslog_socket if (args.syslog or output.syslog) else None,
            verdict_template=template,
        )

    def compare_baseline(self, report: Report) -> tuple[Report, baseline.Baseline | None]:
        """Mark findings new or unchanged; the state to save once every output is written."""
        if self.baseline_path is None:
            return report, None
        previous = baseline.load(self.baseline_path)
        return baseline.compare(previous, report)

    def save_baseline(self, report: Report, state: baseline.Baseline | None) -> None:
        """Only after a whole run whose outputs were all written: an interrupted run must not
        make unfinished hosts look resolved, nor a failed write make findings "unchanged"."""
        if self.baseline_path is None or state is None or report.is_interrupted:
            return
        baseline.save(self.baseline_path, state, __version__, report.generated_at)

    def write(self, report: Report, status: ExitStatus, hosts: list[str]) -> list[str]:
        """Write every destination; what could not be delivered without failing the run
        (syslog: the report still stands without it), one line each."""
        if self.textfile_dir:
            prometheus.write(self.textfile_dir, report, status)
        problems: list[str] = []
        if self.verdict_template and not report.is_interrupted:
            problems += verdict.write_all(self.verdict_template, report, hosts)[1]
        problem = syslog_out.send(report, self.syslog_socket) if self.syslog_socket else None
        return problems + ([problem] if problem else [])
