"""The native format's layouts, declared with construct: the source of truth for its bytes.

Host byte order with C ``int`` (4 bytes) and ``long`` (8 bytes), as the original C++
MemoryLease wrote them; types 1 to 5 are the original's, types 6 and up are memlease's own
and never sent to a client that did not ask for them.
"""

from __future__ import annotations

import enum

from construct import (
    Float64n,
    GreedyBytes,
    Int32sn,
    Int64sn,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    this,
)


class NativeType(enum.IntEnum):
    """The type field of a native frame."""

    LEASE = 1
    LEASED = 2
    SET_DATA = 3
    ACCESS_DATA = 4
    DATA_SET = 5
    READ = 6
    WRITE = 7
    RENEW = 8
    RELEASE = 9
    STAT = 10
    STATS = 11
    READ_DATA = 12
    DONE = 13
    LEASE_INFO = 14
    SERVER_STATS = 15
    ERROR = 16
    GETS = 17
    CAS = 18
    LEASE_MANY = 19
    RENEW_MANY = 20
    RELEASE_MANY = 21
    WATCH = 22
    UNWATCH = 23
    LEASE_BOUND = 24
    GETS_DATA = 25
    CAS_RESULT = 26
    GRANTED_MANY = 27
    IDS = 28
    NOTICE = 29
    VERSION_DONE = 30
    ARENA_MAP = 31
    ARENA_MAP_DATA = 32


HEADER = Struct("type" / Int32sn, "size" / Int64sn)

Id = Int32sn
"""Lease ids: C int; the original grants positive 31-bit ids and answers -1 for a refusal."""

# --- requests (client -> server)
LEASE = Struct("size" / Int32sn, "ttl_ms" / Int32sn)
SET_DATA = Struct("lease_id" / Id, "data" / Prefixed(Int64sn, GreedyBytes))
ACCESS_DATA_REQUEST = Struct("lease_id" / Id)
READ = Struct("lease_id" / Id, "offset" / Int64sn, "length" / Int64sn)
WRITE = Struct("lease_id" / Id, "offset" / Int64sn, "data" / Prefixed(Int64sn, GreedyBytes))
RENEW = Struct("lease_id" / Id, "ttl_ms" / Int32sn)
RELEASE = Struct("lease_id" / Id)
STAT = Struct("lease_id" / Id)
STATS = Struct()
GETS = Struct("lease_id" / Id)
CAS = Struct(
    "lease_id" / Id,
    "version" / Int64sn,
    "offset" / Int64sn,
    "data" / Prefixed(Int64sn, GreedyBytes),
)
LEASE_MANY = Struct("count" / Int32sn, "size" / Int32sn, "ttl_ms" / Int32sn, "flags" / Int32sn)
RENEW_MANY = Struct("ttl_ms" / Int32sn, "lease_ids" / PrefixedArray(Int32sn, Id))
IDS = Struct("lease_ids" / PrefixedArray(Int32sn, Id))
LEASE_BOUND = LEASE
ARENA_MAP = Struct()

# --- replies (server -> client)
LEASED = Struct("lease_id" / Id)
ACCESS_DATA_REPLY = Struct("lease_id" / Id, "data" / Prefixed(Int64sn, GreedyBytes))
DATA_SET = Struct("status" / Int32sn)
READ_DATA = Struct("lease_id" / Id, "data" / Prefixed(Int64sn, GreedyBytes))
DONE = Struct("request_type" / Int32sn, "lease_id" / Id)
LEASE_INFO = Struct("lease_id" / Id, "size" / Int64sn, "ttl_ms" / Int64sn, "version" / Int64sn)
GETS_DATA = Struct("lease_id" / Id, "version" / Int64sn, "data" / Prefixed(Int64sn, GreedyBytes))
CAS_RESULT = Struct("lease_id" / Id, "swapped" / Int32sn, "version" / Int64sn)
GRANTED_MANY = Struct("lease_ids" / PrefixedArray(Int32sn, Id))
IDS_REPLY = Struct("request_type" / Int32sn, "lease_ids" / PrefixedArray(Int32sn, Id))
NOTICE = Struct("lease_id" / Id, "reason" / Int32sn)
VERSION_DONE = Struct("request_type" / Int32sn, "lease_id" / Id, "version" / Int64sn)
SERVER_STATS = Struct(
    "arena_size" / Int64sn,
    "used" / Int64sn,
    "free" / Int64sn,
    "largest_free" / Int64sn,
    "internal_fragmentation" / Int64sn,
    "external_fragmentation" / Float64n,
    "live_leases" / Int64sn,
    "granted" / Int64sn,
    "expired" / Int64sn,
    "released" / Int64sn,
    "refused" / Int64sn,
    "connections" / Int64sn,
    "closed_for_guessing" / Int64sn,
    "uptime_ms" / Int64sn,
    "version_major" / Int32sn,
    "version_minor" / Int32sn,
    "version_patch" / Int32sn,
    "hits" / Int64sn,
    "misses" / Int64sn,
    # Per-op request counts: int64 each, in memlease.core.messages.OPS order; the prefix
    # is their length in bytes (8 per count).
    "requests" / Prefixed(Int64sn, GreedyBytes),
)
# Figures added after the counts, so that a client that knows fewer reads those it knows
# (memlease_wire.stats_fields); any added later come after these.
SERVER_STATS_MORE = Struct("expiry_lag_us" / Int64sn, "expiry_behind_us" / Int64sn)
# At most memlease.core.arena.MAP_CELLS (4096) cells, one byte each.
ARENA_MAP_DATA = Struct(
    "arena_size" / Int64sn,
    "min_block" / Int64sn,
    "cell_bytes" / Int64sn,
    "cells" / Prefixed(Int64sn, GreedyBytes),
)
ERROR = Struct(
    "code" / Int32sn,
    "request_type" / Int32sn,
    "lease_id" / Id,
    "message" / Prefixed(Int64sn, GreedyBytes),
)

DATA_SET_OK = 0
DATA_SET_NOT_FOUND = -1
DATA_SET_TOO_LARGE = -2
LEASE_REFUSED = -1
LEASE_MANY_BOUND = 1

REQUESTS: dict[int, Struct] = {
    NativeType.LEASE: LEASE,
    NativeType.SET_DATA: SET_DATA,
    NativeType.ACCESS_DATA: ACCESS_DATA_REQUEST,
    NativeType.READ: READ,
    NativeType.WRITE: WRITE,
    NativeType.RENEW: RENEW,
    NativeType.RELEASE: RELEASE,
    NativeType.STAT: STAT,
    NativeType.STATS: STATS,
    NativeType.GETS: GETS,
    NativeType.CAS: CAS,
    NativeType.LEASE_MANY: LEASE_MANY,
    NativeType.RENEW_MANY: RENEW_MANY,
    NativeType.RELEASE_MANY: IDS,
    NativeType.WATCH: IDS,
    NativeType.UNWATCH: IDS,
    NativeType.LEASE_BOUND: LEASE_BOUND,
    NativeType.ARENA_MAP: ARENA_MAP,
}
REPLIES: dict[int, Struct] = {
    NativeType.LEASED: LEASED,
    NativeType.ACCESS_DATA: ACCESS_DATA_REPLY,
    NativeType.DATA_SET: DATA_SET,
    NativeType.READ_DATA: READ_DATA,
    NativeType.DONE: DONE,
    NativeType.LEASE_INFO: LEASE_INFO,
    NativeType.SERVER_STATS: SERVER_STATS + SERVER_STATS_MORE,
    NativeType.ERROR: ERROR,
    NativeType.GETS_DATA: GETS_DATA,
    NativeType.CAS_RESULT: CAS_RESULT,
    NativeType.GRANTED_MANY: GRANTED_MANY,
    NativeType.IDS: IDS_REPLY,
    NativeType.NOTICE: NOTICE,
    NativeType.VERSION_DONE: VERSION_DONE,
    NativeType.ARENA_MAP_DATA: ARENA_MAP_DATA,
}

REQUEST_FRAME = Struct("type" / Int32sn, "payload" / Prefixed(Int64sn, Switch(this.type, REQUESTS)))
REPLY_FRAME = Struct("type" / Int32sn, "payload" / Prefixed(Int64sn, Switch(this.type, REPLIES)))
