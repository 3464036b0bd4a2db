"""``buffered_reads``: py-amqp's frame reads on a real ``TCPTransport`` over a socket pair."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from amqp.transport import TCPTransport

from emailer.adapters.bus.reads import buffered_reads


def frame(channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


@pytest.fixture
def pair() -> Iterator[tuple[TCPTransport, socket.socket, list[int]]]:
    ours, broker = socket.socketpair()
    transport = TCPTransport.__new__(TCPTransport)
    transport.sock = ours
    transport.raise_on_initial_eintr = True
    transport._setup_transport()
    calls: list[int] = []
    recv = ours.recv

    def counting_recv(n: int) -> bytes:
        calls.append(n)
        return recv(n)

    transport._quick_recv = counting_recv
    buffered_reads(transport)
    yield transport, broker, calls
    ours.close()
    broker.close()


def test_frames_already_arrived_are_read_with_one_recv(
    pair: tuple[TCPTransport, socket.socket, list[int]],
) -> None:
    transport, broker, calls = pair
    payloads = [b"method", b"h" * 100, b"b" * 1000]
    broker.sendall(b"".join(frame(1, p) for p in payloads))

    assert [transport.read_frame() for _ in payloads] == [(1, 1, p) for p in payloads]
    assert len(calls) == 1  # py-amqp's own _read: 9 (header, payload, end octet per frame)


def test_a_frame_cut_by_a_timeout_is_completed_by_the_next_read(
    pair: tuple[TCPTransport, socket.socket, list[int]],
) -> None:
    transport, broker, _ = pair
    whole = frame(2, b"x" * 50_000)  # larger than one chunk
    broker.sendall(whole[:30])
    with pytest.raises(TimeoutError), transport.having_timeout(0.05):
        transport.read_frame()
    broker.sendall(whole[30:] + frame(2, b"next"))

    with transport.having_timeout(1):
        assert transport.read_frame() == (1, 2, b"x" * 50_000)
        assert transport.read_frame() == (1, 2, b"next")


def test_a_closed_peer_is_an_error(pair: tuple[TCPTransport, socket.socket, list[int]]) -> None:
    transport, broker, _ = pair
    broker.close()
    with pytest.raises(OSError, match="closed"):
        transport.read_frame()


def test_other_transports_are_left_alone() -> None:
    class SSLTransport:
        pass

    other = SSLTransport()
    buffered_reads(other)
    buffered_reads(None)
    assert "_read" not in vars(other)
