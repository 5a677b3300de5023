"""memlease.server.socket_io: system-call I/O on a plain TCP stream, stream methods on
anything else."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from memlease.server.socket_io import SocketIO, StreamIO, stream_io


def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def _receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    received = bytearray()
    while len(received) < count:
        chunk = await stream.receive_some(1 << 20)
        assert chunk, "closed early"
        received += chunk
    return bytes(received)


async def test_plain_sockets_get_system_call_io_and_other_streams_their_own() -> None:
    ours, peer = _socket_pair()
    async with ours, peer:
        assert type(stream_io(ours, bytearray(16))) is SocketIO
    memory, _ = trio.testing.memory_stream_pair()
    assert type(stream_io(memory, bytearray(16))) is StreamIO


async def test_receive_reads_into_the_scratch_buffer_then_sees_the_close() -> None:
    ours, peer = _socket_pair()
    scratch = bytearray(8)
    io = stream_io(ours, scratch)
    async with ours, peer:
        await peer.send_all(b"0123456789")
        first = bytes(await io.receive())
        assert first == b"01234567"  # at most the scratch buffer's size
        assert scratch == bytearray(b"01234567")
        assert bytes(await io.receive()) == b"89"
        await peer.send_eof()
        assert len(await io.receive()) == 0


async def test_replies_the_socket_cannot_take_are_copied_then_all_delivered_in_order() -> None:
    ours, peer = _socket_pair()
    io = stream_io(ours, bytearray(16))
    big = bytearray(b"x" * (8 << 20))  # more than any socket buffer takes at once
    parts: list[bytes | bytearray | memoryview] = [b"head", memoryview(big), b"tail"]
    expected = b"head" + bytes(big) + b"tail"
    async with ours, peer:
        rest = io.send_now(parts)
        assert rest is not None and 0 < len(rest) < len(expected)
        big[:] = b"y" * len(big)  # what was left must not depend on the caller's memory
        async def send_all_of(rest: bytes | bytearray | memoryview) -> None:
            view = memoryview(rest)
            while view:
                sent = await io.send_some(view, math.inf)
                assert sent > 0
                view = view[sent:]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all_of, rest)
            received = await _receive_exactly(peer, len(expected))
        assert received == expected


async def test_small_replies_go_out_at_once() -> None:
    ours, peer = _socket_pair()
    io = stream_io(ours, bytearray(16))
    async with ours, peer:
        assert io.send_now([b"one", b"two", b"three"]) is None
        assert await _receive_exactly(peer, 11) == b"onetwothree"


async def test_a_peer_gone_breaks_the_send() -> None:
    ours, peer = _socket_pair()
    io = stream_io(ours, bytearray(16))
    await peer.aclose()
    async with ours:
        try:
            for _ in range(10):  # the first write may land before the reset is seen
                io.send_now([b"x" * 65536])
        except trio.BrokenResourceError:
            return
    raise AssertionError("writing to a closed peer never failed")


async def test_after_a_read_that_drained_the_socket_the_next_waits_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A peer that waits for each reply has sent nothing more when the server comes back:
    # a read then would only fail (EAGAIN), one system call and a scheduler pass wasted.
    reads: list[int] = []
    readv = os.readv

    def counted(fd: int, buffers: Sequence[bytearray | memoryview]) -> int:
        try:
            count = readv(fd, buffers)
        except BlockingIOError:
            reads.append(-1)
            raise
        reads.append(count)
        return count

    monkeypatch.setattr(os, "readv", counted)
    ours, peer = _socket_pair()
    async with ours, peer:
        io = SocketIO(ours.socket, bytearray(16))
        await peer.send_all(b"first")
        assert bytes(await io.receive()) == b"first"  # read at once: no wait, nothing failed
        async with trio.open_nursery() as nursery:

            async def reply_then_next() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await peer.send_all(b"second")

            nursery.start_soon(reply_then_next)
            assert bytes(await io.receive()) == b"second"
        assert reads == [5, 6]
