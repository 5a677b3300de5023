"""memlease_request_seconds as the connection task counts it: from the request's last byte to
its reply all in the kernel's hands, a wait for memory and a client slow to read included."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_connection import _wire
from trio.lowlevel import ParkingLot

from memlease.core.messages import OPS, Op, StatsRequest
from memlease.core.service import Service
from memlease.protocol import DEFAULT_MAX_MESSAGE, load_protocols
from memlease.server.budget import MemoryBudget
from memlease.server.connection import Connection, Limits
from memlease.server.connection_set import OpenConnection
from memlease.server.connection_task import drive
from memlease.server.request_figures import RequestFigures
from memlease.server.socket_io import StreamIO

LIMITS = Limits(DEFAULT_MAX_MESSAGE, request_timeout=100.0, idle_timeout=100.0)
CODEC = load_protocols(warn=False).get("network").server_codec


def _stats_times(figures: RequestFigures) -> tuple[int, float]:
    times = figures.times[OPS.index(Op.STATS)]
    return times.count, times.total


async def test_a_wait_for_memory_before_answering_counts_in_the_request_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    figures, room = RequestFigures(), ParkingLot()
    budget = MemoryBudget(4 << 20, room.unpark_all)
    connection = Connection(
        CODEC(DEFAULT_MAX_MESSAGE), Service.create(1 << 20), LIMITS,
        trio.current_time(), peer="test", protocol="network", figures=figures, budget=budget,
    )  # fmt: skip
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive, StreamIO(server, 65536), OpenConnection(connection), dict, room)
        await trio.testing.wait_all_tasks_blocked()  # the task waits for bytes
        budget.held = budget.limit  # other connections hold all the room for replies
        await client.send_all(_wire("network", StatsRequest()))
        await trio.sleep(2.0)
        assert _stats_times(figures) == (0, 0.0)
        budget.held = 0
        room.unpark_all()
        assert await client.receive_some(65536)
        count, seconds = _stats_times(figures)
        assert count == 1 and seconds == pytest.approx(2.0)
        nursery.cancel_scope.cancel()


async def test_a_reply_counts_once_the_client_took_it_over_a_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    figures = RequestFigures()
    connection = Connection(
        CODEC(DEFAULT_MAX_MESSAGE), Service.create(1 << 20), LIMITS,
        trio.current_time(), peer="test", protocol="network", figures=figures,
    )  # fmt: skip
    # A stream that takes bytes only as the client reads them, as a TLS stream's send waits.
    client, server = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive, StreamIO(server, 65536), OpenConnection(connection), dict)
        await client.send_all(_wire("network", StatsRequest()))
        await trio.sleep(3.0)  # the client reads nothing for 3 s
        assert _stats_times(figures) == (0, 0.0)
        assert await client.receive_some(65536)
        await trio.testing.wait_all_tasks_blocked()
        count, seconds = _stats_times(figures)
        assert count == 1 and seconds == pytest.approx(3.0)
        nursery.cancel_scope.cancel()
