"""Encoding the network and uuid formats: replies (server side) and requests (client side)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from memlease.core.errors import ProtocolError
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
from memlease_wire.framing import check_size, short_text
from memlease_wire.network_ids import MAX_INT_ID
from memlease_wire.network_layout import (
    LEASE_MANY_BOUND,
    REPLY_TYPE_OF_OP,
    TYPE_OF_OP,
    VERSION,
    NetType,
)
from memlease_wire.ranges import out_of_range
from memlease_wire.stats_fields import more_stats_values, pack_counts, stats_values

if TYPE_CHECKING:
    from memlease_wire.network_codec import NetworkFormat

_GRANTED = int(NetType.GRANTED)
_LEASE_INFO = int(NetType.LEASE_INFO)
_SERVER_STATS = int(NetType.SERVER_STATS)
_ERROR = int(NetType.ERROR)
_LEASE = int(NetType.LEASE)
_SET = int(NetType.SET)
_WRITE = int(NetType.WRITE)
_READ = int(NetType.READ)
_RENEW = int(NetType.RENEW)
_STATS = int(NetType.STATS)
_LEASE_BOUND = int(NetType.LEASE_BOUND)
_CAS = int(NetType.CAS)
_CAS_RESULT = int(NetType.CAS_RESULT)
_GETS_DATA = int(NetType.GETS_DATA)
_LEASE_MANY = int(NetType.LEASE_MANY)
_RENEW_MANY = int(NetType.RENEW_MANY)
_GRANTED_MANY = int(NetType.GRANTED_MANY)
_NOTICE = int(NetType.NOTICE)
_ARENA_MAP = int(NetType.ARENA_MAP)
_ARENA_MAP_DATA = int(NetType.ARENA_MAP_DATA)
_GETS = Op.GETS
# The replies whose Done carries the lease's new version.
_VERSIONED = frozenset({int(NetType.SET_DONE), int(NetType.WRITE_DONE)})


def reply_encoders(fmt: NetworkFormat) -> dict[type, Callable[[Any], bytes]]:
    """An encoder per reply class. A reply's id comes from the service, so it is packed as it
    is: one the field cannot carry fails in struct (or has no ``.bytes``), which the caller
    turns into a ProtocolError."""
    uuid_ids = fmt.uuid_ids
    f_id, f_data, f_granted = fmt.f_id, fmt.f_id_and_data, fmt.f_granted
    f_info, f_stats, f_error = fmt.f_lease_info, fmt.f_server_stats, fmt.f_error
    s_more = fmt.s_server_stats_more
    id_size, data_size, granted_size = fmt.s_id.size, fmt.s_id_and_data.size, fmt.s_granted.size
    info_size, stats_size, error_size = (
        fmt.s_lease_info.size,
        fmt.s_server_stats.size,
        fmt.s_error.size,
    )

    f_gets, gets_size = fmt.f_gets_data, fmt.s_gets_data.size
    f_done_version, done_version_size = fmt.f_done_version, fmt.s_done_version.size
    f_cas_result, cas_result_size = fmt.f_cas_result, fmt.s_cas_result.size
    f_notice, notice_size = fmt.f_notice, fmt.s_notice.size
    ids_size, granted_many_size = fmt.s_ids.size, fmt.s_granted_many.size
    f_ids = struct.Struct(">BBHLL")
    f_granted_many = struct.Struct(">BBHLQLL")
    pack_ids = fmt.id_lists.pack
    id_bytes = fmt.id_lists.id_size

    def data(reply: Data) -> bytes:
        op = reply.op
        if op is _GETS:
            return data_header(reply) + reply.data
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        data = reply.data
        n = len(data)
        kind = REPLY_TYPE_OF_OP[op._value_]
        return f_data.pack(VERSION, kind, 0, data_size + n, lease_id, n) + data

    def data_header(reply: Data) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        n = len(reply.data)
        if reply.op is _GETS:
            size = gets_size + n
            return f_gets.pack(VERSION, _GETS_DATA, 0, size, lease_id, reply.version, n)
        kind = REPLY_TYPE_OF_OP[reply.op._value_]
        return f_data.pack(VERSION, kind, 0, data_size + n, lease_id, n)

    def done(reply: Done) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        kind = REPLY_TYPE_OF_OP[reply.op._value_]
        if kind in _VERSIONED:
            return f_done_version.pack(VERSION, kind, 0, done_version_size, lease_id, reply.version)
        return f_id.pack(VERSION, kind, 0, id_size, lease_id)

    def cas_result(reply: CasResult) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        swapped, version = int(reply.swapped), reply.version
        return f_cas_result.pack(
            VERSION, _CAS_RESULT, 0, cas_result_size, lease_id, swapped, version
        )

    def granted_many(reply: GrantedMany) -> bytes:
        n = len(reply.lease_ids)
        size = granted_many_size + n * id_bytes
        head = f_granted_many.pack(VERSION, _GRANTED_MANY, 0, size, reply.size, reply.ttl_ms, n)
        return head + pack_ids(reply.lease_ids)

    def id_list(reply: IdList) -> bytes:
        n = len(reply.lease_ids)
        kind = REPLY_TYPE_OF_OP[reply.op._value_]
        head = f_ids.pack(VERSION, kind, 0, ids_size + n * id_bytes, n)
        return head + pack_ids(reply.lease_ids)

    def notice(reply: Notice) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        reason = int(reply.reason)
        return f_notice.pack(VERSION, _NOTICE, 0, notice_size, lease_id, reason)

    def granted(reply: Granted) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        size, ttl_ms = reply.size, reply.ttl_ms
        return f_granted.pack(VERSION, _GRANTED, 0, granted_size, lease_id, size, ttl_ms)

    def lease_info(reply: LeaseInfo) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        size, ttl_ms, version = reply.size, reply.ttl_ms, reply.version
        return f_info.pack(VERSION, _LEASE_INFO, 0, info_size, lease_id, size, ttl_ms, version)

    def server_stats(s: ServerStats) -> bytes:
        counts = pack_counts(">", s.requests)
        head = (VERSION, _SERVER_STATS, 0, stats_size + len(counts) + s_more.size)
        fixed = f_stats.pack(*head, *stats_values(s), len(counts))
        return fixed + counts + s_more.pack(*more_stats_values(s))

    f_arena_map, arena_map_size = fmt.f_arena_map, fmt.s_arena_map.size

    def arena_map(reply: ArenaMapReply) -> bytes:
        n = len(reply.cells)
        head = f_arena_map.pack(
            *(VERSION, _ARENA_MAP_DATA, 0, arena_map_size + n),
            *(reply.arena_size, reply.min_block, reply.cell_bytes, n),
        )
        return head + reply.cells

    def error(reply: ErrorReply) -> bytes:
        message = short_text(reply.message)
        op = 0 if reply.op is None else TYPE_OF_OP[reply.op._value_]
        # A refusal echoes the id it was given; one this format cannot carry is left out.
        try:
            lease_id = (
                fmt.ids.absent if reply.lease_id is None else _request_id(fmt, reply.lease_id)
            )
        except ProtocolError:
            lease_id = fmt.ids.absent
        code, size = int(reply.code), error_size + len(message)
        return f_error.pack(VERSION, _ERROR, 0, size, code, op, lease_id, len(message)) + message

    fmt.data_header = data_header
    return {
        Data: data,
        Done: done,
        Granted: granted,
        LeaseInfo: lease_info,
        ServerStats: server_stats,
        ErrorReply: error,
        CasResult: cas_result,
        GrantedMany: granted_many,
        IdList: id_list,
        Notice: notice,
        ArenaMapReply: arena_map,
    }


def _request_id(fmt: NetworkFormat, lease_id: LeaseId) -> int | bytes:
    if fmt.uuid_ids:
        if type(lease_id) is UUID:
            return lease_id.bytes
    elif type(lease_id) is int and 0 < lease_id <= MAX_INT_ID:
        return lease_id
    return fmt.ids.to_wire(fmt.protocol, lease_id)  # raises the ProtocolError that explains


def _set(fmt: NetworkFormat, request: SetRequest, max_message: int) -> bytes:
    n = len(request.data)
    size = fmt.s_id_and_data.size + n
    check_size(fmt.protocol, "set", fmt.header_size + size, max_message)
    lease_id = _request_id(fmt, request.lease_id)
    return fmt.f_id_and_data.pack(VERSION, _SET, 0, size, lease_id, n) + request.data


def _write(fmt: NetworkFormat, request: WriteRequest, max_message: int) -> bytes:
    n = len(request.data)
    size = fmt.s_write.size + n
    check_size(fmt.protocol, "write", fmt.header_size + size, max_message)
    lease_id = _request_id(fmt, request.lease_id)
    head = fmt.f_write.pack(VERSION, _WRITE, 0, size, lease_id, request.offset, n)
    return head + request.data


def _id_only(
    fmt: NetworkFormat,
    request: GetRequest | ReleaseRequest | StatRequest | GetsRequest,
    max_message: int,
) -> bytes:
    lease_id = _request_id(fmt, request.lease_id)
    kind = TYPE_OF_OP[request.op._value_]
    return fmt.f_id.pack(VERSION, kind, 0, fmt.s_id.size, lease_id)


def _lease(fmt: NetworkFormat, request: LeaseRequest, max_message: int) -> bytes:
    size, ttl_ms = request.size, request.ttl_ms
    kind = _LEASE_BOUND if request.bound else _LEASE
    return fmt.f_lease.pack(VERSION, kind, fmt.mark, fmt.s_lease.size, size, ttl_ms)


def _cas(fmt: NetworkFormat, request: CasRequest, max_message: int) -> bytes:
    n = len(request.data)
    size = fmt.s_cas.size + n
    check_size(fmt.protocol, "cas", fmt.header_size + size, max_message)
    lease_id = _request_id(fmt, request.lease_id)
    version, offset = request.version, request.offset
    head = fmt.f_cas.pack(VERSION, _CAS, 0, size, lease_id, version, offset, n)
    return head + request.data


def _lease_many(fmt: NetworkFormat, request: LeaseManyRequest, max_message: int) -> bytes:
    flags = LEASE_MANY_BOUND if request.bound else 0
    count, size, ttl_ms = request.count, request.size, request.ttl_ms
    payload = fmt.s_lease_many.size
    return fmt.f_lease_many.pack(
        VERSION, _LEASE_MANY, fmt.mark, payload, count, size, ttl_ms, flags
    )


def _ids(
    fmt: NetworkFormat,
    request: ReleaseManyRequest | WatchRequest | UnwatchRequest | RenewManyRequest,
    max_message: int,
) -> bytes:
    lease_ids = request.lease_ids
    n = len(lease_ids)
    kind = TYPE_OF_OP[request.op._value_]
    if type(request) is RenewManyRequest:
        head_size = fmt.s_renew_many.size
        fields: tuple[int, ...] = (request.ttl_ms, n)
    else:
        head_size = fmt.s_ids.size
        fields = (n,)
    size = head_size + n * fmt.id_lists.id_size
    check_size(fmt.protocol, request.op.value, fmt.header_size + size, max_message)
    head = fmt.s_header.pack(VERSION, kind, fmt.mark, size)
    if type(request) is RenewManyRequest:
        head += fmt.s_renew_many.pack(*fields)
    else:
        head += fmt.s_ids.pack(*fields)
    return head + fmt.id_lists.pack(lease_ids)


def _read(fmt: NetworkFormat, request: ReadRequest, max_message: int) -> bytes:
    lease_id = _request_id(fmt, request.lease_id)
    offset, length = request.offset, request.length
    return fmt.f_read.pack(VERSION, _READ, 0, fmt.s_read.size, lease_id, offset, length)


def _renew(fmt: NetworkFormat, request: RenewRequest, max_message: int) -> bytes:
    lease_id = _request_id(fmt, request.lease_id)
    return fmt.f_renew.pack(VERSION, _RENEW, 0, fmt.s_renew.size, lease_id, request.ttl_ms)


def _stats(fmt: NetworkFormat, request: StatsRequest, max_message: int) -> bytes:
    return fmt.s_header.pack(VERSION, _STATS, fmt.mark, 0)


def _arena_map(fmt: NetworkFormat, request: ArenaMapRequest, max_message: int) -> bytes:
    return fmt.s_header.pack(VERSION, _ARENA_MAP, fmt.mark, 0)


_REQUEST_ENCODERS: dict[type, Callable[[NetworkFormat, Any, int], bytes]] = {
    SetRequest: _set,
    GetRequest: _id_only,
    LeaseRequest: _lease,
    ReadRequest: _read,
    WriteRequest: _write,
    RenewRequest: _renew,
    ReleaseRequest: _id_only,
    StatRequest: _id_only,
    StatsRequest: _stats,
    GetsRequest: _id_only,
    CasRequest: _cas,
    LeaseManyRequest: _lease_many,
    RenewManyRequest: _ids,
    ReleaseManyRequest: _ids,
    WatchRequest: _ids,
    UnwatchRequest: _ids,
    ArenaMapRequest: _arena_map,
}


def encode_request(fmt: NetworkFormat, request: Request, max_message: int) -> bytes:
    """The bytes of ``request``; ProtocolError for one the format cannot carry."""
    encode = _REQUEST_ENCODERS.get(type(request))
    if encode is None:
        raise ProtocolError(f"{fmt.protocol}: no form for a {type(request).__name__}")
    try:
        return encode(fmt, request, max_message)
    except struct.error:
        layouts = fmt.layouts
        layout = {
            LeaseRequest: layouts.lease,
            ReadRequest: layouts.read,
            WriteRequest: layouts.write,
            RenewRequest: layouts.renew,
            CasRequest: layouts.cas,
            LeaseManyRequest: layouts.lease_many,
            RenewManyRequest: layouts.renew_many,
        }.get(type(request), layouts.empty)
        raise out_of_range(fmt.protocol, request, layout) from None
