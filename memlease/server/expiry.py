"""The expiry task: returns expired leases' blocks to the arena soon after their deadlines.

A lease past its deadline is already refused by the lease table whether or not this task has
run; this task only reclaims memory, in bounded batches with a checkpoint between them so that
a million leases expiring at once never stall the clients.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio

RETRY_AFTER = 0.001
"""Seconds to wait before looking again when the earliest deadline has passed yet nothing
expired (a deadline rounded the other way than the clock): never a busy loop."""


BETWEEN_BATCHES = 0.001
"""Seconds the expiry task leaves to the clients between two batches: a bare checkpoint
would let each connection serve one batch of requests per expiry batch, a slice of time
lets it serve as many as it can."""


class Expirable(Protocol):
    deadlines_moved: bool

    def expire(self, now: float, limit: int) -> int: ...

    def next_deadline(self) -> float | None: ...


class ExpiryTask:
    """Sleeps until the earliest lease deadline; :meth:`deadline_may_have_moved` wakes it
    earlier when a new lease or a renewal brings the earliest deadline forward."""

    def __init__(self, service: Expirable, *, batch: int) -> None:
        self._service = service
        self._batch = max(1, batch)
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
        total = 0
        while True:
            freed = self._service.expire(now, self._batch)
            total += freed
            if freed < self._batch:
                return total
            await trio.sleep(BETWEEN_BATCHES)
