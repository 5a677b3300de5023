"""The lease service: ``handle(request, now) -> reply``, the one place lease rules apply.

Every refusal comes back as an ErrorReply naming the request's op and lease id; no refusal
escapes ``handle`` as an exception. No clock and no I/O: the server passes ``now`` in.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from typing import Final, Protocol

import memlease
from memlease.core.arena import BuddyArena
from memlease.core.errors import BadRequest, ErrorCode, LeaseError, TooMany
from memlease.core.leases import LeaseTable
from memlease.core.messages import (
    OPS,
    ArenaMapReply,
    ArenaMapRequest,
    CasRequest,
    CasResult,
    Data,
    Done,
    ErrorReply,
    GetRequest,
    GetsRequest,
    Granted,
    GrantedMany,
    IdList,
    LeaseInfo,
    LeaseManyRequest,
    LeaseRequest,
    Op,
    ReadRequest,
    ReleaseManyRequest,
    ReleaseRequest,
    RenewManyRequest,
    RenewRequest,
    Reply,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)
from memlease.core.sessions import Session

SESSION_BATCH: Final = 1000
"""Bound leases and watches a closing connection ends at once; more go in batches."""

MAX_BATCH: Final = 10_000
"""Leases one request may name or ask for, by default (``limits.max_batch``): a batch is
handled in one go, and 10,000 grants or renewals hold every other client for ~10-30 ms."""

MAX_WATCHES: Final = 1_000_000
"""Watches all connections together may hold at once, by default (``limits.max_watches``):
each costs the server about 200 B, so 1,000,000 cost about 200 MB at most."""

# An Enum member looked up on its class is a Python-level call (about 50 ns) in 3.11: the
# replies of single-lease requests take these names instead.
_GET: Final = Op.GET
_GETS: Final = Op.GETS
_READ: Final = Op.READ
_SET: Final = Op.SET
_WRITE: Final = Op.WRITE
_RENEW: Final = Op.RENEW
_RELEASE: Final = Op.RELEASE


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

    def __init__(
        self,
        table: LeaseTable,
        *,
        connections: ConnectionFigures | None = None,
        max_batch: int = MAX_BATCH,
        max_watches: int = MAX_WATCHES,
        started: float = 0.0,
    ) -> None:
        self.table = table
        self.started = started
        """When the server started (monotonic seconds, as ``now``): stats' uptime counts
        from it."""
        self._connections = connections
        self.max_batch = max_batch
        self.max_watches = max_watches
        self.refused_requests = 0
        self.deadlines_moved = False
        # Closed connections' sessions with bound leases or watches still to end.
        self._ending: deque[Session] = deque()
        # Counting: one list item per op (the order of OPS), so a request costs one list
        # increment and no Enum hash.
        self.requests = [0] * len(OPS)
        """Requests handled (refused ones too), per op in the order of OPS."""
        self.misses = 0
        """Reads (get, gets, read, stat) refused because their id is unknown or expired."""

    @classmethod
    def create(
        cls,
        arena_size: int,
        *,
        min_block: int = 32,
        max_ttl_ms: int = 3_600_000,
        max_lease_size: int | None = None,
        connections: ConnectionFigures | None = None,
        max_batch: int = MAX_BATCH,
        max_watches: int = MAX_WATCHES,
        started: float = 0.0,
    ) -> Service:
        """A service over a fresh arena of ``arena_size`` bytes (rounded down to min_block)."""
        arena = BuddyArena(arena_size, min_block=min_block)
        table = LeaseTable(arena, max_ttl_ms=max_ttl_ms, max_lease_size=max_lease_size)
        return cls(
            table,
            connections=connections,
            max_batch=max_batch,
            max_watches=max_watches,
            started=started,
        )

    def handle(self, request: object, now: float, session: Session | None = None) -> Reply:
        """The reply to ``request`` at monotonic time ``now``, from the connection whose
        ``session`` it is (None: bound leases and watches are refused). ``request`` is a
        :data:`Request`; anything else (a codec's own type) is refused as unsupported. It is
        typed ``object`` so that the compiled build refuses it too, rather than failing its
        type check."""
        # By exact type, the common requests first: compiled, each test is one comparison and
        # each handler a direct call, where a table of bound methods cost a lookup and a
        # generic call per request. Each counts itself at its op's place in OPS.
        requests = self.requests
        try:
            if type(request) is GetRequest:
                requests[_AT_GET] += 1
                return self._get(request, now)
            if type(request) is SetRequest:
                requests[_AT_SET] += 1
                return self._set(request, now)
            if type(request) is LeaseRequest:
                requests[_AT_LEASE] += 1
                return self._lease(request, now, session)
            if type(request) is ReadRequest:
                requests[_AT_READ] += 1
                return self._read(request, now)
            if type(request) is WriteRequest:
                requests[_AT_WRITE] += 1
                return self._write(request, now)
            if type(request) is RenewRequest:
                requests[_AT_RENEW] += 1
                return self._renew(request, now)
            if type(request) is ReleaseRequest:
                requests[_AT_RELEASE] += 1
                return self._release(request, now)
            if type(request) is GetsRequest:
                requests[_AT_GETS] += 1
                return self._gets(request, now)
            if type(request) is CasRequest:
                requests[_AT_CAS] += 1
                return self._cas(request, now)
            if type(request) is StatRequest:
                requests[_AT_STAT] += 1
                return self._stat(request, now)
            if type(request) is StatsRequest:
                requests[_AT_STATS] += 1
                return self.stats(now)
            if type(request) is LeaseManyRequest:
                requests[_AT_LEASE_MANY] += 1
                return self._lease_many(request, now, session)
            if type(request) is RenewManyRequest:
                requests[_AT_RENEW_MANY] += 1
                return self._renew_many(request, now)
            if type(request) is ReleaseManyRequest:
                requests[_AT_RELEASE_MANY] += 1
                return self._release_many(request, now)
            if type(request) is WatchRequest:
                requests[_AT_WATCH] += 1
                return self._watch(request, now, session)
            if type(request) is UnwatchRequest:
                requests[_AT_UNWATCH] += 1
                return self._unwatch(request, now, session)
            if type(request) is ArenaMapRequest:
                requests[_AT_ARENA_MAP] += 1
                return self._arena_map()
        except LeaseError as exc:
            self.refused_requests += 1
            if exc.code is ErrorCode.NOT_FOUND and type(request) in _READ_REQUESTS:
                self.misses += 1
            return ErrorReply(
                exc.code,
                str(exc),
                op=getattr(request, "op", None),
                lease_id=getattr(request, "lease_id", None),
            )
        self.refused_requests += 1
        # Named only as far as the reply can carry it: any op or id may come with a type
        # this server does not know.
        op = getattr(request, "op", None)
        lease_id = getattr(request, "lease_id", None)
        return ErrorReply(
            ErrorCode.UNSUPPORTED,
            f"request type {type(request).__name__} is not supported by this server",
            op=op if type(op) is Op else None,
            lease_id=lease_id if type(lease_id) is int or type(lease_id) is uuid.UUID else None,
        )

    def expire(self, now: float, limit: int = 1000) -> int:
        """Do at most ``limit`` of the work that falls due by ``now``: first the rest of
        closed connections' bound leases and watches, then leases past their deadline; how
        much was done."""
        done = 0
        ending = self._ending
        while ending and done < limit:
            done += self.table.end_session(ending[0], now, limit - done)
            if not (ending[0].bound or ending[0].watching):
                ending.popleft()
        if done < limit:
            done += self.table.expire(now, limit - done)
        return done

    def end_session(self, session: Session, now: float) -> None:
        """A connection closed at ``now``: release its bound leases (telling their watchers)
        and drop its watches. The first SESSION_BATCH at once; the rest, if any, with the
        expired leases (``expire``), in batches between other work: one closing connection
        must not hold every other client for as long as its leases take."""
        self.table.end_session(session, now, SESSION_BATCH)
        if session.bound or session.watching:
            self._ending.append(session)
            self.deadlines_moved = True

    def next_deadline(self) -> float | None:
        """When work next falls due (monotonic seconds): at once while closed connections'
        bound leases remain to release, else the next lease deadline, or None with no live
        lease."""
        if self._ending:
            return -math.inf
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
            uptime_ms=max(int((now - self.started) * 1000), 0),
            version=memlease.__version__,
            hits=self.hits,
            misses=self.misses,
            requests=tuple(self.requests),
            expiry_lag_us=int(table.expiry_lag.total * 1_000_000),
            expiry_behind_us=self._behind_us(now),
        )

    def _behind_us(self, now: float) -> int:
        deadline = self.table.next_deadline()
        if deadline is None or deadline >= now:
            return 0
        return int((now - deadline) * 1_000_000)

    @property
    def hits(self) -> int:
        """Reads (get, gets, read, stat) that found a live lease: every read handled but the
        misses. A read of a live lease refused for its range is a hit: the lease was there."""
        requests = self.requests
        return sum(requests[i] for i in _READ_SLOTS) - self.misses

    # ------------------------------------------------------------------ one per request type

    def _lease(self, request: LeaseRequest, now: float, session: Session | None) -> Reply:
        owner = _owner(session) if request.bound else None
        lease_id = self.table.grant(request.size, request.ttl_ms, now, request.id_kind, owner)
        self.deadlines_moved = True
        return Granted(lease_id, request.size, request.ttl_ms)

    def _get(self, request: GetRequest, now: float) -> Reply:
        return Data(_GET, request.lease_id, self.table.region(request.lease_id, now))

    def _gets(self, request: GetsRequest, now: float) -> Reply:
        region, version = self.table.gets(request.lease_id, now)
        return Data(_GETS, request.lease_id, region, version)

    def _read(self, request: ReadRequest, now: float) -> Reply:
        data = self.table.read(request.lease_id, request.offset, request.length, now)
        return Data(_READ, request.lease_id, data)

    def _set(self, request: SetRequest, now: float) -> Reply:
        version = self.table.write(request.lease_id, 0, request.data, now)  # a write at 0
        return Done(_SET, request.lease_id, version)

    def _write(self, request: WriteRequest, now: float) -> Reply:
        version = self.table.write(request.lease_id, request.offset, request.data, now)
        return Done(_WRITE, request.lease_id, version)

    def _cas(self, request: CasRequest, now: float) -> Reply:
        swapped, version = self.table.cas(
            request.lease_id, request.version, request.offset, request.data, now
        )
        return CasResult(request.lease_id, swapped, version)

    def _renew(self, request: RenewRequest, now: float) -> Reply:
        self.table.renew(request.lease_id, request.ttl_ms, now)
        self.deadlines_moved = True
        return Done(_RENEW, request.lease_id)

    def _release(self, request: ReleaseRequest, now: float) -> Reply:
        self.table.release(request.lease_id, now)
        return Done(_RELEASE, request.lease_id)

    def _stat(self, request: StatRequest, now: float) -> Reply:
        size, ttl_ms, version = self.table.stat(request.lease_id, now)
        return LeaseInfo(request.lease_id, size, ttl_ms, version)

    def _arena_map(self) -> Reply:
        # O(MAP_CELLS) in size and time (about 0.2 ms, with 1 or 1 M live leases), so a
        # client asking in a loop costs others about what one asking for stats does.
        arena_map = self.table.arena.block_map()
        return ArenaMapReply(
            arena_map.size, arena_map.min_block, arena_map.cell_bytes, arena_map.cells
        )

    # ------------------------------------------------------------------ batches and watches

    def _check_batch(self, op: Op, count: int) -> None:
        if count > self.max_batch:
            raise TooMany(
                f"{op.value} of {count} leases refused: at most {self.max_batch} in one "
                "request (limits.max_batch); nothing was done, send several requests"
            )

    def _lease_many(self, request: LeaseManyRequest, now: float, session: Session | None) -> Reply:
        self._check_batch(Op.LEASE_MANY, request.count)
        if request.count < 1:
            raise BadRequest(f"lease_many of {request.count} leases: ask for at least 1")
        owner = _owner(session) if request.bound else None
        lease_ids = self.table.grant_many(
            request.count, request.size, request.ttl_ms, now, request.id_kind, owner
        )
        self.deadlines_moved = True
        return GrantedMany(lease_ids, request.size, request.ttl_ms)

    def _renew_many(self, request: RenewManyRequest, now: float) -> Reply:
        self._check_batch(Op.RENEW_MANY, len(request.lease_ids))
        missing = self.table.renew_many(request.lease_ids, request.ttl_ms, now)
        self.deadlines_moved = True
        return IdList(Op.RENEW_MANY, missing)

    def _release_many(self, request: ReleaseManyRequest, now: float) -> Reply:
        self._check_batch(Op.RELEASE_MANY, len(request.lease_ids))
        return IdList(Op.RELEASE_MANY, self.table.release_many(request.lease_ids, now))

    def _watch(self, request: WatchRequest, now: float, session: Session | None) -> Reply:
        self._check_batch(Op.WATCH, len(request.lease_ids))
        owner = _owner(session)
        # A notice not yet sent holds the memory of its watch: both count.
        held = self.table.watches + self.table.notices_pending
        if held + len(request.lease_ids) > self.max_watches:
            raise TooMany(
                f"watch of {len(request.lease_ids)} leases refused: the server holds {held} "
                f"watches and unsent notices, and at most {self.max_watches} over all "
                "connections (limits.max_watches); nothing was watched, unwatch some first"
            )
        self.table.watch(request.lease_ids, owner, now)
        return IdList(Op.WATCH, [])

    def _unwatch(self, request: UnwatchRequest, now: float, session: Session | None) -> Reply:
        self._check_batch(Op.UNWATCH, len(request.lease_ids))
        if session is None:
            return IdList(Op.UNWATCH, list(request.lease_ids))
        return IdList(Op.UNWATCH, self.table.unwatch(request.lease_ids, session, now))


_READ_REQUESTS: Final = frozenset({GetRequest, GetsRequest, ReadRequest, StatRequest})
"""The requests whose refusals for an unknown id count as misses (as memcached's get_misses)."""
_READ_SLOTS: Final = tuple(OPS.index(op) for op in (Op.GET, Op.GETS, Op.READ, Op.STAT))

# Each op's place in OPS (and in Service.requests).
_AT_LEASE: Final = OPS.index(Op.LEASE)
_AT_GET: Final = OPS.index(Op.GET)
_AT_SET: Final = OPS.index(Op.SET)
_AT_READ: Final = OPS.index(Op.READ)
_AT_WRITE: Final = OPS.index(Op.WRITE)
_AT_RENEW: Final = OPS.index(Op.RENEW)
_AT_RELEASE: Final = OPS.index(Op.RELEASE)
_AT_STAT: Final = OPS.index(Op.STAT)
_AT_STATS: Final = OPS.index(Op.STATS)
_AT_GETS: Final = OPS.index(Op.GETS)
_AT_CAS: Final = OPS.index(Op.CAS)
_AT_LEASE_MANY: Final = OPS.index(Op.LEASE_MANY)
_AT_RENEW_MANY: Final = OPS.index(Op.RENEW_MANY)
_AT_RELEASE_MANY: Final = OPS.index(Op.RELEASE_MANY)
_AT_WATCH: Final = OPS.index(Op.WATCH)
_AT_UNWATCH: Final = OPS.index(Op.UNWATCH)
_AT_ARENA_MAP: Final = OPS.index(Op.ARENA_MAP)


def _owner(session: Session | None) -> Session:
    if session is None:
        raise BadRequest(
            "bound leases and watches belong to a connection, and this request came with none"
        )
    return session
