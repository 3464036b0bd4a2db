"""One socket write per published batch (``emailer.adapters.bus.coalesce``), on a stand-in transport."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from emailer.adapters.bus.coalesce import one_write


class Transport:
    """Shaped as py-amqp's TCP transport: ``_write`` (the socket's sendall) set on the instance."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self._write = self._sendall

    def _sendall(self, data: bytes | memoryview) -> None:
        self.sent.append(bytes(data))

    def write(self, data: bytes | memoryview) -> None:
        self._write(data)


def channel_on(transport: object) -> SimpleNamespace:
    return SimpleNamespace(connection=SimpleNamespace(transport=transport))


def test_frames_written_in_the_block_leave_in_one_write_in_their_order() -> None:
    transport = Transport()
    frame = bytearray(b"frame-1")  # py-amqp reuses one buffer for every frame
    with one_write(channel_on(transport)):
        transport.write(memoryview(frame))
        frame[:] = b"frame-2"
        transport.write(memoryview(frame))
        assert transport.sent == []
    assert transport.sent == [b"frame-1frame-2"]
    transport.write(b"after")
    assert transport.sent[-1] == b"after"  # writes go straight out again


def test_what_was_written_before_an_error_is_still_sent() -> None:
    """The confirm tracker counted those publishes: dropping them would shift the channel's tags."""
    transport = Transport()
    with pytest.raises(RuntimeError), one_write(channel_on(transport)):
        transport.write(b"frame-1")
        raise RuntimeError("the next publish failed")
    assert transport.sent == [b"frame-1"]
    transport.write(b"after")
    assert transport.sent[-1] == b"after"


def test_a_transport_without_a_socket_writer_of_its_own_writes_as_before() -> None:
    """TLS (``_write`` a method of the class) and kombu's in-memory channels are left alone."""

    class Tls:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def _write(self, data: bytes) -> None:
            self.sent.append(data)

    tls = Tls()
    with one_write(channel_on(tls)):
        tls._write(b"frame-1")
        assert tls.sent == [b"frame-1"]
    with one_write(SimpleNamespace()):
        pass


def test_a_large_batch_leaves_in_writes_of_bounded_size() -> None:
    transport = Transport()
    frame = b"x" * 1000
    with one_write(channel_on(transport)):
        for _ in range(100):
            transport.write(frame)
    assert b"".join(transport.sent) == frame * 100
    assert 2 <= len(transport.sent) <= 3


class _Message:
    """Shaped as a kombu message on py-amqp: its ack writes a ``basic.ack`` frame on its channel."""

    def __init__(self, channel: SimpleNamespace, tag: int) -> None:
        self.channel = channel
        self.tag = tag

    def ack(self) -> None:
        self.channel.connection.transport.write(b"ack-%d;" % self.tag)


def test_the_acks_of_a_batch_leave_in_one_write_in_their_order() -> None:
    from emailer.adapters.bus.delivery import Delivery, ack_all

    transport = Transport()
    channel = channel_on(transport)
    deliveries = [
        Delivery(f"m-{n}", "SendEmail", {}, b"{}", redelivered=False, _message=_Message(channel, n))
        for n in range(3)
    ]
    ack_all(deliveries)
    assert transport.sent == [b"ack-0;ack-1;ack-2;"]
    assert all(d.state == "acked" for d in deliveries)
