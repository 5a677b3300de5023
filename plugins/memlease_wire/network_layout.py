"""The layouts of the ``network`` and ``uuid`` formats, declared with construct.

Both are big-endian with fixed widths and explicit error replies; they differ only in the
lease id field (``declare(Int32ub)`` or ``declare(Bytes(16))``). A reply's type is its
request's type with the high bit set.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from construct import (
    Check,
    Const,
    Default,
    Float64b,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    this,
)

from memlease.core.messages import Op

VERSION = 1


class NetType(enum.IntEnum):
    """The type field of a network/uuid frame."""

    LEASE = 0x01
    GET = 0x02
    SET = 0x03
    READ = 0x04
    WRITE = 0x05
    RENEW = 0x06
    RELEASE = 0x07
    STAT = 0x08
    STATS = 0x09
    GETS = 0x0A
    CAS = 0x0B
    LEASE_MANY = 0x0C
    RENEW_MANY = 0x0D
    RELEASE_MANY = 0x0E
    WATCH = 0x0F
    UNWATCH = 0x10
    LEASE_BOUND = 0x11
    ARENA_MAP = 0x12
    GRANTED = 0x81
    GET_DATA = 0x82
    SET_DONE = 0x83
    READ_DATA = 0x84
    WRITE_DONE = 0x85
    RENEW_DONE = 0x86
    RELEASE_DONE = 0x87
    LEASE_INFO = 0x88
    SERVER_STATS = 0x89
    GETS_DATA = 0x8A
    CAS_RESULT = 0x8B
    GRANTED_MANY = 0x8C
    RENEW_MANY_DONE = 0x8D
    RELEASE_MANY_DONE = 0x8E
    WATCHING = 0x8F
    UNWATCHED = 0x90
    ARENA_MAP_DATA = 0x92
    NOTICE = 0xC0
    ERROR = 0xFF


REPLY_BIT = 0x80

LEASE_MANY_BOUND = 0x01
"""The flag of a lease_many whose leases are bound to the connection."""

UUID_MARK = 0x0001
"""The flags of a uuid request that may carry no lease id (lease, stats, the batches). Every
other request differs in length between the two formats, but these would be byte for byte
the network format's: unmarked, a uuid lease sent to a network port would be granted there
(and a network one at a uuid port), and the client would fail on the reply with the lease
left behind. (A batch of no ids has none either.)"""
MARKED_TYPES = (0x01, 0x09, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12)
"""The request types that carry the id variant's mark: lease, stats, lease many, renew
many, release many, watch, unwatch, lease bound and arena map."""

OP_TYPE: dict[Op, int] = {
    Op.LEASE: NetType.LEASE,
    Op.GET: NetType.GET,
    Op.SET: NetType.SET,
    Op.READ: NetType.READ,
    Op.WRITE: NetType.WRITE,
    Op.RENEW: NetType.RENEW,
    Op.RELEASE: NetType.RELEASE,
    Op.STAT: NetType.STAT,
    Op.STATS: NetType.STATS,
    Op.GETS: NetType.GETS,
    Op.CAS: NetType.CAS,
    Op.LEASE_MANY: NetType.LEASE_MANY,
    Op.RENEW_MANY: NetType.RENEW_MANY,
    Op.RELEASE_MANY: NetType.RELEASE_MANY,
    Op.WATCH: NetType.WATCH,
    Op.UNWATCH: NetType.UNWATCH,
    Op.ARENA_MAP: NetType.ARENA_MAP,
}
TYPE_OP: dict[int, Op] = {int(code): op for op, code in OP_TYPE.items()}
# Keyed by the Enum's value: hashing an Enum member runs Python code, hashing a str does not.
TYPE_OF_OP: dict[str, int] = {op._value_: int(code) for op, code in OP_TYPE.items()}
REPLY_TYPE_OF_OP: dict[str, int] = {name: REPLY_BIT | code for name, code in TYPE_OF_OP.items()}


HEADER = Struct(
    "version" / Const(VERSION, Int8ub),
    "type" / Int8ub,
    "flags" / Const(0, Int16ub),
    "length" / Int32ub,
)


@dataclass(frozen=True)
class NetworkLayouts:
    """Every payload layout of one id variant, and the frame that carries them."""

    lease: Struct
    id_only: Struct
    id_and_data: Struct
    read: Struct
    write: Struct
    renew: Struct
    empty: Struct
    granted: Struct
    lease_info: Struct
    server_stats: Struct
    server_stats_more: Struct
    error: Struct
    arena_map: Struct
    done_version: Struct
    gets_data: Struct
    cas: Struct
    cas_result: Struct
    lease_many: Struct
    renew_many: Struct
    ids: Struct
    granted_many: Struct
    notice: Struct
    payloads: dict[int, Struct]
    frame: Struct


def declare(lease_id: Any, mark: int = 0) -> NetworkLayouts:
    """The layouts with ``lease_id`` as the id field; ``mark``, the flags of the requests of
    MARKED_TYPES (0 for network, UUID_MARK for uuid)."""
    data = Prefixed(Int32ub, GreedyBytes)
    lease = Struct("size" / Int64ub, "ttl_ms" / Int32ub)
    id_only = Struct("lease_id" / lease_id)
    id_and_data = Struct("lease_id" / lease_id, "data" / data)
    read = Struct("lease_id" / lease_id, "offset" / Int64ub, "length" / Int32ub)
    write = Struct("lease_id" / lease_id, "offset" / Int64ub, "data" / data)
    renew = Struct("lease_id" / lease_id, "ttl_ms" / Int32ub)
    empty = Struct()
    granted = Struct("lease_id" / lease_id, "size" / Int64ub, "ttl_ms" / Int32ub)
    lease_info = Struct(
        "lease_id" / lease_id, "size" / Int64ub, "ttl_ms" / Int64ub, "version" / Int64ub
    )
    done_version = Struct("lease_id" / lease_id, "version" / Int64ub)
    gets_data = Struct("lease_id" / lease_id, "version" / Int64ub, "data" / data)
    cas = Struct("lease_id" / lease_id, "version" / Int64ub, "offset" / Int64ub, "data" / data)
    cas_result = Struct("lease_id" / lease_id, "swapped" / Int8ub, "version" / Int64ub)
    lease_many = Struct("count" / Int32ub, "size" / Int64ub, "ttl_ms" / Int32ub, "flags" / Int8ub)
    # A list of ids: a count, then the ids end to end. The codecs pack the fixed part (the
    # count, after ttl_ms or size and ttl_ms) with struct and the ids as one run.
    renew_many = Struct("ttl_ms" / Int32ub, "lease_ids" / PrefixedArray(Int32ub, lease_id))
    ids = Struct("lease_ids" / PrefixedArray(Int32ub, lease_id))
    granted_many = Struct(
        "size" / Int64ub, "ttl_ms" / Int32ub, "lease_ids" / PrefixedArray(Int32ub, lease_id)
    )
    notice = Struct("lease_id" / lease_id, "reason" / Int8ub)
    server_stats = Struct(
        "arena_size" / Int64ub,
        "used" / Int64ub,
        "free" / Int64ub,
        "largest_free" / Int64ub,
        "internal_fragmentation" / Int64ub,
        "external_fragmentation" / Float64b,
        "live_leases" / Int64ub,
        "granted" / Int64ub,
        "expired" / Int64ub,
        "released" / Int64ub,
        "refused" / Int64ub,
        "connections" / Int64ub,
        "closed_for_guessing" / Int64ub,
        "uptime_ms" / Int64ub,
        "version_major" / Int32ub,
        "version_minor" / Int32ub,
        "version_patch" / Int32ub,
        "hits" / Int64ub,
        "misses" / Int64ub,
        # Per-op request counts, uint64 each in memlease.core.messages.OPS order; the
        # prefix is their length in bytes (8 per count).
        "requests" / Prefixed(Int32ub, GreedyBytes),
    )
    # Figures added after the counts, so that a client that knows fewer reads those it knows
    # (memlease_wire.stats_fields); any added later come after these.
    server_stats_more = Struct("expiry_lag_us" / Int64ub, "expiry_behind_us" / Int64ub)
    # The cells' count is bounded by memlease.core.arena.MAP_CELLS (4096), and by the
    # receiver's max message size like any frame.
    arena_map = Struct(
        "arena_size" / Int64ub,
        "min_block" / Int32ub,
        "cell_bytes" / Int64ub,
        "cells" / Prefixed(Int32ub, GreedyBytes),
    )
    error = Struct(
        "code" / Int16ub,
        "request_type" / Int8ub,
        "lease_id" / lease_id,
        "message" / Prefixed(Int16ub, GreedyBytes),
    )
    payloads: dict[int, Struct] = {
        NetType.LEASE: lease,
        NetType.GET: id_only,
        NetType.SET: id_and_data,
        NetType.READ: read,
        NetType.WRITE: write,
        NetType.RENEW: renew,
        NetType.RELEASE: id_only,
        NetType.STAT: id_only,
        NetType.STATS: empty,
        NetType.GRANTED: granted,
        NetType.GET_DATA: id_and_data,
        NetType.SET_DONE: done_version,
        NetType.READ_DATA: id_and_data,
        NetType.WRITE_DONE: done_version,
        NetType.RENEW_DONE: id_only,
        NetType.RELEASE_DONE: id_only,
        NetType.LEASE_INFO: lease_info,
        NetType.SERVER_STATS: server_stats + server_stats_more,
        NetType.GETS: id_only,
        NetType.CAS: cas,
        NetType.LEASE_MANY: lease_many,
        NetType.RENEW_MANY: renew_many,
        NetType.RELEASE_MANY: ids,
        NetType.WATCH: ids,
        NetType.UNWATCH: ids,
        NetType.LEASE_BOUND: lease,
        NetType.GETS_DATA: gets_data,
        NetType.CAS_RESULT: cas_result,
        NetType.GRANTED_MANY: granted_many,
        NetType.RENEW_MANY_DONE: ids,
        NetType.RELEASE_MANY_DONE: ids,
        NetType.WATCHING: ids,
        NetType.UNWATCHED: ids,
        NetType.NOTICE: notice,
        NetType.ARENA_MAP: empty,
        NetType.ARENA_MAP_DATA: arena_map,
        NetType.ERROR: error,
    }

    def flags_of(this: Any) -> int:
        return mark if this.type in MARKED_TYPES else 0

    frame = Struct(
        "version" / Const(VERSION, Int8ub),
        "type" / Int8ub,
        "flags" / (Default(Int16ub, flags_of) if mark else Const(0, Int16ub)),
        Check(lambda this: this.flags == flags_of(this)),
        "payload" / Prefixed(Int32ub, Switch(this.type, payloads)),
    )
    return NetworkLayouts(
        lease,
        id_only,
        id_and_data,
        read,
        write,
        renew,
        empty,
        granted,
        lease_info,
        server_stats,
        server_stats_more,
        error,
        arena_map,
        done_version,
        gets_data,
        cas,
        cas_result,
        lease_many,
        renew_many,
        ids,
        granted_many,
        notice,
        payloads,
        frame,
    )
