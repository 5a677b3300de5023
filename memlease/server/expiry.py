"""The expiry task: returns expired leases' blocks to the arena soon after their deadlines.

A lease past its deadline is already refused by the lease table whether or not this task has
run; this task only reclaims memory, in bounded batches with a checkpoint between them so that
a million leases expiring at once never stall the clients. (A grant without room does not wait
for it: the lease table frees expired leases itself first.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import trio

RETRY_AFTER = 0.001
"""Seconds to wait before looking again when the earliest deadline has passed yet nothing
expired (a deadline rounded the other way than the clock): never a busy loop."""


BETWEEN_SLICES = 0.001
"""Seconds the expiry task leaves to the clients after each slice of work: between batches
a bare checkpoint lets each connection serve one batch of requests per expiry batch; a pause
lets it serve as many as it can."""

SLICE = 0.005
"""Seconds of work (batches, with a checkpoint after each) before a pause. A pause after
every batch of 1,000 leases (about 1 ms of work) held expiry to 0.2-0.45M leases a second,
since a 1 ms sleep takes 1 to 2 ms; 5 ms slices doubled it (docs/benchmarks.md). A request
waits at most one batch either way."""


class Expirable(Protocol):
    deadlines_moved: bool

    def expire(self, now: float, limit: int) -> int: ...

    def next_deadline(self) -> float | None: ...


class ExpiryTask:
    """Sleeps until the earliest lease deadline; :meth:`deadline_may_have_moved` wakes it
    earlier when a new lease or a renewal brings the earliest deadline forward."""

    def __init__(
        self,
        service: Expirable,
        *,
        batch: int,
        work_slice: float = SLICE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._service = service
        self._batch = max(1, batch)
        self._slice = work_slice
        # Real time, not trio's clock, which a test's MockClock holds still while work runs.
        self._clock = clock
        self._sleep = trio.CancelScope()

    def deadline_may_have_moved(self) -> None:
        """Call after handling requests: wakes the task earlier if they granted or renewed a
        lease that is now the first to end."""
        service = self._service
        if not service.deadlines_moved:
            return
        service.deadlines_moved = False
        deadline = service.next_deadline()
        if deadline is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline

    async def run(self) -> None:
        """Run until cancelled."""
        service = self._service
        retry_at = -math.inf
        while True:
            deadline = service.next_deadline()
            with trio.CancelScope() as self._sleep:
                self._sleep.deadline = math.inf if deadline is None else max(deadline, retry_at)
                await trio.sleep_forever()
            now = trio.current_time()
            freed = await self._expire_all(now)
            retry_at = now + RETRY_AFTER if freed == 0 else -math.inf

    async def _expire_all(self, now: float) -> int:
        clock = self._clock
        slice_ends = clock() + self._slice
        total = 0
        while True:
            freed = self._service.expire(now, self._batch)
            total += freed
            if freed < self._batch:
                return total
            if clock() >= slice_ends:
                await trio.sleep(BETWEEN_SLICES)
                slice_ends = clock() + self._slice
            else:
                await trio.lowlevel.checkpoint()
            # The time each batch is freed at: the expiry lag counts to it, not to the wake-up.
            now = trio.current_time()
