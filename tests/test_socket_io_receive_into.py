"""socket_io receive_into: at most len(view) bytes into the caller's view, 0 once the peer
closed; the same waiting and yielding as receive, on plain sockets and on any stream."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from memlease.server.socket_io import SocketIO, StreamIO, stream_io


def _plain_pair() -> tuple[socket.socket, socket.socket]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    return ours, peer


async def test_socket_io_reads_at_most_the_view_into_it_then_sees_the_close() -> None:
    ours, peer = _plain_pair()
    with ours, peer:
        io = SocketIO(ours, bytearray(16))
        peer.sendall(b"0123456789")
        buffer = bytearray(b"." * 12)
        view = memoryview(buffer)
        assert await io.receive_into(view[:8]) == 8
        assert await io.receive_into(view[8:]) == 2
        assert buffer == bytearray(b"0123456789..")
        peer.shutdown(socket.SHUT_WR)
        assert await io.receive_into(view) == 0


async def test_socket_io_waits_for_bytes_sent_later() -> None:
    ours, peer = _plain_pair()
    with ours, peer, trio.fail_after(5):
        io = SocketIO(ours, bytearray(16))
        view = memoryview(bytearray(4))
        async with trio.open_nursery() as nursery:

            async def send_later() -> None:
                await trio.testing.wait_all_tasks_blocked()
                peer.sendall(b"late")

            nursery.start_soon(send_later)
            assert await io.receive_into(view) == 4
        assert bytes(view) == b"late"


async def test_socket_io_receive_into_yields_between_reads_that_needed_no_wait() -> None:
    # A peer that keeps the socket full must not starve the other connections.
    ours, peer = _plain_pair()
    with ours, peer:
        io = SocketIO(ours, bytearray(16))
        peer.sendall(b"x" * 64)
        view = memoryview(bytearray(8))
        ran = 0

        async def other() -> None:
            nonlocal ran
            while True:
                ran += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.lowlevel.checkpoint()  # other is running now
            before = ran
            for _ in range(4):
                assert await io.receive_into(view) == 8
            # a pass before each read after the first; other may not have had the last one yet
            assert ran >= before + 2
            nursery.cancel_scope.cancel()


async def test_socket_io_receive_into_refuses_an_empty_view() -> None:
    ours, peer = _plain_pair()
    with ours, peer, pytest.raises(ValueError):
        await SocketIO(ours, bytearray(16)).receive_into(memoryview(bytearray(0)))


async def test_socket_io_receive_into_on_a_trio_socket_stream() -> None:
    left, right = trio.socket.socketpair()
    ours, peer = trio.SocketStream(left), trio.SocketStream(right)
    async with ours, peer:
        io = stream_io(ours, bytearray(16))
        assert type(io) is SocketIO
        await peer.send_all(b"abc")
        view = memoryview(bytearray(8))
        assert await io.receive_into(view) == 3
        assert bytes(view[:3]) == b"abc"


async def test_stream_io_copies_at_most_the_view_then_sees_the_close() -> None:
    ours, peer = trio.testing.memory_stream_pair()
    io = stream_io(ours, bytearray(16))
    assert type(io) is StreamIO
    await peer.send_all(b"0123456789")
    buffer = bytearray(b"." * 12)
    view = memoryview(buffer)
    assert await io.receive_into(view[:4]) == 4
    received = 4
    while received < 10:
        got = await io.receive_into(view[received:])
        assert 1 <= got <= len(view) - received
        received += got
    assert buffer == bytearray(b"0123456789..")
    await peer.aclose()
    assert await io.receive_into(view) == 0


async def test_stream_io_asks_its_stream_for_no_more_than_its_receive_size() -> None:
    # A TLS stream allocates whatever it is asked for on every read; a large message's view
    # may be max_message long.
    asked: list[int] = []
    ours, peer = trio.testing.memory_stream_pair()
    receive_some = ours.receive_some

    async def recording(max_bytes: int | None = None) -> bytes | bytearray:
        assert max_bytes is not None
        asked.append(max_bytes)
        return await receive_some(max_bytes)

    ours.receive_some = recording  # type: ignore[method-assign]
    io = stream_io(ours, bytearray(16))
    await peer.send_all(b"x" * 40)
    view = memoryview(bytearray(1 << 20))
    assert await io.receive_into(view) == 16
    assert asked == [16]
