"""A connection's time limits stay exact on a busy connection, whose cancel scope's deadline
may be an early bound that the server re-arms rather than moves
(memlease/server/connection_task.py): busy for longer than either timeout costs it nothing;
once idle, or stalled in a message, or caught by shutdown half-way through one, it is cut off
exactly when the limit says. An early
deadline falling due in the same scheduler pass as a request is not taken for a timeout of
that request's reply."""

from __future__ import annotations

import logging
import os
import signal
import socket
from functools import partial

import pytest
import trio
import trio.testing
from conftest import StartServer, make_config
from trio.testing import MockClock

from memlease.client.trio_client import connect
from memlease.core.messages import GetRequest, StatsRequest
from memlease.protocol import ProtocolRegistry
from memlease.server.run import BoundListener, serve

Caplog = pytest.LogCaptureFixture


def _stats_frame(registry: ProtocolRegistry) -> bytes:
    return registry.get("native").client_codec(4096).encode_request(StatsRequest())


async def _reply(stream: trio.SocketStream) -> None:
    assert await stream.receive_some(), "the server closed the connection"


async def _eof_after(stream: trio.SocketStream) -> float:
    started = trio.current_time()
    while await stream.receive_some():
        pass
    return trio.current_time() - started


async def _in_two_halves(stream: trio.SocketStream, frame: bytes, gap: float) -> None:
    # The first half starts the request timeout's clock, which moves the deadline earlier.
    await stream.send_all(frame[:3])
    await trio.sleep(gap)
    await stream.send_all(frame[3:])
    await _reply(stream)


async def test_a_connection_busy_for_longer_than_both_timeouts_is_closed_once_idle(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    server = await start_server("native", request_timeout=2.5, idle_timeout=4.0)
    frame = _stats_frame(server.registry)
    async with await server.open_socket("native") as stream:
        started = trio.current_time()
        while trio.current_time() - started < 30.0:
            await trio.sleep(3.0)
            await _in_two_halves(stream, frame, gap=1.0)
        assert await _eof_after(stream) == pytest.approx(4.0)


async def test_a_message_stalled_on_a_busy_connection_is_cut_at_the_request_timeout(
    start_server: StartServer, autojump_clock: MockClock, caplog: Caplog
) -> None:
    server = await start_server("native", request_timeout=2.5, idle_timeout=60.0)
    frame = _stats_frame(server.registry)
    async with await server.open_socket("native") as stream:
        for _ in range(5):
            await trio.sleep(1.0)
            await _in_two_halves(stream, frame, gap=2.0)
        await stream.send_all(frame[:3])
        assert await _eof_after(stream) == pytest.approx(2.5)
    assert any("took over 2.5s to arrive" in r.getMessage() for r in caplog.records)


async def test_shutdown_gives_a_half_sent_message_the_whole_grace_on_a_busy_connection(
    registry: ProtocolRegistry, autojump_clock: MockClock, caplog: Caplog
) -> None:
    config = make_config("native", request_timeout=10.0, idle_timeout=60.0, shutdown_grace=5.0)
    frame = _stats_frame(registry)
    async with trio.open_nursery() as nursery:
        listeners: list[BoundListener] = await nursery.start(partial(serve, config))
        async with await trio.open_tcp_stream("127.0.0.1", listeners[0].port) as stream:
            started = trio.current_time()
            await _in_two_halves(stream, frame, gap=1.0)  # the deadline is now started + 10
            await trio.sleep(7.0)
            await stream.send_all(frame[:3])  # its request timeout would end at started + 18
            await trio.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)  # the grace ends at started + 14
            await _eof_after(stream)
            assert trio.current_time() - started == pytest.approx(14.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("still sending a message when the shutdown grace ended" in m for m in warnings)


async def test_an_early_deadline_due_as_a_request_comes_does_not_cut_its_reply(
    start_server: StartServer, mock_clock: MockClock, caplog: Caplog
) -> None:
    # The clock moves only when told: the old early deadline and the request's bytes then
    # come in one scheduler pass, and the reply (8 MiB, to a slow reader) has to wait.
    big = 8 << 20
    server = await start_server(
        "native", arena_size=4 * big, max_message=2 * big, request_timeout=10.0, idle_timeout=60.0
    )
    async with await connect(server.address(), registry=server.registry) as client:
        lease_id = (await client.lease(big, 3_600_000)).lease_id
        await client.set(lease_id, b"v" * big)
    frame = _stats_frame(server.registry)
    get = server.registry.get("native").client_codec(2 * big).encode_request(GetRequest(lease_id))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.address())
    sock.setblocking(False)
    with sock:
        await trio.testing.wait_all_tasks_blocked()
        sock.send(frame[:3])  # a message begun at 0: the deadline moves earlier, to 10
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1.0)
        sock.send(frame[3:])  # whole at 1: the limit is 61, the scope still says 10
        await trio.testing.wait_all_tasks_blocked()
        assert sock.recv(65536)
        sock.send(get)
        mock_clock.jump(10.0)
        received = 0
        while received < big:
            await trio.lowlevel.wait_readable(sock)
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
    assert received >= big
    assert not [r for r in caplog.records if "take its replies" in r.getMessage()]


async def test_the_idle_timeout_counts_from_the_end_of_a_slow_send(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    # 30 gets of 32 KiB: replies copied (not views), under 1 MiB, so one send at the end of
    # the batch, to a reader that takes seconds over them.
    server = await start_server("native", request_timeout=60.0, idle_timeout=5.0)
    async with await connect(server.address(), registry=server.registry) as client:
        lease_id = (await client.lease(32 * 1024, 3_600_000)).lease_id
    get = server.registry.get("native").client_codec(4096).encode_request(GetRequest(lease_id))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.address())
    sock.setblocking(False)
    with sock:
        sock.send(get * 30)
        asked_at = trio.current_time()
        received = 0
        while received < 30 * 32 * 1024:
            await trio.sleep(0.05)
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            assert chunk, f"closed after {received} bytes"
            received += len(chunk)
        read_at = trio.current_time()
        assert read_at - asked_at > 2.0, "not slow enough to tell the two limits apart"
        while True:
            await trio.lowlevel.wait_readable(sock)
            if not sock.recv(1 << 20):
                break
    # Idle from when the server's last write went into its socket buffer, a little before
    # the last byte was read here: not from when the gets came.
    assert 4.0 < trio.current_time() - read_at <= 5.0
