"""Protocol-neutral requests and replies.

Every wire protocol decodes its bytes into these and encodes these into its bytes; the service
sees nothing else. They are plain data: no I/O, no behaviour.

They are values: nothing changes one after it is made. That is a rule, not enforced: a frozen
dataclass pays for it on every object (``object.__setattr__`` per field), about 0.15 µs each,
and every request makes two (its request and its reply).

They are plain classes with their own ``__init__``, not dataclasses: compiled (the mypyc
build) a plain class is built in about 20 ns, where a dataclass's generated ``__init__`` stays
interpreted (about 85 ns), three times per request. Equality and repr come from the fields
each names in ``__match_args__`` (which also serves ``match``), as a dataclass's would.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any, ClassVar, Final

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


OPS: Final[tuple[Op, ...]] = tuple(Op)
"""Every op in declaration order: the order of the per-op request counts of stats. New ops
are declared last, so a count keeps its place from release to release."""


class EndReason(enum.IntEnum):
    """Why a lease ended, as a notice tells it. The numbers are part of the wire formats."""

    EXPIRED = 1
    RELEASED = 2
    CLOSED = 3
    """It was bound to a connection, and that connection closed."""


class _Message:
    """What every message shares: equality and a repr from the fields of ``__match_args__``,
    as a dataclass's; not hashable, as a dataclass with equality is not; pickled and copied
    through ``__init__``. Slotted: no attribute but its fields, compiled or not."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()
    __hash__: ClassVar[None]  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[_Message], tuple[Any, ...]]:
        # Built again through __init__, with the fields in order: compiled, a message has
        # no __dict__ for pickle's and copy's default way.
        return type(self), tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__match_args__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__name__}({fields})"


def fields_of(message: _Message) -> dict[str, Any]:
    """``message``'s fields by name, in their order (as ``dataclasses.asdict`` gave them)."""
    return {name: getattr(message, name) for name in message.__match_args__}


# ---------------------------------------------------------------- requests


class LeaseRequest(_Message):
    """Lease ``size`` bytes for ``ttl_ms`` milliseconds, with an id of ``id_kind``; ``bound``:
    released when the connection that asked for it closes."""

    op: ClassVar[Op] = Op.LEASE
    __slots__ = ("bound", "id_kind", "size", "ttl_ms")
    __match_args__ = ("size", "ttl_ms", "id_kind", "bound")

    def __init__(
        self,
        size: int,
        ttl_ms: int,
        id_kind: IdKind = IdKind.INT,
        bound: bool = False,
    ) -> None:
        self.size = size
        self.ttl_ms = ttl_ms
        self.id_kind = id_kind
        self.bound = bound


class GetRequest(_Message):
    """Return the whole leased region."""

    op: ClassVar[Op] = Op.GET
    __slots__ = ("lease_id",)
    __match_args__ = ("lease_id",)

    def __init__(self, lease_id: LeaseId) -> None:
        self.lease_id = lease_id


class SetRequest(_Message):
    """Write ``data`` at offset 0 (a prefix; the rest of the region is left as it was)."""

    op: ClassVar[Op] = Op.SET
    __slots__ = ("data", "lease_id")
    __match_args__ = ("lease_id", "data")

    def __init__(self, lease_id: LeaseId, data: bytes | memoryview) -> None:
        self.lease_id = lease_id
        self.data = data
        """bytes, or on the server a read-only view of a large message's own buffer."""


class ReadRequest(_Message):
    """Return ``length`` bytes from ``offset``."""

    op: ClassVar[Op] = Op.READ
    __slots__ = ("lease_id", "length", "offset")
    __match_args__ = ("lease_id", "offset", "length")

    def __init__(self, lease_id: LeaseId, offset: int, length: int) -> None:
        self.lease_id = lease_id
        self.offset = offset
        self.length = length


class WriteRequest(_Message):
    """Write ``data`` at ``offset``."""

    op: ClassVar[Op] = Op.WRITE
    __slots__ = ("data", "lease_id", "offset")
    __match_args__ = ("lease_id", "offset", "data")

    def __init__(self, lease_id: LeaseId, offset: int, data: bytes | memoryview) -> None:
        self.lease_id = lease_id
        self.offset = offset
        self.data = data
        """bytes, or on the server a read-only view of a large message's own buffer."""


class RenewRequest(_Message):
    """Set the lease's deadline to now + ``ttl_ms``."""

    op: ClassVar[Op] = Op.RENEW
    __slots__ = ("lease_id", "ttl_ms")
    __match_args__ = ("lease_id", "ttl_ms")

    def __init__(self, lease_id: LeaseId, ttl_ms: int) -> None:
        self.lease_id = lease_id
        self.ttl_ms = ttl_ms


class ReleaseRequest(_Message):
    """Free the lease at once."""

    op: ClassVar[Op] = Op.RELEASE
    __slots__ = ("lease_id",)
    __match_args__ = ("lease_id",)

    def __init__(self, lease_id: LeaseId) -> None:
        self.lease_id = lease_id


class StatRequest(_Message):
    """Return the lease's size and remaining ttl."""

    op: ClassVar[Op] = Op.STAT
    __slots__ = ("lease_id",)
    __match_args__ = ("lease_id",)

    def __init__(self, lease_id: LeaseId) -> None:
        self.lease_id = lease_id


class StatsRequest(_Message):
    """Return the server's figures."""

    op: ClassVar[Op] = Op.STATS
    __slots__ = ()
    __match_args__ = ()


class ArenaMapRequest(_Message):
    """Return a picture of the arena: how full each stretch of it is (ArenaMapReply)."""

    op: ClassVar[Op] = Op.ARENA_MAP
    __slots__ = ()
    __match_args__ = ()


class GetsRequest(_Message):
    """Return the whole leased region and its version."""

    op: ClassVar[Op] = Op.GETS
    __slots__ = ("lease_id",)
    __match_args__ = ("lease_id",)

    def __init__(self, lease_id: LeaseId) -> None:
        self.lease_id = lease_id


class CasRequest(_Message):
    """Write ``data`` at ``offset`` only if the lease is at ``version``."""

    op: ClassVar[Op] = Op.CAS
    __slots__ = ("data", "lease_id", "offset", "version")
    __match_args__ = ("lease_id", "version", "offset", "data")

    def __init__(
        self,
        lease_id: LeaseId,
        version: int,
        offset: int,
        data: bytes | memoryview,
    ) -> None:
        self.lease_id = lease_id
        self.version = version
        self.offset = offset
        self.data = data


class LeaseManyRequest(_Message):
    """Lease ``count`` regions of ``size`` bytes for ``ttl_ms``, all or none."""

    op: ClassVar[Op] = Op.LEASE_MANY
    __slots__ = ("bound", "count", "id_kind", "size", "ttl_ms")
    __match_args__ = ("count", "size", "ttl_ms", "id_kind", "bound")

    def __init__(
        self,
        count: int,
        size: int,
        ttl_ms: int,
        id_kind: IdKind = IdKind.INT,
        bound: bool = False,
    ) -> None:
        self.count = count
        self.size = size
        self.ttl_ms = ttl_ms
        self.id_kind = id_kind
        self.bound = bound


class RenewManyRequest(_Message):
    """Renew every live lease of ``lease_ids`` to now + ``ttl_ms``."""

    op: ClassVar[Op] = Op.RENEW_MANY
    __slots__ = ("lease_ids", "ttl_ms")
    __match_args__ = ("lease_ids", "ttl_ms")

    def __init__(self, lease_ids: list[LeaseId], ttl_ms: int) -> None:
        self.lease_ids = lease_ids
        self.ttl_ms = ttl_ms


class ReleaseManyRequest(_Message):
    """Release every live lease of ``lease_ids``."""

    op: ClassVar[Op] = Op.RELEASE_MANY
    __slots__ = ("lease_ids",)
    __match_args__ = ("lease_ids",)

    def __init__(self, lease_ids: list[LeaseId]) -> None:
        self.lease_ids = lease_ids


class WatchRequest(_Message):
    """Send this connection a notice when any of ``lease_ids`` ends (all must be live)."""

    op: ClassVar[Op] = Op.WATCH
    __slots__ = ("lease_ids",)
    __match_args__ = ("lease_ids",)

    def __init__(self, lease_ids: list[LeaseId]) -> None:
        self.lease_ids = lease_ids


class UnwatchRequest(_Message):
    """Stop the notices of ``lease_ids`` to this connection."""

    op: ClassVar[Op] = Op.UNWATCH
    __slots__ = ("lease_ids",)
    __match_args__ = ("lease_ids",)

    def __init__(self, lease_ids: list[LeaseId]) -> None:
        self.lease_ids = lease_ids


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


class Granted(_Message):
    """A lease was granted. ``size`` and ``ttl_ms`` are 0 where the protocol does not carry them
    (native); the client then fills them in from its request."""

    op: ClassVar[Op] = Op.LEASE
    __slots__ = ("lease_id", "size", "ttl_ms")
    __match_args__ = ("lease_id", "size", "ttl_ms")

    def __init__(self, lease_id: LeaseId, size: int, ttl_ms: int) -> None:
        self.lease_id = lease_id
        self.size = size
        self.ttl_ms = ttl_ms


class Data(_Message):
    """Bytes from a lease: the whole region (``op`` GET or GETS) or a part of it (``op``
    READ); a GETS reply also carries the lease's ``version``.

    ``data`` is bytes, except in a get's reply from the service: a read-only view of the
    lease's region, valid only until the next request is handled."""

    __slots__ = ("data", "lease_id", "op", "version")
    __match_args__ = ("op", "lease_id", "data", "version")

    def __init__(
        self,
        op: Op,
        lease_id: LeaseId,
        data: bytes | memoryview,
        version: int = 0,
    ) -> None:
        self.op = op
        self.lease_id = lease_id
        self.data = data
        self.version = version


class Done(_Message):
    """A set, write, renew or release succeeded; a set or write gives the lease's new
    ``version`` (0 where the protocol does not carry it: the original native set)."""

    __slots__ = ("lease_id", "op", "version")
    __match_args__ = ("op", "lease_id", "version")

    def __init__(self, op: Op, lease_id: LeaseId, version: int = 0) -> None:
        self.op = op
        self.lease_id = lease_id
        self.version = version


class LeaseInfo(_Message):
    """The answer to a stat: the lease's size, its remaining ttl in milliseconds and its
    version (1 when granted, one more after every set, write or successful cas)."""

    op: ClassVar[Op] = Op.STAT
    __slots__ = ("lease_id", "size", "ttl_ms", "version")
    __match_args__ = ("lease_id", "size", "ttl_ms", "version")

    def __init__(self, lease_id: LeaseId, size: int, ttl_ms: int, version: int = 0) -> None:
        self.lease_id = lease_id
        self.size = size
        self.ttl_ms = ttl_ms
        self.version = version


class ServerStats(_Message):
    """The server's figures, as of the request."""

    op: ClassVar[Op] = Op.STATS
    __slots__ = (
        "arena_size",
        "closed_for_guessing",
        "connections",
        "expired",
        "expiry_behind_us",
        "expiry_lag_us",
        "external_fragmentation",
        "free",
        "granted",
        "hits",
        "internal_fragmentation",
        "largest_free",
        "live_leases",
        "misses",
        "refused",
        "released",
        "requests",
        "uptime_ms",
        "used",
        "version",
    )
    __match_args__ = (
        "arena_size",
        "used",
        "free",
        "largest_free",
        "internal_fragmentation",
        "external_fragmentation",
        "live_leases",
        "granted",
        "expired",
        "released",
        "refused",
        "connections",
        "closed_for_guessing",
        "uptime_ms",
        "version",
        "hits",
        "misses",
        "requests",
        "expiry_lag_us",
        "expiry_behind_us",
    )

    def __init__(
        self,
        arena_size: int,
        used: int,
        free: int,
        largest_free: int,
        internal_fragmentation: int,
        external_fragmentation: float,
        live_leases: int,
        granted: int,
        expired: int,
        released: int,
        refused: int,
        connections: int,
        closed_for_guessing: int = 0,
        uptime_ms: int = 0,
        version: str = "0.0.0",
        hits: int = 0,
        misses: int = 0,
        requests: tuple[int, ...] = (),
        expiry_lag_us: int = 0,
        expiry_behind_us: int = 0,
    ) -> None:
        self.arena_size = arena_size
        self.used = used
        self.free = free
        self.largest_free = largest_free
        self.internal_fragmentation = internal_fragmentation
        self.external_fragmentation = external_fragmentation
        self.live_leases = live_leases
        self.granted = granted
        self.expired = expired
        self.released = released
        self.refused = refused
        self.connections = connections
        self.closed_for_guessing = closed_for_guessing
        """Connections closed for asking for too many unknown ids in a second."""
        self.uptime_ms = uptime_ms
        """Milliseconds since the server started."""
        self.version = version
        """The server's memlease release, ``major.minor.patch``."""
        self.hits = hits
        """Reads (get, gets, read, stat) that found a live lease."""
        self.misses = misses
        """Reads (get, gets, read, stat) of an unknown or expired id."""
        self.requests = requests
        """Requests handled, one count per :class:`Op` in its declaration order (the order of
        :data:`OPS`); a newer server may send more counts than this release names."""
        self.expiry_lag_us = expiry_lag_us
        """The sum, over every lease that expired, of the microseconds from its deadline to its
        memory back in the arena: between two replies, its change over ``expired``'s is the
        mean lag."""
        self.expiry_behind_us = expiry_behind_us
        """How far the expiry task is behind, in microseconds: how long ago the earliest
        deadline of a lease not yet freed passed (0: none has)."""

    def requests_by_op(self) -> dict[str, int]:
        """The request counts by op name (``"get"``...), for the ops this release knows."""
        return {op.value: count for op, count in zip(OPS, self.requests, strict=False)}


class ArenaMapReply(_Message):
    """The arena's map as of the request: ``cells[i]`` is how full bytes ``[i * cell_bytes,
    (i + 1) * cell_bytes)`` of the ``arena_size``-byte arena are, the ceiling of 255 * the
    used fraction (0: all free; 255: all used). At most ``memlease.core.arena.MAP_CELLS``
    cells; the top-level blocks follow from ``arena_size`` and ``min_block``."""

    op: ClassVar[Op] = Op.ARENA_MAP
    __slots__ = ("arena_size", "cell_bytes", "cells", "min_block")
    __match_args__ = ("arena_size", "min_block", "cell_bytes", "cells")

    def __init__(self, arena_size: int, min_block: int, cell_bytes: int, cells: bytes) -> None:
        self.arena_size = arena_size
        self.min_block = min_block
        self.cell_bytes = cell_bytes
        self.cells = cells


class ErrorReply(_Message):
    """A refusal. ``op`` and ``lease_id`` name the request refused where they are known (they
    are not for bytes that could not be parsed), so protocols without error replies (native)
    can give the original's own refusal form."""

    __slots__ = ("code", "lease_id", "message", "op")
    __match_args__ = ("code", "message", "op", "lease_id")

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        op: Op | None = None,
        lease_id: LeaseId | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.op = op
        self.lease_id = lease_id


class CasResult(_Message):
    """The answer to a cas: ``swapped`` (the data was written and ``version`` is the new
    one) or not (nothing was written and ``version`` is the lease's current one)."""

    op: ClassVar[Op] = Op.CAS
    __slots__ = ("lease_id", "swapped", "version")
    __match_args__ = ("lease_id", "swapped", "version")

    def __init__(self, lease_id: LeaseId, swapped: bool, version: int) -> None:
        self.lease_id = lease_id
        self.swapped = swapped
        self.version = version


class GrantedMany(_Message):
    """The leases of a lease_many, each of ``size`` bytes for ``ttl_ms``."""

    op: ClassVar[Op] = Op.LEASE_MANY
    __slots__ = ("lease_ids", "size", "ttl_ms")
    __match_args__ = ("lease_ids", "size", "ttl_ms")

    def __init__(self, lease_ids: list[LeaseId], size: int, ttl_ms: int) -> None:
        self.lease_ids = lease_ids
        self.size = size
        self.ttl_ms = ttl_ms


class IdList(_Message):
    """The answer to a request on many ids: for renew_many and release_many the ids that were
    not found; for unwatch the ids that were not watched; for watch, none."""

    __slots__ = ("lease_ids", "op")
    __match_args__ = ("op", "lease_ids")

    def __init__(self, op: Op, lease_ids: list[LeaseId]) -> None:
        self.op = op
        self.lease_ids = lease_ids


class Notice(_Message):
    """Pushed, not asked for: a watched lease ended, and why."""

    __slots__ = ("lease_id", "reason")
    __match_args__ = ("lease_id", "reason")

    def __init__(self, lease_id: LeaseId, reason: EndReason) -> None:
        self.lease_id = lease_id
        self.reason = reason


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
