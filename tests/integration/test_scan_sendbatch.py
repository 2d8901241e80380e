"""Send batches (netaudit.scan.sendbatch) over real UDP sockets on loopback: no privilege
needed, and sendmmsg(2) behaves for a UDP socket as for the scanner's raw one (one message
after another, each with its own destination and its own error)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from netaudit.scan import sendbatch
from netaudit.scan.sendbatch import Batch, MmsgBatch, SendtoBatch, destination, open_batch

SIZE = 24
LOOPBACK = "127.0.0.1"

needs_sendmmsg = pytest.mark.skipif(not sendbatch.has_sendmmsg(), reason="libc without sendmmsg")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def receivers() -> Iterator[list[socket.socket]]:
    """Two UDP sockets on loopback, each on its own port."""
    opened = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.settimeout(2.0)
        opened.append(sock)
    yield opened
    for sock in opened:
        sock.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


def _make(kind: str, sock: socket.socket, capacity: int = 64) -> Batch:
    if kind == "sendmmsg":
        if not sendbatch.has_sendmmsg():
            pytest.skip("libc without sendmmsg")
        return MmsgBatch(sock, capacity, SIZE)
    return SendtoBatch(sock, capacity, SIZE)


def _payload(index: int) -> bytes:
    return index.to_bytes(4, "big") * (SIZE // 4)


def _queue(batch: Batch, index: int, port: int) -> None:
    offset = batch.claim(destination(LOOPBACK, port))
    batch.buffer[offset : offset + SIZE] = _payload(index)


def _drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    found = []
    while True:
        try:
            found.append(sock.recv(64))
        except BlockingIOError:
            return found


@pytest.mark.parametrize("kind", ["sendmmsg", "sendto"])
def test_every_packet_leaves_in_order_to_its_own_destination(
    kind: str, sender: socket.socket, receivers: list[socket.socket]
) -> None:
    batch = _make(kind, sender)
    ports = [sock.getsockname()[1] for sock in receivers]
    for index in range(40):
        _queue(batch, index, ports[index % 2])
    assert batch.flush() == [None] * 40
    assert _drain(receivers[0]) == [_payload(i) for i in range(0, 40, 2)]
    assert _drain(receivers[1]) == [_payload(i) for i in range(1, 40, 2)]
    # Flushed means empty: the next flush sends nothing again.
    assert batch.flush() == []
    assert _drain(receivers[0]) == []


@pytest.mark.parametrize("kind", ["sendmmsg", "sendto"])
def test_a_packet_that_fails_alone_gets_its_error_and_the_rest_still_leave(
    kind: str, sender: socket.socket, receivers: list[socket.socket]
) -> None:
    # Given a batch whose 4th and 7th packets go to port 0, which UDP refuses (EINVAL):
    # sendmmsg stops there, and the batch must go on from the next packet.
    batch = _make(kind, sender)
    port = receivers[0].getsockname()[1]
    bad = {3, 6}
    for index in range(10):
        _queue(batch, index, 0 if index in bad else port)
    results = batch.flush()
    assert [i for i, result in enumerate(results) if result is not None] == [3, 6]
    assert {result.errno for result in results if result is not None} == {errno.EINVAL}
    assert _drain(receivers[0]) == [_payload(i) for i in range(10) if i not in bad]


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("kind", ["sendmmsg", "sendto"])
def test_ipv6_destinations(kind: str) -> None:
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock,
    ):
        receiver.bind(("::1", 0))
        batch = _make(kind, sock)
        for index in range(5):
            offset = batch.claim(destination("::1", receiver.getsockname()[1]))
            batch.buffer[offset : offset + SIZE] = _payload(index)
        assert batch.flush() == [None] * 5
        assert _drain(receiver) == [_payload(i) for i in range(5)]


@needs_sendmmsg
def test_a_destination_of_the_other_family_is_refused_before_anything_is_written(
    sender: socket.socket,
) -> None:
    # A sockaddr_in6 does not fit an IPv4 batch's 16-byte name slot (and the reverse would
    # leave stale bytes of a previous name): refused, never truncated or padded.
    batch = MmsgBatch(sender, 4, SIZE)
    with pytest.raises(ValueError, match="family"):
        batch.claim(destination("::1", 9))
    assert batch.flush() == []


@pytest.mark.parametrize("kind", ["sendmmsg", "sendto"])
def test_a_full_batch_refuses_more(kind: str, sender: socket.socket, receivers: list[socket.socket]) -> None:
    batch = _make(kind, sender, capacity=2)
    port = receivers[0].getsockname()[1]
    _queue(batch, 0, port)
    _queue(batch, 1, port)
    with pytest.raises(OverflowError):
        batch.claim(destination(LOOPBACK, port))
    assert batch.flush() == [None, None]
    _queue(batch, 2, port)  # room again after the flush
    assert batch.flush() == [None]
    assert _drain(receivers[0]) == [_payload(0), _payload(1), _payload(2)]


class FullQueue:
    """Stands in for a socket whose send queue fills after ``room`` packets."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int:
        if len(self.sent) == self.room:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        self.sent.append((data, address))
        return len(data)


def test_sendto_batch_stops_at_a_full_queue_and_marks_the_rest() -> None:
    queue = FullQueue(room=2)
    batch = SendtoBatch(queue, 8, SIZE)
    for index in range(5):
        offset = batch.claim(destination(f"198.18.0.{index + 1}"))
        batch.buffer[offset : offset + SIZE] = _payload(index)
    results = batch.flush()
    assert results[:2] == [None, None]
    assert [r.errno if r is not None else None for r in results[2:]] == [errno.ENOBUFS] * 3
    assert len(queue.sent) == 2  # nothing tried after the first ENOBUFS
    assert queue.sent == [(_payload(0), ("198.18.0.1", 0)), (_payload(1), ("198.18.0.2", 0))]


def test_destination_sockaddrs() -> None:
    v4 = destination("198.18.0.1")
    assert v4.sockaddr == socket.AF_INET.to_bytes(2, "little") + b"\0\0" + bytes([198, 18, 0, 1]) + b"\0" * 8
    v6 = destination("2001:db8::1", 80)
    assert len(v6.sockaddr) == 28
    assert v6.sockaddr[2:4] == (80).to_bytes(2, "big")
    assert v6.sockaddr[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    with pytest.raises(OSError):
        destination("not-an-address")


def test_open_batch_uses_sendmmsg_for_sockets_only(sender: socket.socket) -> None:
    assert isinstance(open_batch(FullQueue(1), 4, SIZE), SendtoBatch)
    expected = MmsgBatch if sendbatch.has_sendmmsg() else SendtoBatch
    assert isinstance(open_batch(sender, 4, SIZE), expected)
