"""Pacing shared by both scan engines, free of sockets so it is tested with a fake clock:
a global token bucket, a window of probes in flight per target, RTT-adaptive timeouts, and
one deadline queue for every probe in flight.

Why one queue and not waves: a connect() scanner that waits for a batch of sockets before it
starts the next one pays one timeout per batch of filtered ports; a scanner that fires every
probe and keeps one ordered set of deadlines pays one timeout in total
(research/perf-baselines.md §B, "How each tool handles filtered ports").

How deadlines stay cheap: a target's timeout is the same for all its probes and sends to it
happen in time order, so its oldest unanswered attempt always expires first. Each target keeps
its attempts in a deque (answered ones are skipped lazily) and has at most one live entry in a
heap of targets. When a target's timeout shrinks (its first answer arrived) the heap gets an
earlier entry at once; when the oldest attempt is answered the old entry fires early, finds
nothing due, and is replaced. Probes sent before the first answer therefore benefit from the
shorter timeout too, which is what makes a burst of probes to one host finish in one short
timeout rather than the initial 1 s.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Generic, TypeVar

from netaudit.scan.probe_types import ProbeSpec, ScanLimits

# A burst of 10 ms worth of probes (at least one): the engine sends in batches between two
# select() calls, and select() sleeps in whole milliseconds (selectors.EpollSelector rounds up),
# so a smaller bucket would underrun the configured rate.
BURST_S = 0.010
# When only the rate holds sending back, sleep until this much sending time has built up.
WAKE_S = 0.004


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``BURST_S`` worth saved up, full at start."""

    __slots__ = ("_capacity", "_rate_per_s", "_stamp", "_tokens")

    def __init__(self, rate_per_s: float, now: float) -> None:
        self._rate_per_s = rate_per_s
        self._capacity = max(1.0, rate_per_s * BURST_S)
        self._tokens = self._capacity
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate_per_s)
            self._stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def take_up_to(self, now: float, wanted: int) -> int:
        """Take as many whole tokens as are there, at most ``wanted``: what ``wanted`` calls
        of ``take`` would have taken, counted once."""
        self._refill(now)
        taken = min(wanted, int(self._tokens))
        self._tokens -= taken
        return taken

    def give_back(self, count: int = 1) -> None:
        """Return tokens taken for sends that did not happen (ENOBUFS, or nothing to send)."""
        if count:
            self._tokens = min(self._capacity, self._tokens + count)

    def wait_s(self, now: float) -> float:
        """Seconds until a batch of tokens is available: ``WAKE_S`` worth (at least one, at
        most the burst). Waking for every single token made the engine's loop, not its
        probes, the main CPU cost at the default 2,000/s (about 100 us per wake-up)."""
        self._refill(now)
        wanted = min(self._capacity, max(1.0, self._rate_per_s * WAKE_S))
        return max(0.0, (wanted - self._tokens) / self._rate_per_s)


class Host:
    """One target address: its unsent probes, its window and its round-trip record."""

    __slots__ = (
        "address",
        "in_flight",
        "is_ready",
        "max_rtt_s",
        "pending",
        "scheduled_at",
        "timeout_s",
        "waiting",
    )

    def __init__(self, address: str, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s  # limits.timeout_for(max_rtt_s), kept current
        self.pending: deque[Probe] = deque()
        self.in_flight = 0
        # (send time, probe, attempt index) in send order; stale entries skipped lazily.
        self.waiting: deque[tuple[float, Probe, int]] = deque()
        self.max_rtt_s: float | None = None
        self.is_ready = False  # queued in Scheduler._ready
        self.scheduled_at: float | None = None  # deadline of this host's live heap entry


class Probe:
    """A probe's progress. Engines subclass it to carry their own per-attempt state.

    A plain slotted class rather than a dataclass: a scan makes one per probe (16,384 for
    1,024 hosts x 16 ports), and a dataclass subclass with keyword-only fields made its
    construction four times slower.

    Attributes:
        index: position among the distinct specs, for a stable order of late outcomes.
        sent_at: monotonic send time of each attempt (attempt n is sent_at[n]).
        syns_sent: attempts that really left (a failed retry is an attempt not sent).
        is_taken: counted in its host's window (handed out by next_to_send/next_batch).
    """

    __slots__ = ("host", "index", "is_done", "is_taken", "sent_at", "spec", "syns_sent")

    def __init__(self, spec: ProbeSpec, host: Host, index: int) -> None:
        self.spec = spec
        self.host = host
        self.index = index
        self.sent_at: list[float] = []
        self.syns_sent = 0
        self.is_taken = False
        self.is_done = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, attempts={len(self.sent_at)}, is_done={self.is_done})"


P = TypeVar("P", bound=Probe)


class Scheduler(Generic[P]):
    """Decides what to send next and what has timed out; the engine does the I/O."""

    def __init__(self, limits: ScanLimits, now: float, in_flight_total: int | None = None) -> None:
        self.limits = limits
        self._bucket = TokenBucket(limits.rate_per_s, now)
        self._in_flight_total = in_flight_total
        self._hosts: dict[str, Host] = {}
        self._ready: deque[Host] = deque()
        self._resend: deque[P] = deque()
        self._heap: list[tuple[float, int, Host]] = []
        self._counter = itertools.count()
        self.in_flight = 0
        self.unfinished = 0

    # -- building -------------------------------------------------------------------------
    def host(self, address: str) -> Host:
        """The Host for a canonical address text, created on first use."""
        found = self._hosts.get(address)
        if found is None:
            found = self._hosts[address] = Host(address, self.limits.timeout_for(None))
        return found

    def add(self, probe: P) -> None:
        probe.host.pending.append(probe)
        self.unfinished += 1
        self._make_ready(probe.host)

    # -- sending --------------------------------------------------------------------------
    def _make_ready(self, host: Host) -> None:
        if not host.is_ready and host.pending and host.in_flight < self.limits.in_flight_per_host:
            host.is_ready = True
            self._ready.append(host)

    def _below_total(self) -> bool:
        return self._in_flight_total is None or self.in_flight < self._in_flight_total

    def next_to_send(self, now: float) -> P | None:
        """The next probe to (re)send, its token already taken; None when nothing may go now.

        Retries go before new probes: they are older. New probes are taken round-robin over
        the targets, so one host's ports are spread over time rather than sent in a block.
        """
        while self._resend and self._resend[0].is_done:
            self._resend.popleft()  # answered late, after its attempt had timed out
        if self._resend:
            return self._resend.popleft() if self._bucket.take(now) else None
        if not self._ready or not self._below_total() or not self._bucket.take(now):
            return None
        host = self._ready.popleft()
        probe: P = host.pending.popleft()  # type: ignore[assignment]  # hosts hold our P only
        probe.is_taken = True
        host.in_flight += 1
        self.in_flight += 1
        host.is_ready = False
        self._make_ready(host)
        return probe

    def next_batch(self, now: float, limit: int) -> list[P]:
        """Up to ``limit`` probes to (re)send now, in the order ``next_to_send`` would hand
        them out one by one, their tokens taken in one go."""
        resend = self._resend
        while resend and resend[0].is_done:
            resend.popleft()
        tokens = self._bucket.take_up_to(now, limit)
        batch: list[P] = []
        left = tokens
        while resend and left:
            probe = resend.popleft()
            if not probe.is_done:
                batch.append(probe)
                left -= 1
        ready = self._ready
        per_host = self.limits.in_flight_per_host
        total = self._in_flight_total
        while left and ready and (total is None or self.in_flight < total):
            host = ready.popleft()
            new: P = host.pending.popleft()  # type: ignore[assignment]  # hosts hold our P only
            new.is_taken = True
            host.in_flight += 1
            self.in_flight += 1
            host.is_ready = False
            if host.pending and host.in_flight < per_host:  # _make_ready, inlined
                host.is_ready = True
                ready.append(host)
            batch.append(new)
            left -= 1
        self._bucket.give_back(left)
        return batch

    def sent(self, probe: P, now: float, *, has_left: bool = True) -> None:
        """Record an attempt (``has_left`` False: a retry the kernel refused; it still waits
        out its timeout so that earlier attempts can be answered)."""
        probe.sent_at.append(now)
        if has_left:
            probe.syns_sent += 1
        host = probe.host
        host.waiting.append((now, probe, len(probe.sent_at) - 1))
        # The host's live entry is never later than its oldest waiting attempt's deadline;
        # this attempt needs its own entry only when it is the oldest (nothing else waits),
        # which shows as a deadline before that entry's: the timeout may have shrunk since.
        deadline = now + host.timeout_s
        if host.scheduled_at is None or deadline < host.scheduled_at:
            host.scheduled_at = deadline
            heapq.heappush(self._heap, (deadline, next(self._counter), host))

    def unsent(self, probe: P) -> None:
        """A send that did not happen for a passing reason (ENOBUFS, EAGAIN): first in line
        again, token returned."""
        self._resend.appendleft(probe)
        self._bucket.give_back()

    def retry(self, probe: P) -> None:
        """Send an expired probe again when a token allows."""
        self._resend.append(probe)

    def finish(self, probe: P, rtt_s: float | None = None, *, is_rtt_sample: bool = True) -> None:
        """The probe has its outcome; ``rtt_s`` teaches its host's adaptive timeout when
        ``is_rtt_sample`` (an answer from the target itself)."""
        if probe.is_done:
            return
        probe.is_done = True
        self.unfinished -= 1
        if probe.is_taken:
            host = probe.host
            host.in_flight -= 1
            self.in_flight -= 1
            if rtt_s is not None and is_rtt_sample:
                self._observe(host, rtt_s)
            self._make_ready(host)

    # -- timing ---------------------------------------------------------------------------
    def _observe(self, host: Host, rtt_s: float) -> None:
        if host.max_rtt_s is None or rtt_s > host.max_rtt_s:
            host.max_rtt_s = rtt_s
            host.timeout_s = self.limits.timeout_for(rtt_s)
            self._schedule(host)

    def _head_deadline(self, host: Host) -> float | None:
        waiting = host.waiting
        while waiting:
            sent_at, probe, attempt = waiting[0]
            if probe.is_done or attempt != len(probe.sent_at) - 1:
                waiting.popleft()
                continue
            return sent_at + host.timeout_s
        return None

    def _schedule(self, host: Host) -> None:
        deadline = self._head_deadline(host)
        if deadline is None:
            return
        if host.scheduled_at is None or deadline < host.scheduled_at:
            host.scheduled_at = deadline
            heapq.heappush(self._heap, (deadline, next(self._counter), host))

    def pop_expired(self, now: float) -> list[P]:
        """Probes whose latest attempt got no answer in time. Each is still in flight: the
        engine either calls ``retry`` or finishes it as filtered."""
        expired: list[P] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, host = heapq.heappop(heap)
            if deadline != host.scheduled_at:
                continue  # superseded by an earlier entry for the same host
            host.scheduled_at = None
            while (head := self._head_deadline(host)) is not None and head <= now:
                _sent_at, probe, _attempt = host.waiting.popleft()
                expired.append(probe)  # type: ignore[arg-type]  # hosts hold our P only
            self._schedule(host)
        return expired

    def attempts_left(self, probe: P) -> bool:
        return len(probe.sent_at) <= self.limits.retries

    def wait_s(self, now: float) -> float:
        """How long the engine may sleep before something is due (0: send now)."""
        if not self.unfinished:
            return 0.0
        candidates: list[float] = []
        if self._heap:
            candidates.append(self._heap[0][0] - now)
        if self._resend or (self._ready and self._below_total()):
            candidates.append(self._bucket.wait_s(now))
        if not candidates:
            # A safety net, not a state we expect: every probe in flight has a deadline
            # queued and every waiting one is in _ready or _resend.
            return self.limits.timeout_s
        return max(0.0, min(candidates))
