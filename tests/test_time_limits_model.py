"""The connection's time limits against a model of them, over many random schedules: a
stream of requests cut into chunks at random places, each chunk after a random pause. The
server must close the connection exactly when the model says (idle timeout after a whole
message, request timeout from a message's first byte, the clock of a message begun with
the end of another starting then), and never earlier, whatever early deadlines and re-arms
happen inside (memlease/server/exchange.py)."""

from __future__ import annotations

import random

import pytest
import trio
from conftest import RunningServer, StartServer
from trio.testing import MockClock

from memlease.core.messages import StatsRequest

REQUEST_TIMEOUT = 2.25
IDLE_TIMEOUT = 3.75
SCHEDULES = 150
# Pauses are whole halves of a second and the timeouts end in a quarter: no chunk arrives
# on the instant a limit ends.
PAUSES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)


def _schedule(rng: random.Random, frame: int) -> list[tuple[float, int]]:
    """(pause before it, size) of each chunk of a stream of whole frames."""
    total = frame * rng.randint(1, 6)
    cuts = sorted(rng.sample(range(1, total), rng.randint(0, min(8, total - 1))))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    return [(rng.choice(PAUSES), size) for size in sizes]


def _closes_at(schedule: list[tuple[float, int]], frame: int) -> float:
    """When the model closes the connection, from its opening at 0."""
    now, received = 0.0, 0
    deadline = IDLE_TIMEOUT
    partial_since: float | None = None
    for pause, size in schedule:
        now += pause
        if now >= deadline:
            return deadline
        whole_before = received // frame
        received += size
        decoded = received // frame > whole_before
        if received % frame == 0:
            partial_since, deadline = None, now + IDLE_TIMEOUT
        elif partial_since is None or decoded:
            partial_since, deadline = now, now + REQUEST_TIMEOUT
    return deadline


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
        schedule = _schedule(rng, len(frame))
        expected = _closes_at(schedule, len(frame))
        assert await _closed_after(server, frame, schedule) == pytest.approx(expected), schedule
