"""Shutdown on a connection whose scope's deadline is an early bound (connection_task.py):
the drain and the grace hold even when that deadline falls due in the scheduler pass in
which shutdown begins, and a message begun during the drain gets the grace.

The connection runs over a socket pair on a clock that moves only when told. trio runs the
tasks of one pass in an order it draws at random; ``order`` pins it (through trio's private
random source, so the race can be shown both ways) with the shutdown first or last."""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from memlease.core.messages import StatsRequest
from memlease.core.service import Service
from memlease.protocol import ProtocolRegistry, ProtocolSpec
from memlease.server.connection import Connection, Limits
from memlease.server.connection_set import ConnectionSet, OpenConnection
from memlease.server.connection_task import drive
from memlease.server.socket_io import SocketIO

_SHUTTER: list[object] = []  # the task that calls shut_down


@pytest.fixture(params=["shutdown first", "connection first"])
def order(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    from trio._core import _run

    if not isinstance(getattr(_run, "_r", None), random.Random):
        pytest.skip("this trio has no random source to pin the order of a pass with")
    shutdown_first = request.param == "shutdown first"

    class Pinned(random.Random):
        # trio runs a pass's batch reversed or not (random() < 0.5), or shuffled under
        # pytest-trio's deterministic scheduling: either way, the shutter as chosen
        def random(self) -> float:
            return 0.1 if shutdown_first else 0.9

        def shuffle(self, batch: Any) -> None:  # type: ignore[override]
            if _SHUTTER and _SHUTTER[0] in batch:
                batch.remove(_SHUTTER[0])
                if shutdown_first:
                    batch.append(_SHUTTER[0])
                else:
                    batch.insert(0, _SHUTTER[0])

    monkeypatch.setattr(_run, "_r", Pinned())
    _SHUTTER.clear()
    return str(request.param)


class _Exchange:
    """One connection's exchange over a socket pair, as the server runs it."""

    def __init__(self, spec: ProtocolSpec) -> None:
        self.spec = spec
        self.ours, self.peer = socket.socketpair()
        self.ours.setblocking(False)
        self.peer.setblocking(False)
        self.service = Service.create(1 << 20)
        self.connections = ConnectionSet(10)
        self.reason: str | None = None
        self.ended_at: float | None = None

    async def run(self) -> None:
        limits = Limits(max_message=1 << 20, request_timeout=10.0, idle_timeout=60.0)
        codec = self.spec.server_codec(limits.max_message)
        now = trio.current_time()
        connection = Connection(
            codec, self.service, limits, now, peer="peer", protocol=self.spec.name
        )
        entry = OpenConnection(connection)
        self.connections.add(entry)
        await drive(SocketIO(self.ours, bytearray(65536)), entry, lambda: None)
        assert connection.ending is not None
        self.reason = connection.ending.value
        self.ended_at = trio.current_time()

    def replies(self) -> bytes:
        try:
            return self.peer.recv(65536)
        except BlockingIOError:
            return b""


@pytest.fixture
def served(registry: ProtocolRegistry) -> _Exchange:
    return _Exchange(registry.get("native"))


def _stats(served: _Exchange) -> bytes:
    return served.spec.client_codec(4096).encode_request(StatsRequest())


async def _shut_down_as_deadline_falls_due(
    clock: MockClock, served: _Exchange, at: float, grace: float
) -> None:
    _SHUTTER.append(trio.lowlevel.current_task())
    clock.jump(at - trio.current_time())
    await trio.lowlevel.cancel_shielded_checkpoint()  # back in the pass that expires it
    served.connections.shut_down(grace)


async def test_a_half_sent_message_keeps_its_grace(
    mock_clock: MockClock, served: _Exchange, order: str
) -> None:
    stats = _stats(served)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.run)
        await trio.testing.wait_all_tasks_blocked()
        served.peer.send(stats[:3])  # begun at 0: the deadline moves to 10
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(8.0)
        served.peer.send(stats[3:] + stats[:3])  # at 8: one answered, the next begun (limit 18)
        await trio.testing.wait_all_tasks_blocked()
        assert served.replies()
        await _shut_down_as_deadline_falls_due(mock_clock, served, at=10.0, grace=5.0)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(2.0)
        served.peer.send(stats[3:])  # at 12, within the grace (until 15)
        await trio.testing.wait_all_tasks_blocked()
    assert served.replies(), f"no reply: {served.reason!r} at {served.ended_at}"
    assert (served.reason, served.ended_at) == ("server shutting down", 12.0)


async def test_a_waiting_connection_keeps_its_drain(
    mock_clock: MockClock, served: _Exchange, order: str
) -> None:
    stats = _stats(served)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.run)
        await trio.testing.wait_all_tasks_blocked()
        served.peer.send(stats[:3])  # the deadline moves to 10
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1.0)
        served.peer.send(stats[3:])  # answered at 1: the limit is 61, the deadline still 10
        await trio.testing.wait_all_tasks_blocked()
        assert served.replies()
        await _shut_down_as_deadline_falls_due(mock_clock, served, at=10.0, grace=5.0)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.05)
        served.peer.send(stats)  # on its way as shutdown began: the drain serves it
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1.0)
    assert served.replies(), f"no reply: {served.reason!r} at {served.ended_at}"


async def test_a_message_begun_in_the_drain_gets_the_grace(
    mock_clock: MockClock, served: _Exchange
) -> None:
    stats = _stats(served)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.run)
        await trio.testing.wait_all_tasks_blocked()
        served.connections.shut_down(5.0)  # waiting at 0: the drain, until 0.1
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.05)
        served.peer.send(stats + stats[:3])  # one request and the start of the next
        await trio.testing.wait_all_tasks_blocked()
        assert served.replies()
        mock_clock.jump(1.0)  # past the drain, within the grace
        await trio.testing.wait_all_tasks_blocked()
        assert served.reason is None, f"cut at {served.ended_at}: {served.reason}"
        served.peer.send(stats[3:])
        await trio.testing.wait_all_tasks_blocked()
    assert served.replies() and served.reason == "server shutting down"
