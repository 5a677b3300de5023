"""A connection's time limits stay exact on a busy connection, whose cancel scope's deadline
may be an early bound that the server re-arms rather than moves (memlease/exchange.py): busy
for longer than either timeout costs it nothing; once idle, or stalled in a message, or caught
by shutdown half-way through one, it is cut off exactly when the limit says."""

from __future__ import annotations

import logging
import os
import signal
from functools import partial

import pytest
import trio
from conftest import StartServer, make_config
from trio.testing import MockClock

from memlease.messages import StatsRequest
from memlease.protocol import ProtocolRegistry
from memlease.server import BoundListener, serve

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
