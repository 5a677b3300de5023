"""Expiry, end to end on trio's MockClock (autojump): deadlines to the millisecond, blocks
returned to the arena and coalesced, the expiry task woken early and working in batches."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer

from memlease import LeaseNotFound, NoRoom
from memlease.core.messages import Granted, IdKind, LeaseRequest
from memlease.server.expiry import ExpiryTask

ARENA = 4096
MIN_BLOCK = 32


async def test_a_lease_is_valid_1ms_before_its_deadline_and_gone_at_it(
    server: RunningServer, protocol: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with await server.connect(protocol) as client:
        start = trio.current_time()
        lease_id = (await client.lease(10, 1000)).lease_id
        await trio.sleep_until(start + 0.999)
        assert await client.get(lease_id) == bytes(10)
        assert (await client.stat(lease_id)).ttl_ms == 1
        await trio.sleep_until(start + 1.0)
        with pytest.raises(LeaseNotFound):
            await client.get(lease_id)


async def test_expired_blocks_are_reclaimed_and_coalesced(
    start_server: StartServer, protocol: str, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(protocol, arena_size=ARENA, min_block=MIN_BLOCK, expiry_batch=10)
    id_kind = IdKind.UUID if protocol == "uuid" else IdKind.INT
    async with await server.connect(protocol) as client:
        start = trio.current_time()
        # deadlines spread over 1000..1127 ms, so that the expiry task wakes many times
        fill = [LeaseRequest(MIN_BLOCK, 1000 + n, id_kind) for n in range(ARENA // MIN_BLOCK)]
        replies = await client.pipeline(fill)
        assert all(isinstance(reply, Granted) for reply in replies)
        with pytest.raises(NoRoom):
            await client.lease(MIN_BLOCK, 60_000)
        await trio.sleep_until(start + 1.127 + 0.002)
        figures = await client.stats()
        assert figures.expired == ARENA // MIN_BLOCK
        assert (figures.live_leases, figures.used, figures.largest_free) == (0, 0, ARENA)
        whole = await client.lease(ARENA, 60_000)
        assert whole.size == ARENA


async def test_an_earlier_deadline_wakes_the_expiry_task(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("network", arena_size=ARENA)
    async with await server.connect("network") as client:
        start = trio.current_time()
        late = await client.lease(100, 60_000)
        await client.lease(100, 1000)
        await trio.sleep_until(start + 1.002)
        assert (await client.stats()).expired == 1
        await client.renew(late.lease_id, 500)
        await trio.sleep_until(trio.current_time() + 0.502)
        figures = await client.stats()
        assert (figures.expired, figures.live_leases, figures.used) == (2, 0, 0)


class _ExpiringLeases:
    """A service stand-in: ``due`` leases all past their deadline at time 0."""

    def __init__(self, due: int, log: list[str]) -> None:
        self.due = due
        self.log = log
        self.calls = 0

    def expire(self, now: float, limit: int) -> int:
        self.calls += 1
        freed = min(limit, self.due)
        self.due -= freed
        self.log.append(f"expire {freed}")
        return freed

    def next_deadline(self) -> float | None:
        return 0.0 if self.due else None


async def test_expiry_runs_in_bounded_batches_letting_others_run_between(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[str] = []
    leases = _ExpiringLeases(35, log)
    nursery.start_soon(ExpiryTask(leases, batch=10).run)

    async def other() -> None:
        for _ in range(4):
            log.append("other")
            await trio.lowlevel.checkpoint()

    nursery.start_soon(other)
    await trio.sleep(1)
    batches = [entry for entry in log if entry.startswith("expire")]
    assert batches == ["expire 10", "expire 10", "expire 10", "expire 5"]
    first, last = log.index("expire 10"), log.index("expire 5")
    assert "other" in log[first:last]


async def test_a_deadline_that_will_not_expire_is_retried_without_spinning(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    class Stuck(_ExpiringLeases):
        def expire(self, now: float, limit: int) -> int:
            self.calls += 1
            return 0

    stuck = Stuck(1, [])
    nursery.start_soon(ExpiryTask(stuck, batch=10).run)
    await trio.sleep(1)
    assert 0 < stuck.calls <= math.ceil(1 / 0.001) + 1


async def test_leases_ask_for_the_room_of_leases_expired_a_moment_ago_and_get_it(
    start_server: StartServer, protocol: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The issue's report, at 1/1024 scale: an arena filled by leases that all expire at one
    instant, then 60 leases of 1/64 of it asked for at that instant, before the expiry task
    (4 leases a batch here) could have freed their room. The grants free it themselves."""
    arena = 64 * 1024
    server = await start_server(protocol, arena_size=arena, min_block=MIN_BLOCK, expiry_batch=4)
    id_kind = IdKind.UUID if protocol == "uuid" else IdKind.INT
    async with await server.connect(protocol) as client:
        start = trio.current_time()
        fill = [LeaseRequest(MIN_BLOCK, 1000, id_kind)] * (arena // MIN_BLOCK)
        assert all(isinstance(reply, Granted) for reply in await client.pipeline(fill))
        await trio.sleep_until(start + 1.0)
        replies = await client.pipeline([LeaseRequest(1024, 60_000, id_kind)] * 60)
        assert sum(isinstance(reply, Granted) for reply in replies) == 60
        await trio.sleep(0.1)
        figures = await client.stats()
        assert (figures.live_leases, figures.expired, figures.refused) == (60, arena // 32, 0)


class _SlicedLeases(_ExpiringLeases):
    """Each expire call takes 2 ms of (pretend) work; records trio's time at each call."""

    def __init__(self, due: int) -> None:
        super().__init__(due, [])
        self.work = 0.0
        self.called_at: list[float] = []

    def expire(self, now: float, limit: int) -> int:
        self.called_at.append(trio.current_time())
        self.work += 0.002
        return super().expire(now, limit)


async def test_expiry_works_batches_back_to_back_for_a_slice_then_pauses(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    leases = _SlicedLeases(100)
    task = ExpiryTask(leases, batch=10, work_slice=0.005, clock=lambda: leases.work)
    start = trio.current_time()
    nursery.start_soon(task.run)
    await trio.sleep(1)
    # 3 batches (6 ms of work) fill a 5 ms slice; then a 1 ms pause, then the next slice.
    pauses = [round((at - start) * 1000) for at in leases.called_at]
    assert pauses == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert leases.due == 0
