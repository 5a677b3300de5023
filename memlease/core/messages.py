"""Protocol-neutral requests and replies.

Every wire protocol decodes its bytes into these and encodes these into its bytes; the service
sees nothing else. They are plain data: no I/O, no behaviour.

They are values: nothing changes one after it is made. That is a rule, not enforced: a frozen
dataclass pays for it on every object (``object.__setattr__`` per field), about 0.15 µs each,
and every request makes two (its request and its reply). Unfrozen, a pipeline of small gets
and sets costs 22 % less CPU per message (``python -m benchmarks.route``, 1.80 -> 1.41 µs).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from memlease.core.errors import ErrorCode

LeaseId = int | uuid.UUID
"""An int id (native and network protocols) or a UUID (uuid protocol): separate id spaces."""


class IdKind(enum.Enum):
    """The kind of lease id a protocol carries; each kind is its own id space."""

    INT = "int"
    UUID = "uuid"


class Op(enum.Enum):
    """The operation a request asks for, echoed by its reply."""

    LEASE = "lease"
    GET = "get"
    SET = "set"
    READ = "read"
    WRITE = "write"
    RENEW = "renew"
    RELEASE = "release"
    STAT = "stat"
    STATS = "stats"
    GETS = "gets"
    CAS = "cas"
    LEASE_MANY = "lease_many"
    RENEW_MANY = "renew_many"
    RELEASE_MANY = "release_many"
    WATCH = "watch"
    UNWATCH = "unwatch"
    ARENA_MAP = "arena_map"


OPS: tuple[Op, ...] = tuple(Op)
"""Every op in declaration order: the order of the per-op request counts of stats. New ops
are declared last, so a count keeps its place from release to release."""


class EndReason(enum.IntEnum):
    """Why a lease ended, as a notice tells it. The numbers are part of the wire formats."""

    EXPIRED = 1
    RELEASED = 2
    CLOSED = 3
    """It was bound to a connection, and that connection closed."""


# ---------------------------------------------------------------- requests


@dataclass(slots=True)
class LeaseRequest:
    """Lease ``size`` bytes for ``ttl_ms`` milliseconds, with an id of ``id_kind``; ``bound``:
    released when the connection that asked for it closes."""

    size: int
    ttl_ms: int
    id_kind: IdKind = IdKind.INT
    bound: bool = False
    op = Op.LEASE


@dataclass(slots=True)
class GetRequest:
    """Return the whole leased region."""

    lease_id: LeaseId
    op = Op.GET


@dataclass(slots=True)
class SetRequest:
    """Write ``data`` at offset 0 (a prefix; the rest of the region is left as it was)."""

    lease_id: LeaseId
    data: bytes | memoryview
    """bytes, or on the server a read-only view of a large message's own buffer."""
    op = Op.SET


@dataclass(slots=True)
class ReadRequest:
    """Return ``length`` bytes from ``offset``."""

    lease_id: LeaseId
    offset: int
    length: int
    op = Op.READ


@dataclass(slots=True)
class WriteRequest:
    """Write ``data`` at ``offset``."""

    lease_id: LeaseId
    offset: int
    data: bytes | memoryview
    """bytes, or on the server a read-only view of a large message's own buffer."""
    op = Op.WRITE


@dataclass(slots=True)
class RenewRequest:
    """Set the lease's deadline to now + ``ttl_ms``."""

    lease_id: LeaseId
    ttl_ms: int
    op = Op.RENEW


@dataclass(slots=True)
class ReleaseRequest:
    """Free the lease at once."""

    lease_id: LeaseId
    op = Op.RELEASE


@dataclass(slots=True)
class StatRequest:
    """Return the lease's size and remaining ttl."""

    lease_id: LeaseId
    op = Op.STAT


@dataclass(slots=True)
class StatsRequest:
    """Return the server's figures."""

    op = Op.STATS


@dataclass(slots=True)
class ArenaMapRequest:
    """Return a picture of the arena: how full each stretch of it is (ArenaMapReply)."""

    op = Op.ARENA_MAP


@dataclass(slots=True)
class GetsRequest:
    """Return the whole leased region and its version."""

    lease_id: LeaseId
    op = Op.GETS


@dataclass(slots=True)
class CasRequest:
    """Write ``data`` at ``offset`` only if the lease is at ``version``."""

    lease_id: LeaseId
    version: int
    offset: int
    data: bytes | memoryview
    op = Op.CAS


@dataclass(slots=True)
class LeaseManyRequest:
    """Lease ``count`` regions of ``size`` bytes for ``ttl_ms``, all or none."""

    count: int
    size: int
    ttl_ms: int
    id_kind: IdKind = IdKind.INT
    bound: bool = False
    op = Op.LEASE_MANY


@dataclass(slots=True)
class RenewManyRequest:
    """Renew every live lease of ``lease_ids`` to now + ``ttl_ms``."""

    lease_ids: list[LeaseId]
    ttl_ms: int
    op = Op.RENEW_MANY


@dataclass(slots=True)
class ReleaseManyRequest:
    """Release every live lease of ``lease_ids``."""

    lease_ids: list[LeaseId]
    op = Op.RELEASE_MANY


@dataclass(slots=True)
class WatchRequest:
    """Send this connection a notice when any of ``lease_ids`` ends (all must be live)."""

    lease_ids: list[LeaseId]
    op = Op.WATCH


@dataclass(slots=True)
class UnwatchRequest:
    """Stop the notices of ``lease_ids`` to this connection."""

    lease_ids: list[LeaseId]
    op = Op.UNWATCH


Request = (
    LeaseRequest
    | GetRequest
    | SetRequest
    | ReadRequest
    | WriteRequest
    | RenewRequest
    | ReleaseRequest
    | StatRequest
    | StatsRequest
    | GetsRequest
    | CasRequest
    | LeaseManyRequest
    | RenewManyRequest
    | ReleaseManyRequest
    | WatchRequest
    | UnwatchRequest
    | ArenaMapRequest
)

BatchRequest = RenewManyRequest | ReleaseManyRequest | WatchRequest | UnwatchRequest
"""The requests that carry a list of ids."""

# ---------------------------------------------------------------- replies


@dataclass(slots=True)
class Granted:
    """A lease was granted. ``size`` and ``ttl_ms`` are 0 where the protocol does not carry them
    (native); the client then fills them in from its request."""

    lease_id: LeaseId
    size: int
    ttl_ms: int
    op = Op.LEASE


@dataclass(slots=True)
class Data:
    """Bytes from a lease: the whole region (``op`` GET or GETS) or a part of it (``op``
    READ); a GETS reply also carries the lease's ``version``.

    ``data`` is bytes, except in a get's reply from the service: a read-only view of the
    lease's region, valid only until the next request is handled."""

    op: Op
    lease_id: LeaseId
    data: bytes | memoryview
    version: int = 0


@dataclass(slots=True)
class Done:
    """A set, write, renew or release succeeded; a set or write gives the lease's new
    ``version`` (0 where the protocol does not carry it: the original native set)."""

    op: Op
    lease_id: LeaseId
    version: int = 0


@dataclass(slots=True)
class LeaseInfo:
    """The answer to a stat: the lease's size, its remaining ttl in milliseconds and its
    version (1 when granted, one more after every set, write or successful cas)."""

    lease_id: LeaseId
    size: int
    ttl_ms: int
    version: int = 0
    op = Op.STAT


@dataclass(slots=True)
class ServerStats:
    """The server's figures, as of the request."""

    arena_size: int
    used: int
    free: int
    largest_free: int
    internal_fragmentation: int
    external_fragmentation: float
    live_leases: int
    granted: int
    expired: int
    released: int
    refused: int
    connections: int
    closed_for_guessing: int = 0
    """Connections closed for asking for too many unknown ids in a second."""
    uptime_ms: int = 0
    """Milliseconds since the server started."""
    version: str = "0.0.0"
    """The server's memlease release, ``major.minor.patch``."""
    hits: int = 0
    """Reads (get, gets, read, stat) that found a live lease."""
    misses: int = 0
    """Reads (get, gets, read, stat) of an unknown or expired id."""
    requests: tuple[int, ...] = ()
    """Requests handled, one count per :class:`Op` in its declaration order (the order of
    :data:`OPS`); a newer server may send more counts than this release names."""
    expiry_lag_us: int = 0
    """The sum, over every lease that expired, of the microseconds from its deadline to its
    memory back in the arena: between two replies, its change over ``expired``'s is the
    mean lag."""
    expiry_behind_us: int = 0
    """How far the expiry task is behind, in microseconds: how long ago the earliest
    deadline of a lease not yet freed passed (0: none has)."""
    op = Op.STATS

    def requests_by_op(self) -> dict[str, int]:
        """The request counts by op name (``"get"``...), for the ops this release knows."""
        return {op.value: count for op, count in zip(OPS, self.requests, strict=False)}


@dataclass(slots=True)
class ArenaMapReply:
    """The arena's map as of the request: ``cells[i]`` is how full bytes ``[i * cell_bytes,
    (i + 1) * cell_bytes)`` of the ``arena_size``-byte arena are, the ceiling of 255 * the
    used fraction (0: all free; 255: all used). At most ``memlease.core.arena.MAP_CELLS``
    cells; the top-level blocks follow from ``arena_size`` and ``min_block``."""

    arena_size: int
    min_block: int
    cell_bytes: int
    cells: bytes
    op = Op.ARENA_MAP


@dataclass(slots=True)
class ErrorReply:
    """A refusal. ``op`` and ``lease_id`` name the request refused where they are known (they
    are not for bytes that could not be parsed), so protocols without error replies (native)
    can give the original's own refusal form."""

    code: ErrorCode
    message: str
    op: Op | None = None
    lease_id: LeaseId | None = None


@dataclass(slots=True)
class CasResult:
    """The answer to a cas: ``swapped`` (the data was written and ``version`` is the new
    one) or not (nothing was written and ``version`` is the lease's current one)."""

    lease_id: LeaseId
    swapped: bool
    version: int
    op = Op.CAS


@dataclass(slots=True)
class GrantedMany:
    """The leases of a lease_many, each of ``size`` bytes for ``ttl_ms``."""

    lease_ids: list[LeaseId]
    size: int
    ttl_ms: int
    op = Op.LEASE_MANY


@dataclass(slots=True)
class IdList:
    """The answer to a request on many ids: for renew_many and release_many the ids that were
    not found; for unwatch the ids that were not watched; for watch, none."""

    op: Op
    lease_ids: list[LeaseId]


@dataclass(slots=True)
class Notice:
    """Pushed, not asked for: a watched lease ended, and why."""

    lease_id: LeaseId
    reason: EndReason


Reply = (
    Granted
    | Data
    | Done
    | LeaseInfo
    | ServerStats
    | ArenaMapReply
    | ErrorReply
    | CasResult
    | GrantedMany
    | IdList
    | Notice
)

Message = Request | Reply
