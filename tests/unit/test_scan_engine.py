"""The scanner's pacing and matching logic, driven by a fake clock and a recording sender (no
sockets). The kernel side is covered by tests/integration/test_synscan.py."""

from __future__ import annotations

import errno
import hashlib
import random
import struct

import pytest

from netaudit.models import PortState
from netaudit.scan.pacing import Probe, Scheduler, TokenBucket
from netaudit.scan.packets import (
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    IcmpError,
    TcpSegment,
    pack_address,
)
from netaudit.scan.probe_types import ProbeSpec, ScanLimits
from netaudit.scan.synscan import Cookie, SynEngine, _Origin, dport_filter, isn_from

SRC = "198.18.0.1"
TARGET = "198.18.0.2"
OUR_PORT = 40000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for a raw socket: records (packet, address), or raises a chosen errno
    (for every packet, after ``room`` packets, or for one target address)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.fail_with: int | None = None
        self.room: int | None = None
        self.unreachable: dict[str, int] = {}

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int:
        if self.fail_with is not None:
            raise OSError(self.fail_with, "fake")
        if self.room is not None and len(self.sent) >= self.room:
            raise OSError(errno.ENOBUFS, "fake")
        if address[0] in self.unreachable:
            raise OSError(self.unreachable[address[0]], "fake")
        self.sent.append((data, address))
        return len(data)

    def ports(self) -> list[int]:
        return [struct.unpack_from("!H", packet, 2)[0] for packet, _ in self.sent]

    def isns(self) -> list[int]:
        return [struct.unpack_from("!I", packet, 4)[0] for packet, _ in self.sent]


def make_engine(
    ports: list[int], targets: tuple[str, ...] = (TARGET,), **limits: float
) -> tuple[SynEngine, Recorder, Clock]:
    clock = Clock()
    engine = SynEngine(ScanLimits(**limits), Cookie(b"k" * 16), clock=clock)  # type: ignore[arg-type]
    recorder = Recorder()
    origin = _Origin(recorder, pack_address(SRC), OUR_PORT)
    for target in targets:
        for port in ports:
            engine.add(ProbeSpec(SRC, target, port), origin, target)
    return engine, recorder, clock


def answer(port: int, isn: int, flags: int, target: str = TARGET) -> TcpSegment:
    return TcpSegment(
        pack_address(target), pack_address(SRC), port, OUR_PORT, 555, (isn + 1) & 0xFFFFFFFF, flags
    )


def test_cookie_is_keyed_and_per_attempt() -> None:
    s, d = pack_address(SRC), pack_address(TARGET)
    one, other = Cookie(b"a" * 16), Cookie(b"b" * 16)
    assert one.isn(s, d, 1, 2, 0) == one.isn(s, d, 1, 2, 0)
    assert one.isn(s, d, 1, 2, 0) != one.isn(s, d, 1, 2, 1)
    assert one.isn(s, d, 1, 2, 0) != one.isn(s, d, 1, 3, 0)
    assert one.isn(s, d, 1, 2, 0) != other.isn(s, d, 1, 2, 0)


def test_isn_is_the_keyed_hash_of_the_whole_probe() -> None:
    # The engine finishes a copy of a per-path hash state; the ISN must still be exactly
    # BLAKE2b(key, src | dst | sport | dport | attempt), as if hashed in one go.
    key = b"k" * 16
    cookie = Cookie(key)
    s, d = pack_address(SRC), pack_address(TARGET)
    keyed = cookie.keyed(s, d, OUR_PORT)
    for dport, attempt in [(1, 0), (80, 1), (65535, 255), (29500, 256)]:
        message = s + d + struct.pack("!HHB", OUR_PORT, dport, attempt & 0xFF)
        whole = hashlib.blake2b(message, digest_size=4, key=key).digest()
        assert isn_from(keyed, dport, attempt) == int.from_bytes(whole, "big")
        assert cookie.isn(s, d, OUR_PORT, dport, attempt) == int.from_bytes(whole, "big")
    assert isn_from(keyed, 80, 0) == isn_from(keyed, 80, 0)  # the shared state is not consumed


def test_syn_ack_rst_and_matching() -> None:
    engine, recorder, clock = make_engine([80, 81])
    assert engine.send_batch(clock()) == []
    assert [address for _, address in recorder.sent] == [(TARGET, 0), (TARGET, 0)]
    isn80, isn81 = recorder.isns()
    clock.now += 0.002

    assert engine.on_tcp(answer(80, isn80, TCP_SYN), clock()) is None  # a SYN is not an answer
    assert engine.on_tcp(answer(80, isn80 + 7, TCP_SYN | TCP_ACK), clock()) is None  # forged
    assert engine.on_tcp(answer(81, isn81, TCP_RST), clock()) is None  # RST without ACK
    opened = engine.on_tcp(answer(80, isn80, TCP_SYN | TCP_ACK), clock())
    closed = engine.on_tcp(answer(81, isn81, TCP_RST | TCP_ACK), clock())

    assert opened is not None and closed is not None
    assert (opened.state, opened.reason, opened.syns_sent) == (PortState.OPEN, "syn-ack", 1)
    assert (closed.state, closed.reason) == (PortState.CLOSED, "rst")
    assert opened.rtt_s == pytest.approx(0.002)
    assert engine.is_finished


def test_duplicate_and_late_answers_produce_nothing() -> None:
    engine, recorder, clock = make_engine([80, 81], timeout_s=0.5, retries=0)
    engine.send_batch(clock())
    isn80, isn81 = recorder.isns()
    assert engine.on_tcp(answer(80, isn80, TCP_SYN | TCP_ACK), clock()) is not None
    assert engine.on_tcp(answer(80, isn80, TCP_SYN | TCP_ACK), clock()) is None
    assert engine.on_tcp(answer(80, isn80, TCP_RST | TCP_ACK), clock()) is None

    clock.now += 0.6
    expired = engine.expire(clock())
    assert [(o.spec.port, o.state, o.reason) for o in expired] == [(81, PortState.FILTERED, "timeout")]
    assert engine.on_tcp(answer(81, isn81, TCP_SYN | TCP_ACK), clock()) is None  # too late
    assert engine.is_finished


def test_retry_uses_a_new_isn_and_an_early_answer_still_counts() -> None:
    engine, recorder, clock = make_engine([80], timeout_s=0.5, retries=1)
    engine.send_batch(clock())
    clock.now += 0.5
    assert engine.expire(clock()) == []  # not final: queued for a resend
    engine.send_batch(clock())
    first, second = recorder.isns()
    assert first != second

    clock.now += 0.1
    # The answer to the FIRST attempt arrives after the second was sent: the RTT is measured
    # from the first send, the attempt being known from the ISN it acknowledges.
    outcome = engine.on_tcp(answer(80, first, TCP_SYN | TCP_ACK), clock())
    assert outcome is not None
    assert outcome.syns_sent == 2
    assert outcome.rtt_s == pytest.approx(0.6)


def test_filtered_costs_one_timeout_per_attempt_in_total() -> None:
    targets = tuple(f"198.18.0.{i}" for i in range(10, 20))
    engine, recorder, clock = make_engine(list(range(1, 11)), targets, timeout_s=1.0, retries=1)
    engine.send_batch(clock())
    assert len(recorder.sent) == 20  # 2000/s for 10 ms: the bucket's burst
    start = clock.now
    outcomes = []
    while not engine.is_finished:
        clock.now = min(start + 10, clock.now + 0.001)
        outcomes += engine.expire(clock())
        outcomes += engine.send_batch(clock())
    assert len(outcomes) == 100
    assert {o.reason for o in outcomes} == {"timeout"}
    assert {o.syns_sent for o in outcomes} == {2}
    # 200 sends at 2000/s are spread over ~0.1 s; then the last waits 2 x 1 s. No waves.
    assert clock.now - start == pytest.approx(2.04, abs=0.06)


def test_a_host_window_makes_waves_on_one_host() -> None:
    # The other side of the per-host limit: 100 filtered ports on ONE host, 64 in flight.
    engine, _recorder, clock = make_engine(list(range(1, 101)), timeout_s=1.0, retries=0)
    start = clock.now
    while not engine.is_finished:
        clock.now += 0.001
        engine.expire(clock())
        engine.send_batch(clock())
    assert clock.now - start == pytest.approx(2.0, abs=0.1)


def test_first_answer_shortens_the_timeout_of_probes_already_sent() -> None:
    engine, recorder, clock = make_engine([80, 81, 82], timeout_s=1.0, min_timeout_s=0.1, retries=0)
    engine.send_batch(clock())
    isn80 = recorder.isns()[0]
    clock.now += 0.001
    assert engine.on_tcp(answer(80, isn80, TCP_RST | TCP_ACK), clock()) is not None
    clock.now += 0.1
    expired = engine.expire(clock())
    # max(min_timeout 0.1, 4 x 1 ms) = 0.1 s from their send, not the initial 1 s.
    assert sorted(o.spec.port for o in expired) == [81, 82]


def test_probe_sent_after_the_first_answer_gets_the_short_timeout() -> None:
    # One probe in flight at a time: the answer to the first removes the host's only waiting
    # attempt, so the second is scheduled afresh, with the timeout that answer shortened.
    engine, recorder, clock = make_engine(
        [80, 81], timeout_s=1.0, min_timeout_s=0.1, retries=0, in_flight_per_host=1
    )
    engine.send_batch(clock())
    clock.now += 0.002
    assert engine.on_tcp(answer(80, recorder.isns()[0], TCP_RST | TCP_ACK), clock()) is not None
    engine.send_batch(clock())
    assert len(recorder.sent) == 2
    clock.now += 0.1
    assert [o.spec.port for o in engine.expire(clock())] == [81]


def test_icmp_from_a_firewall_is_filtered_but_does_not_teach_the_rtt() -> None:
    engine, recorder, clock = make_engine([80, 81], timeout_s=1.0, retries=0)
    engine.send_batch(clock())
    isn80, _ = recorder.isns()
    clock.now += 0.001
    firewall = pack_address("198.18.0.254")
    error = IcmpError(False, 3, 13, firewall, pack_address(SRC), pack_address(TARGET), OUR_PORT, 80, isn80)
    outcome = engine.on_icmp(error, clock())
    assert outcome is not None
    assert (outcome.state, outcome.reason) == (PortState.FILTERED, "icmp 3/13")
    assert outcome.rtt_s == pytest.approx(0.001)
    clock.now += 0.5
    assert engine.expire(clock()) == []  # port 81 still has the full 1 s

    wrong_seq = IcmpError(False, 3, 13, firewall, pack_address(SRC), pack_address(TARGET), OUR_PORT, 81, 1)
    assert engine.on_icmp(wrong_seq, clock()) is None


def test_in_flight_window_per_host_and_round_robin() -> None:
    targets = ("198.18.0.2", "198.18.0.3")
    engine, recorder, clock = make_engine([1, 2, 3], targets, in_flight_per_host=2, rate_per_s=1e6)
    engine.send_batch(clock())
    sent = [address for _, address in recorder.sent]
    assert sent == [("198.18.0.2", 0), ("198.18.0.3", 0)] * 2  # interleaved, 2 per host
    isn = recorder.isns()[0]
    engine.on_tcp(answer(1, isn, TCP_RST | TCP_ACK, "198.18.0.2"), clock())
    engine.send_batch(clock())
    assert [address for _, address in recorder.sent][4:] == [("198.18.0.2", 0)]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENETUNREACH, f"no route from {SRC}"),
        (errno.EHOSTUNREACH, f"no route from {SRC}"),
        (errno.EPERM, f"send from {SRC} refused by this host (fake)"),
    ],
)
def test_send_errors_become_not_tested(code: int, reason: str) -> None:
    engine, recorder, clock = make_engine([80])
    recorder.fail_with = code
    outcomes = engine.send_batch(clock())
    assert [(o.state, o.reason, o.syns_sent) for o in outcomes] == [(PortState.NOT_TESTED, reason, 0)]
    assert engine.is_finished


def test_full_send_queue_is_retried_not_lost() -> None:
    engine, recorder, clock = make_engine([80])
    recorder.fail_with = errno.ENOBUFS
    assert engine.send_batch(clock()) == []
    recorder.fail_with = None
    engine.send_batch(clock())
    assert len(recorder.sent) == 1


def test_full_send_queue_mid_batch_sends_the_rest_next_round_in_order() -> None:
    # Given a send queue with room for 3 SYNs of a batch of 8: those 3 leave, the other 5
    # are neither lost nor reported, and go first, in their order, once there is room.
    engine, recorder, clock = make_engine(list(range(1, 9)), rate_per_s=1e6)
    recorder.room = 3
    assert engine.send_batch(clock()) == []
    assert recorder.ports() == [1, 2, 3]
    assert engine.scheduler.in_flight == 8  # the 5 unsent still hold their window slots
    recorder.room = None
    assert engine.send_batch(clock()) == []
    assert recorder.ports() == list(range(1, 9))
    assert sorted(p.syns_sent for p in engine.probes) == [1] * 8
    # Each was sent once, so each answer to its one ISN is matched.
    for port, isn in zip(recorder.ports(), recorder.isns(), strict=True):
        assert engine.on_tcp(answer(port, isn, TCP_RST | TCP_ACK), clock()) is not None
    assert engine.is_finished


def test_one_failed_send_in_a_batch_spares_the_others() -> None:
    targets = ("198.18.0.2", "198.18.0.3", "198.18.0.4")
    engine, recorder, clock = make_engine([80], targets, rate_per_s=1e6)
    recorder.unreachable["198.18.0.3"] = errno.EHOSTUNREACH
    outcomes = engine.send_batch(clock())
    assert [(o.spec.address, o.state, o.syns_sent) for o in outcomes] == [
        ("198.18.0.3", PortState.NOT_TESTED, 0)
    ]
    assert [address for _, address in recorder.sent] == [("198.18.0.2", 0), ("198.18.0.4", 0)]


def test_a_retry_that_cannot_leave_still_waits_for_the_first_attempt() -> None:
    engine, recorder, clock = make_engine([80], timeout_s=0.5, retries=1)
    engine.send_batch(clock())
    first = recorder.isns()[0]
    clock.now += 0.5
    assert engine.expire(clock()) == []  # queued for a resend
    recorder.unreachable[TARGET] = errno.ENETUNREACH
    assert engine.send_batch(clock()) == []  # not final: the first SYN may be answered
    clock.now += 0.1
    outcome = engine.on_tcp(answer(80, first, TCP_SYN | TCP_ACK), clock())
    assert outcome is not None
    assert (outcome.state, outcome.syns_sent) == (PortState.OPEN, 1)
    assert outcome.rtt_s == pytest.approx(0.6)


def test_interrupt_reports_everything_unfinished_once() -> None:
    engine, recorder, clock = make_engine([1, 2, 3, 4], rate_per_s=100)  # burst of 1
    engine.send_batch(clock())
    isn = recorder.isns()[0]
    done = engine.on_tcp(answer(1, isn, TCP_SYN | TCP_ACK), clock())
    assert done is not None
    rest = engine.interrupt()
    assert [(o.spec.port, o.state, o.reason, o.syns_sent) for o in rest] == [
        (2, PortState.NOT_TESTED, "interrupted", 0),
        (3, PortState.NOT_TESTED, "interrupted", 0),
        (4, PortState.NOT_TESTED, "interrupted", 0),
    ]
    assert engine.interrupt() == []


def test_same_probe_spelled_twice_is_probed_once() -> None:
    clock = Clock()
    engine = SynEngine(ScanLimits(), clock=clock)
    origin = _Origin(Recorder(), pack_address("2001:db8::1"), OUR_PORT)
    engine.add(ProbeSpec("2001:db8::1", "2001:DB8::2", 80), origin, "2001:db8::2")
    engine.add(ProbeSpec("2001:db8::1", "2001:db8:0::2", 80), origin, "2001:db8::2")
    assert len(engine.probes) == 1


def test_distinct_and_aliases() -> None:
    from netaudit.models import PortState as State
    from netaudit.scan.egress import distinct, with_aliases
    from netaudit.scan.probe_types import ProbeOutcome

    a = ProbeSpec("2001:db8::1", "2001:db8::2", 80)
    b = ProbeSpec("2001:db8::1", "2001:DB8:0::2", 80)
    c = ProbeSpec("198.18.0.1", "198.18.0.2", 80)
    unique, aliases = distinct([a, b, a, c, b])
    assert unique == [a, c]
    assert aliases == {a: [b]}
    outcomes = [
        ProbeOutcome(a, State.OPEN, "syn-ack", 0.001, 1),
        ProbeOutcome(c, State.CLOSED, "rst", 0.001, 1),
    ]
    expanded = list(with_aliases(outcomes, aliases))
    assert [(o.spec, o.state) for o in expanded] == [(a, State.OPEN), (b, State.OPEN), (c, State.CLOSED)]


def test_token_bucket_rate() -> None:
    bucket = TokenBucket(1000.0, now=0.0)
    taken = sum(bucket.take(0.0) for _ in range(100))
    assert taken == 10  # 10 ms of burst
    assert bucket.wait_s(0.0) == pytest.approx(0.004)  # sleeps for 4 ms worth, not 1 token
    assert TokenBucket(10.0, now=0.0).wait_s(0.0) == 0.0  # the burst of 1 is there
    slow = TokenBucket(10.0, now=0.0)
    assert slow.take(0.0)
    assert slow.wait_s(0.0) == pytest.approx(0.1)  # at least one token
    assert sum(bucket.take(0.1) for _ in range(1000)) == 10  # refilled, capped at the burst


def test_scheduler_global_cap() -> None:
    limits = ScanLimits(rate_per_s=1e6)
    scheduler: Scheduler[Probe] = Scheduler(limits, 0.0, in_flight_total=3)
    for port in range(1, 10):
        scheduler.add(Probe(ProbeSpec(SRC, f"198.18.0.{port}", 80), scheduler.host(str(port)), port))
    taken = []
    while (probe := scheduler.next_to_send(0.0)) is not None:
        taken.append(probe)
    assert len(taken) == 3
    scheduler.finish(taken[0])
    assert scheduler.next_to_send(0.0) is not None


@pytest.mark.parametrize("seed", range(6))
def test_next_batch_hands_out_what_next_to_send_would(seed: int) -> None:
    # The engine takes a round's probes in one call; the order, the windows, the global cap
    # and the tokens must be those of taking them one at a time.
    rng = random.Random(seed)
    limits = ScanLimits(
        rate_per_s=rng.choice([500.0, 5000.0, 1e6]), in_flight_per_host=rng.choice([1, 2, 64])
    )
    total = rng.choice([None, 3, 50])
    one: Scheduler[Probe] = Scheduler(limits, 0.0, in_flight_total=total)
    many: Scheduler[Probe] = Scheduler(limits, 0.0, in_flight_total=total)
    count = rng.randrange(1, 60)
    for scheduler in (one, many):
        for index in range(count):
            address = f"198.18.0.{index % 7 + 1}"
            scheduler.add(Probe(ProbeSpec(SRC, address, index + 1), scheduler.host(address), index))
    now = 0.0
    for _round in range(40):
        now += rng.choice([0.0, 0.0005, 0.003])
        limit = rng.choice([1, 5, 64])
        singles = []
        while len(singles) < limit and (probe := one.next_to_send(now)) is not None:
            singles.append(probe)
        batch = many.next_batch(now, limit)
        assert [p.spec for p in batch] == [p.spec for p in singles]
        assert (many.in_flight, many.wait_s(now)) == (one.in_flight, one.wait_s(now))
        # Finish some, and send some again (resends go first), the same way in both.
        for a, b in zip(singles, batch, strict=True):
            if rng.random() < 0.5:
                one.finish(a)
                many.finish(b)
            elif rng.random() < 0.3:
                one.retry(a)
                many.retry(b)


def test_limits_timeout_rule() -> None:
    limits = ScanLimits(timeout_s=1.0, min_timeout_s=0.05)
    assert limits.timeout_for(None) == 1.0
    assert limits.timeout_for(0.001) == 0.05
    assert limits.timeout_for(0.1) == pytest.approx(0.4)
    assert limits.timeout_for(5.0) == 1.0
    assert ScanLimits(min_timeout_s=0.0).timeout_for(0.0) == 0.010  # the absolute floor
    assert ScanLimits(is_adaptive=False).timeout_for(0.001) == 1.0
    with pytest.raises(ValueError, match="rate"):
        ScanLimits(rate_per_s=0)
    with pytest.raises(ValueError, match="port"):
        ProbeSpec(SRC, TARGET, 0)


def _run_cbpf(program: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """A tiny interpreter for the few classic BPF instructions dport_filter emits."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0xB1:  # ldx 4*([k]&0xf)
            x = 4 * (packet[k] & 0x0F)
        elif code == 0x48:  # ldh [x+k]
            a = struct.unpack_from("!H", packet, x + k)[0]
        elif code == 0x28:  # ldh [k]
            a = struct.unpack_from("!H", packet, k)[0]
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


@pytest.mark.parametrize("ports", [[40000], [40000, 40001, 50000]])
def test_dport_filter_program(ports: list[int]) -> None:
    def segment(dport: int) -> bytes:
        return struct.pack("!HHIIBBHHH", 80, dport, 0, 0, 0x50, 0x12, 0, 0, 0)

    ip_header = bytes([0x46]) + b"\0" * 23  # IHL 6: 24 bytes with options
    v4 = dport_filter(ports, has_ip_header=True)
    v6 = dport_filter(ports, has_ip_header=False)
    for port in ports:
        assert _run_cbpf(v4, ip_header + segment(port)) > 0
        assert _run_cbpf(v6, segment(port)) > 0
    for other in (1, 39999, 65535):
        assert _run_cbpf(v4, ip_header + segment(other)) == 0
        assert _run_cbpf(v6, segment(other)) == 0
