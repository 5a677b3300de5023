"""The trio fleet (``await memlease.open_fleet(...)``) over servers in the test's own trio
run: concurrent tasks share it, each server's connections are pooled, a stopped server is
marked down and one started again on its port is used again."""

from __future__ import annotations

import random

import pytest
import trio
from conftest import RunningServer, StartServer

import memlease
from memlease import Handle, LeaseNotFound, ServerUnavailable
from memlease.server.config_values import Listener


async def _servers(start_server: StartServer, count: int) -> list[RunningServer]:
    return [await start_server("uuid") for _ in range(count)]


def _address(server: RunningServer) -> str:
    host, port = server.address("uuid")
    return f"{host}:{port}"


async def test_concurrent_tasks_share_the_fleet_over_pooled_connections(
    start_server: StartServer,
) -> None:
    servers = await _servers(start_server, 3)
    async with await memlease.open_fleet(
        [_address(s) for s in servers], rng=random.Random(3), connections_per_server=4
    ) as fleet:
        handles: list[Handle] = []

        async def worker(number: int) -> None:
            for round_ in range(10):
                handle = await fleet.lease(512, 60_000)
                await fleet.set(handle, f"{number}/{round_}".encode())
                assert (await fleet.get(handle)).rstrip(b"\0") == f"{number}/{round_}".encode()
                handles.append(handle)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for number in range(12):
                    nursery.start_soon(worker, number)
        ports = {handle.server[1] for handle in handles}
        assert ports == {s.address("uuid")[1] for s in servers}
        figures = await fleet.stats()
        connections = [f.connections for f in figures.values()]  # type: ignore[union-attr]
        # Twelve tasks, at most four connections to each server, at least one used.
        assert all(1 <= count <= 4 for count in connections), connections
        assert sum(f.live_leases for f in figures.values()) == 120  # type: ignore[union-attr]


async def test_a_stopped_server_is_marked_down_and_a_restarted_one_used_again(
    start_server: StartServer,
) -> None:
    servers = await _servers(start_server, 3)
    async with await memlease.open_fleet(
        [_address(s) for s in servers], rng=random.Random(5), dead_timeout=0.2
    ) as fleet:
        handles = [await fleet.lease(128, 60_000) for _ in range(30)]
        for handle in handles:
            await fleet.set(handle, b"kept")
        victim = servers[2]
        port = victim.address("uuid")[1]
        victim.stop()
        await trio.sleep(0.05)
        on_victim = [h for h in handles if h.server[1] == port]
        with trio.fail_after(2):
            with pytest.raises(ServerUnavailable):
                await fleet.get(on_victim[0])
        with pytest.raises(ServerUnavailable, match="marked down"):
            await fleet.get(on_victim[-1])
        for handle in handles:
            if handle.server[1] != port:
                assert (await fleet.get(handle)).startswith(b"kept")

        await start_server("uuid", listeners=(Listener("uuid", port),))
        back = None
        with trio.move_on_after(10):
            for _ in range(200):
                handle = await fleet.lease(128, 60_000)
                if handle.server[1] == port:
                    back = handle
                    break
                await trio.sleep(0.05)
        assert back is not None, "the restarted server took no lease within 10 s"
        with pytest.raises(LeaseNotFound):
            await fleet.get(on_victim[0])
