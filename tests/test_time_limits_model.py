"""The connection's time limits against a model of them, over many random schedules: a
stream of requests cut into chunks at random places, each chunk after a random pause. The
server must close the connection exactly when the model says (idle timeout after a whole
message, request timeout from a message's first byte, the clock of a message begun with
the end of another starting then), and never earlier, whatever early deadlines and re-arms
happen inside (memlease/server/connection_task.py). The same model checks the sans-IO rules
alone in test_connection.py."""

from __future__ import annotations

import random

import pytest
import trio
from conftest import RunningServer, StartServer
from time_limits_model import IDLE_TIMEOUT, REQUEST_TIMEOUT, SCHEDULES, closes_at, schedule_of
from trio.testing import MockClock

from memlease.core.messages import StatsRequest


async def _closed_after(
    server: RunningServer, frame: bytes, schedule: list[tuple[float, int]]
) -> float:
    """Send ``schedule``'s chunks of whole frames until the server closes; when it did."""
    stream = frame * (sum(size for _, size in schedule) // len(frame))
    closed: list[float] = []
    async with await server.open_socket("native") as sock:
        opened = trio.current_time()

        async def read_until_closed() -> None:
            try:
                while await sock.receive_some():
                    pass
            except trio.BrokenResourceError:
                pass
            closed.append(trio.current_time() - opened)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until_closed)
            sent = 0
            for pause, size in schedule:
                await trio.sleep(pause)
                if closed:
                    break
                try:
                    await sock.send_all(stream[sent : sent + size])
                except trio.BrokenResourceError:
                    break
                sent += size
    (after,) = closed
    return after


async def test_random_schedules_close_exactly_when_the_model_says(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    server = await start_server(
        "native", request_timeout=REQUEST_TIMEOUT, idle_timeout=IDLE_TIMEOUT
    )
    frame = server.registry.get("native").client_codec(4096).encode_request(StatsRequest())
    rng = random.Random(20261125)
    for _ in range(SCHEDULES):
        schedule = schedule_of(rng, len(frame))
        expected = closes_at(schedule, len(frame))
        assert await _closed_after(server, frame, schedule) == pytest.approx(expected), schedule
