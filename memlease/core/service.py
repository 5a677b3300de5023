"""The lease service: ``handle(request, now) -> reply``, the one place lease rules apply.

Every refusal comes back as an ErrorReply naming the request's op and lease id; no refusal
escapes ``handle`` as an exception. No clock and no I/O: the server passes ``now`` in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from memlease.core.arena import BuddyArena
from memlease.core.errors import ErrorCode, LeaseError
from memlease.core.leases import LeaseTable
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    LeaseInfo,
    LeaseRequest,
    Op,
    ReadRequest,
    ReleaseRequest,
    RenewRequest,
    Reply,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    WriteRequest,
)


class ConnectionFigures(Protocol):
    """What the server tells the service of its connections, for stats."""

    closed_for_guessing: int

    def __len__(self) -> int: ...


class Service:
    """Applies requests to one LeaseTable.

    A get's Data holds a read-only view of the lease's region, not a copy: whoever handles
    the reply uses (or copies) it before the next request, which may change or free it.

    ``connections`` tells how many connections the server has open, and how many it closed
    for guessing ids, for stats. The
    ``refused`` figure of stats counts refused lease requests; ``refused_requests`` counts
    every refused request of any kind. ``deadlines_moved`` turns True when a request may have
    brought the earliest lease deadline forward (a grant or a renewal); whoever waits for
    that deadline clears it.
    """

    def __init__(self, table: LeaseTable, *, connections: ConnectionFigures | None = None) -> None:
        self.table = table
        self._connections = connections
        self.refused_requests = 0
        self.deadlines_moved = False
        # Dispatch by exact type: one dict lookup per request on the hot path.
        self._handlers: dict[type[Any], Callable[[Any, float], Reply]] = {
            LeaseRequest: self._lease,
            GetRequest: self._get,
            SetRequest: self._set,
            ReadRequest: self._read,
            WriteRequest: self._write,
            RenewRequest: self._renew,
            ReleaseRequest: self._release,
            StatRequest: self._stat,
            StatsRequest: self._stats,
        }

    @classmethod
    def create(
        cls,
        arena_size: int,
        *,
        min_block: int = 32,
        max_ttl_ms: int = 3_600_000,
        max_lease_size: int | None = None,
        connections: ConnectionFigures | None = None,
    ) -> Service:
        """A service over a fresh arena of ``arena_size`` bytes (rounded down to min_block)."""
        arena = BuddyArena(arena_size, min_block=min_block)
        table = LeaseTable(arena, max_ttl_ms=max_ttl_ms, max_lease_size=max_lease_size)
        return cls(table, connections=connections)

    def handle(self, request: Request, now: float) -> Reply:
        """The reply to ``request`` at monotonic time ``now``."""
        handler = self._handlers.get(type(request))
        if handler is None:
            self.refused_requests += 1
            return ErrorReply(
                ErrorCode.UNSUPPORTED,
                f"request type {type(request).__name__} is not supported by this server",
                op=getattr(request, "op", None),
                lease_id=getattr(request, "lease_id", None),
            )
        try:
            return handler(request, now)
        except LeaseError as exc:
            self.refused_requests += 1
            return ErrorReply(
                exc.code, str(exc), op=request.op, lease_id=getattr(request, "lease_id", None)
            )

    def expire(self, now: float, limit: int = 1000) -> int:
        """Free at most ``limit`` leases past their deadline; how many were freed."""
        return self.table.expire(now, limit)

    def next_deadline(self) -> float | None:
        """When the next lease falls due (monotonic seconds), or None with no live lease."""
        return self.table.next_deadline()

    def stats(self, now: float) -> ServerStats:
        """The server's figures. Leases past their deadline but not yet expired still count
        as live until ``expire`` has run."""
        figures = self.table.arena.figures()
        connections = self._connections
        table = self.table
        return ServerStats(
            arena_size=figures.size,
            used=figures.used,
            free=figures.free,
            largest_free=figures.largest_free,
            internal_fragmentation=figures.internal_fragmentation,
            external_fragmentation=figures.external_fragmentation,
            live_leases=len(table),
            granted=table.granted,
            expired=table.expired,
            released=table.released,
            refused=table.refused,
            connections=0 if connections is None else len(connections),
            closed_for_guessing=0 if connections is None else connections.closed_for_guessing,
        )

    # ------------------------------------------------------------------ one per request type

    def _lease(self, request: LeaseRequest, now: float) -> Reply:
        lease_id = self.table.grant(request.size, request.ttl_ms, now, request.id_kind)
        self.deadlines_moved = True
        return Granted(lease_id, request.size, request.ttl_ms)

    def _get(self, request: GetRequest, now: float) -> Reply:
        return Data(Op.GET, request.lease_id, self.table.region(request.lease_id, now))

    def _read(self, request: ReadRequest, now: float) -> Reply:
        data = self.table.read(request.lease_id, request.offset, request.length, now)
        return Data(Op.READ, request.lease_id, data)

    def _set(self, request: SetRequest, now: float) -> Reply:
        self.table.write(request.lease_id, 0, request.data, now)  # a set is a write at 0
        return Done(Op.SET, request.lease_id)

    def _write(self, request: WriteRequest, now: float) -> Reply:
        self.table.write(request.lease_id, request.offset, request.data, now)
        return Done(Op.WRITE, request.lease_id)

    def _renew(self, request: RenewRequest, now: float) -> Reply:
        self.table.renew(request.lease_id, request.ttl_ms, now)
        self.deadlines_moved = True
        return Done(Op.RENEW, request.lease_id)

    def _release(self, request: ReleaseRequest, now: float) -> Reply:
        self.table.release(request.lease_id, now)
        return Done(Op.RELEASE, request.lease_id)

    def _stat(self, request: StatRequest, now: float) -> Reply:
        size, ttl_ms = self.table.stat(request.lease_id, now)
        return LeaseInfo(request.lease_id, size, ttl_ms)

    def _stats(self, request: StatsRequest, now: float) -> Reply:
        return self.stats(now)
