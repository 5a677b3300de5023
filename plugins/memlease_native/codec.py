"""The native format's struct forms (derived from ``layout``) and the server's decoding and
encoding (its codec class, which ties them to the interface, is ``server_codec``).

Replies to the original's own requests (lease, set, get) keep the original's forms, refusals
included, so the C++ client always understands them; memlease's own operations answer with
types 12 and up. The client's codec is in ``client_codec``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Final

from memlease_wire.derive import derive
from memlease_wire.framing import (
    PayloadRule,
    short_text,
    take_tail,
)
from memlease_wire.stats_fields import more_stats_values, pack_counts, stats_values

from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import (
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
    IdKind,
    IdList,
    LeaseId,
    LeaseInfo,
    LeaseManyRequest,
    LeaseRequest,
    Notice,
    Op,
    ReadRequest,
    ReleaseManyRequest,
    ReleaseRequest,
    RenewManyRequest,
    RenewRequest,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)
from memlease_native import layout as L
from memlease_native.layout import NativeType as T

PROTOCOL: Final = "native"
MAX_ID: Final = 0x7FFFFFFF

S_HEADER: Final = derive(L.HEADER).fixed
S_LEASE: Final = derive(L.LEASE).fixed
S_ID: Final = derive(L.ACCESS_DATA_REQUEST).fixed
S_ID_AND_DATA: Final = derive(L.SET_DATA).fixed
S_READ: Final = derive(L.READ).fixed
S_WRITE: Final = derive(L.WRITE).fixed
S_RENEW: Final = derive(L.RENEW).fixed
S_STATUS: Final = derive(L.DATA_SET).fixed
S_DONE: Final = derive(L.DONE).fixed
S_LEASE_INFO: Final = derive(L.LEASE_INFO).fixed
S_SERVER_STATS: Final = derive(L.SERVER_STATS).fixed
S_SERVER_STATS_MORE: Final = derive(L.SERVER_STATS_MORE).fixed
S_ERROR: Final = derive(L.ERROR).fixed
S_CAS: Final = derive(L.CAS).fixed
S_LEASE_MANY: Final = derive(L.LEASE_MANY).fixed
S_GETS_DATA: Final = derive(L.GETS_DATA).fixed
S_CAS_RESULT: Final = derive(L.CAS_RESULT).fixed
S_NOTICE: Final = derive(L.NOTICE).fixed
S_VERSION_DONE: Final = derive(L.VERSION_DONE).fixed
S_ARENA_MAP_DATA: Final = derive(L.ARENA_MAP_DATA).fixed
# The fixed parts of the id-list layouts, up to and with the count (the ids follow).
S_RENEW_MANY: Final = struct.Struct("=ii")
S_COUNT: Final = struct.Struct("=i")
S_IDS_REPLY: Final = struct.Struct("=ii")

# Whole-frame forms (header and fixed payload in one pack) for the encoders.
F_LEASE: Final = derive(L.HEADER, L.LEASE).fixed
F_ID: Final = derive(L.HEADER, L.ACCESS_DATA_REQUEST).fixed
F_ID_AND_DATA: Final = derive(L.HEADER, L.SET_DATA).fixed
F_READ: Final = derive(L.HEADER, L.READ).fixed
F_WRITE: Final = derive(L.HEADER, L.WRITE).fixed
F_RENEW: Final = derive(L.HEADER, L.RENEW).fixed
F_STATUS: Final = derive(L.HEADER, L.DATA_SET).fixed
F_DONE: Final = derive(L.HEADER, L.DONE).fixed
F_LEASE_INFO: Final = derive(L.HEADER, L.LEASE_INFO).fixed
F_SERVER_STATS: Final = derive(L.HEADER, L.SERVER_STATS).fixed
F_ERROR: Final = derive(L.HEADER, L.ERROR).fixed
F_CAS: Final = derive(L.HEADER, L.CAS).fixed
F_LEASE_MANY: Final = derive(L.HEADER, L.LEASE_MANY).fixed
F_GETS_DATA: Final = derive(L.HEADER, L.GETS_DATA).fixed
F_CAS_RESULT: Final = derive(L.HEADER, L.CAS_RESULT).fixed
F_NOTICE: Final = derive(L.HEADER, L.NOTICE).fixed
F_VERSION_DONE: Final = derive(L.HEADER, L.VERSION_DONE).fixed
F_ARENA_MAP_DATA: Final = derive(L.HEADER, L.ARENA_MAP_DATA).fixed


def pack_ids(lease_ids: Sequence[LeaseId]) -> bytes:
    """Int ids end to end, as the native format carries them."""
    return struct.pack(f"={len(lease_ids)}i", *lease_ids)


def unpack_ids(buf: bytearray, at: int, count: int, room: int, what: str) -> list[LeaseId]:
    """``count`` ids from ``at``, where the frame leaves ``room`` bytes for them."""
    if count < 0 or count * 4 != room:
        raise ProtocolError(
            f"{what} claims {count} ids but its frame carries {room} bytes for them"
        )
    return list(struct.unpack_from(f"={count}i", buf, at))


HEADER_SIZE: Final = S_HEADER.size

OP_TYPE: Final[dict[Op, int]] = {
    Op.LEASE: T.LEASE,
    Op.SET: T.SET_DATA,
    Op.GET: T.ACCESS_DATA,
    Op.READ: T.READ,
    Op.WRITE: T.WRITE,
    Op.RENEW: T.RENEW,
    Op.RELEASE: T.RELEASE,
    Op.STAT: T.STAT,
    Op.STATS: T.STATS,
    Op.GETS: T.GETS,
    Op.CAS: T.CAS,
    Op.LEASE_MANY: T.LEASE_MANY,
    Op.RENEW_MANY: T.RENEW_MANY,
    Op.RELEASE_MANY: T.RELEASE_MANY,
    Op.WATCH: T.WATCH,
    Op.UNWATCH: T.UNWATCH,
    Op.ARENA_MAP: T.ARENA_MAP,
}
TYPE_OP: Final[dict[int, Op]] = {code: op for op, code in OP_TYPE.items()}

# The hot paths use plain ints and module-level aliases: an IntEnum or Enum member looked up
# on its class, or an Enum used as a dict key, costs a Python-level call each time.
TYPE_OF_OP: Final[dict[str, int]] = {op._value_: int(code) for op, code in OP_TYPE.items()}
_GET: Final = Op.GET
_SET: Final = Op.SET
_LEASE: Final = Op.LEASE
_GETS: Final = Op.GETS
_WRITE: Final = Op.WRITE
_T_WRITE: Final = int(T.WRITE)
_T_GETS_DATA: Final = int(T.GETS_DATA)
_T_CAS_RESULT: Final = int(T.CAS_RESULT)
_T_GRANTED_MANY: Final = int(T.GRANTED_MANY)
_T_IDS: Final = int(T.IDS)
_T_NOTICE: Final = int(T.NOTICE)
_T_VERSION_DONE: Final = int(T.VERSION_DONE)
_T_LEASED: Final = int(T.LEASED)
_T_ACCESS_DATA: Final = int(T.ACCESS_DATA)
_T_DATA_SET: Final = int(T.DATA_SET)
_T_READ_DATA: Final = int(T.READ_DATA)
_T_DONE: Final = int(T.DONE)
_T_LEASE_INFO: Final = int(T.LEASE_INFO)
_T_SERVER_STATS: Final = int(T.SERVER_STATS)
_T_ERROR: Final = int(T.ERROR)
_ID_SIZE: Final = S_ID.size
_ID_AND_DATA_SIZE: Final = S_ID_AND_DATA.size
_WRITE_SIZE: Final = S_WRITE.size
_SET_DONE: Final = F_STATUS.pack(T.DATA_SET, S_STATUS.size, L.DATA_SET_OK)
_LEASE_REFUSED: Final = F_ID.pack(T.LEASED, S_ID.size, L.LEASE_REFUSED)
_OUT_OF_RANGE: Final = ErrorCode.OUT_OF_RANGE


# ---------------------------------------------------------------- server side


def _lease(buf: bytearray, at: int, length: int) -> Request:
    size, ttl_ms = S_LEASE.unpack_from(buf, at)
    return LeaseRequest(size, ttl_ms)


def _set(buf: bytearray, at: int, length: int) -> Request:
    lease_id, n = S_ID_AND_DATA.unpack_from(buf, at)
    return SetRequest(lease_id, take_tail(buf, at, _ID_AND_DATA_SIZE, n, length, "set data"))


def _get(buf: bytearray, at: int, length: int) -> Request:
    return GetRequest(S_ID.unpack_from(buf, at)[0])


def _read(buf: bytearray, at: int, length: int) -> Request:
    return ReadRequest(*S_READ.unpack_from(buf, at))


def _write(buf: bytearray, at: int, length: int) -> Request:
    lease_id, offset, n = S_WRITE.unpack_from(buf, at)
    return WriteRequest(lease_id, offset, take_tail(buf, at, _WRITE_SIZE, n, length, "write"))


def _renew(buf: bytearray, at: int, length: int) -> Request:
    return RenewRequest(*S_RENEW.unpack_from(buf, at))


def _release(buf: bytearray, at: int, length: int) -> Request:
    return ReleaseRequest(S_ID.unpack_from(buf, at)[0])


def _stat(buf: bytearray, at: int, length: int) -> Request:
    return StatRequest(S_ID.unpack_from(buf, at)[0])


def _stats(buf: bytearray, at: int, length: int) -> Request:
    return StatsRequest()


def _arena_map(buf: bytearray, at: int, length: int) -> Request:
    return ArenaMapRequest()


def _lease_bound(buf: bytearray, at: int, length: int) -> Request:
    size, ttl_ms = S_LEASE.unpack_from(buf, at)
    return LeaseRequest(size, ttl_ms, IdKind.INT, True)


def _gets(buf: bytearray, at: int, length: int) -> Request:
    return GetsRequest(S_ID.unpack_from(buf, at)[0])


def _cas(buf: bytearray, at: int, length: int) -> Request:
    lease_id, version, offset, n = S_CAS.unpack_from(buf, at)
    return CasRequest(lease_id, version, offset, take_tail(buf, at, S_CAS.size, n, length, "cas"))


def _lease_many(buf: bytearray, at: int, length: int) -> Request:
    count, size, ttl_ms, flags = S_LEASE_MANY.unpack_from(buf, at)
    if flags & ~L.LEASE_MANY_BOUND:
        raise ProtocolError(f"lease_many has flags {flags:#x}; only 1 (bound) is defined")
    return LeaseManyRequest(count, size, ttl_ms, IdKind.INT, bool(flags & L.LEASE_MANY_BOUND))


def _renew_many(buf: bytearray, at: int, length: int) -> Request:
    ttl_ms, count = S_RENEW_MANY.unpack_from(buf, at)
    fixed = S_RENEW_MANY.size
    return RenewManyRequest(
        unpack_ids(buf, at + fixed, count, length - fixed, "renew_many"), ttl_ms
    )


def _ids_of(
    make: type[ReleaseManyRequest | WatchRequest | UnwatchRequest], what: str
) -> Callable[[bytearray, int, int], Request]:
    def ids(buf: bytearray, at: int, length: int) -> Request:
        (count,) = S_COUNT.unpack_from(buf, at)
        return make(unpack_ids(buf, at + S_COUNT.size, count, length - S_COUNT.size, what))

    return ids


REQUEST_RULES: Final[dict[int, PayloadRule[Request]]] = {
    T.LEASE: PayloadRule("lease", S_LEASE.size, False, _lease),
    T.SET_DATA: PayloadRule("set", S_ID_AND_DATA.size, True, _set),
    T.ACCESS_DATA: PayloadRule("get", S_ID.size, False, _get),
    T.READ: PayloadRule("read", S_READ.size, False, _read),
    T.WRITE: PayloadRule("write", S_WRITE.size, True, _write),
    T.RENEW: PayloadRule("renew", S_RENEW.size, False, _renew),
    T.RELEASE: PayloadRule("release", S_ID.size, False, _release),
    T.STAT: PayloadRule("stat", S_ID.size, False, _stat),
    T.STATS: PayloadRule("stats", 0, False, _stats),
    T.LEASE_BOUND: PayloadRule("bound lease", S_LEASE.size, False, _lease_bound),
    T.ARENA_MAP: PayloadRule("arena map", 0, False, _arena_map),
    T.GETS: PayloadRule("gets", S_ID.size, False, _gets),
    T.CAS: PayloadRule("cas", S_CAS.size, True, _cas),
    T.LEASE_MANY: PayloadRule("lease_many", S_LEASE_MANY.size, False, _lease_many),
    T.RENEW_MANY: PayloadRule("renew_many", S_RENEW_MANY.size, True, _renew_many),
    T.RELEASE_MANY: PayloadRule(
        "release_many", S_COUNT.size, True, _ids_of(ReleaseManyRequest, "release_many")
    ),
    T.WATCH: PayloadRule("watch", S_COUNT.size, True, _ids_of(WatchRequest, "watch")),
    T.UNWATCH: PayloadRule("unwatch", S_COUNT.size, True, _ids_of(UnwatchRequest, "unwatch")),
}


def _echo_id(lease_id: LeaseId | None) -> int:
    """An id to echo in a refusal; 0 where there is none (or it cannot be carried)."""
    return lease_id if type(lease_id) is int and -MAX_ID - 1 <= lease_id <= MAX_ID else 0


def data_header(kind: int, lease_id: LeaseId, n: int) -> bytes:
    """The header of a data frame (a get's or read's reply, or a set) of ``n`` data bytes."""
    return F_ID_AND_DATA.pack(kind, _ID_AND_DATA_SIZE + n, lease_id, n)


def data_frame(kind: int, lease_id: LeaseId, data: bytes | memoryview) -> bytes:
    return data_header(kind, lease_id, len(data)) + data


def _encode_data(reply: Data) -> bytes:
    if reply.op is _GETS:
        return _gets_header(reply) + reply.data
    kind = _T_ACCESS_DATA if reply.op is _GET else _T_READ_DATA
    data = reply.data
    n = len(data)
    return F_ID_AND_DATA.pack(kind, _ID_AND_DATA_SIZE + n, reply.lease_id, n) + data


def _gets_header(reply: Data) -> bytes:
    n = len(reply.data)
    size = S_GETS_DATA.size + n
    return F_GETS_DATA.pack(_T_GETS_DATA, size, reply.lease_id, reply.version, n)


def encode_data_parts(reply: Data) -> tuple[bytes, bytes | memoryview]:
    """``reply``'s frame as header and data, so that the data is sent without a copy."""
    kind = _T_ACCESS_DATA if reply.op is _GET else _T_READ_DATA
    data = reply.data
    try:
        if reply.op is _GETS:
            return _gets_header(reply), data
        return data_header(kind, reply.lease_id, len(data)), data
    except struct.error as exc:
        raise ProtocolError(f"{PROTOCOL}: cannot encode {reply!r:.200}: {exc}") from None


def _encode_done(reply: Done) -> bytes:
    if reply.op is _SET:
        return _SET_DONE  # the original's form, which carries no version
    if reply.op is _WRITE:
        size = S_VERSION_DONE.size
        return F_VERSION_DONE.pack(_T_VERSION_DONE, size, _T_WRITE, reply.lease_id, reply.version)
    return F_DONE.pack(_T_DONE, S_DONE.size, TYPE_OF_OP[reply.op._value_], reply.lease_id)


def _encode_cas_result(reply: CasResult) -> bytes:
    size, swapped = S_CAS_RESULT.size, int(reply.swapped)
    return F_CAS_RESULT.pack(_T_CAS_RESULT, size, reply.lease_id, swapped, reply.version)


def _encode_granted_many(reply: GrantedMany) -> bytes:
    n = len(reply.lease_ids)
    return (
        S_HEADER.pack(_T_GRANTED_MANY, S_COUNT.size + 4 * n)
        + S_COUNT.pack(n)
        + pack_ids(reply.lease_ids)
    )


def _encode_id_list(reply: IdList) -> bytes:
    n = len(reply.lease_ids)
    head = S_HEADER.pack(_T_IDS, S_IDS_REPLY.size + 4 * n)
    return head + S_IDS_REPLY.pack(TYPE_OF_OP[reply.op._value_], n) + pack_ids(reply.lease_ids)


def _encode_notice(reply: Notice) -> bytes:
    return F_NOTICE.pack(_T_NOTICE, S_NOTICE.size, reply.lease_id, int(reply.reason))


def _encode_granted(reply: Granted) -> bytes:
    return F_ID.pack(_T_LEASED, _ID_SIZE, reply.lease_id)


def _encode_lease_info(reply: LeaseInfo) -> bytes:
    size, ttl_ms, version = S_LEASE_INFO.size, reply.ttl_ms, reply.version
    return F_LEASE_INFO.pack(_T_LEASE_INFO, size, reply.lease_id, reply.size, ttl_ms, version)


def _encode_server_stats(s: ServerStats) -> bytes:
    counts = pack_counts("=", s.requests)
    size = S_SERVER_STATS.size + len(counts) + S_SERVER_STATS_MORE.size
    head = F_SERVER_STATS.pack(_T_SERVER_STATS, size, *stats_values(s), len(counts))
    return head + counts + S_SERVER_STATS_MORE.pack(*more_stats_values(s))


def _encode_arena_map(reply: ArenaMapReply) -> bytes:
    n = len(reply.cells)
    head = F_ARENA_MAP_DATA.pack(
        int(T.ARENA_MAP_DATA),
        S_ARENA_MAP_DATA.size + n,
        *(reply.arena_size, reply.min_block, reply.cell_bytes, n),
    )
    return head + reply.cells


def _encode_error(reply: ErrorReply) -> bytes:
    op = reply.op
    # The original client reads only its own reply forms: refusals of its requests use them.
    if op is _LEASE:
        return _LEASE_REFUSED
    if op is _GET:
        return data_frame(_T_ACCESS_DATA, _echo_id(reply.lease_id), b"")
    if op is _SET:
        too_large = reply.code is _OUT_OF_RANGE
        status = L.DATA_SET_TOO_LARGE if too_large else L.DATA_SET_NOT_FOUND
        return F_STATUS.pack(_T_DATA_SET, S_STATUS.size, status)
    message = short_text(reply.message)
    return (
        F_ERROR.pack(
            _T_ERROR,
            S_ERROR.size + len(message),
            int(reply.code),
            0 if op is None else TYPE_OF_OP[op._value_],
            _echo_id(reply.lease_id),
            len(message),
        )
        + message
    )


def encode_reply(reply: object) -> bytes:
    """The native bytes of ``reply`` (a Reply: anything else is a ProtocolError, in the
    compiled build too)."""
    # By exact type, the common replies first: compiled, each test is one comparison and each
    # call a direct one (a table of functions costs a lookup and a generic call per reply).
    try:
        if type(reply) is Data:
            return _encode_data(reply)
        if type(reply) is Done:
            return _encode_done(reply)
        if type(reply) is Granted:
            return _encode_granted(reply)
        if type(reply) is ErrorReply:
            return _encode_error(reply)
        if type(reply) is LeaseInfo:
            return _encode_lease_info(reply)
        if type(reply) is CasResult:
            return _encode_cas_result(reply)
        if type(reply) is Notice:
            return _encode_notice(reply)
        if type(reply) is IdList:
            return _encode_id_list(reply)
        if type(reply) is GrantedMany:
            return _encode_granted_many(reply)
        if type(reply) is ServerStats:
            return _encode_server_stats(reply)
        if type(reply) is ArenaMapReply:
            return _encode_arena_map(reply)
    except struct.error as exc:
        raise ProtocolError(f"{PROTOCOL}: cannot encode {reply!r:.200}: {exc}") from None
    raise ProtocolError(f"{PROTOCOL}: no native form for a {type(reply).__name__} reply")


EARLY_KEY: Final = struct.Struct("=l")
"""The type field alone: a network or uuid stats request (8 bytes) is shorter than a native
header (12), and is refused on its first 4 bytes instead of waited for."""
_NETWORK_REQUEST_TYPES: Final = range(0x01, 0x13)


def describe_type(key: int) -> str:
    """What is wrong with an unknown type; naming the protocol the frame seems to be of."""
    version, kind, flags = key & 0xFF, (key >> 8) & 0xFF, (key >> 16) & 0xFFFF
    # A network header read as a host-order int32: version 1, then a type, then flags.
    if version == 1 and kind in _NETWORK_REQUEST_TYPES and flags in (0, 1):
        other = "uuid" if flags else "network"
        return f"a {other} frame (type {kind}), it seems; this side speaks {PROTOCOL}"
    return f"unknown message type {key}"
