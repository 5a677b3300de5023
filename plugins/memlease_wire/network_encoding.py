"""Encoding the network and uuid formats: replies (server side) and requests (client side)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from memlease.core.errors import ProtocolError
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    LeaseId,
    LeaseInfo,
    LeaseRequest,
    ReadRequest,
    ReleaseRequest,
    RenewRequest,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    WriteRequest,
)
from memlease_wire.framing import check_size, short_text
from memlease_wire.network_ids import MAX_INT_ID
from memlease_wire.network_layout import REPLY_TYPE_OF_OP, TYPE_OF_OP, VERSION, NetType
from memlease_wire.ranges import out_of_range

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


def reply_encoders(fmt: NetworkFormat) -> dict[type, Callable[[Any], bytes]]:
    """An encoder per reply class. A reply's id comes from the service, so it is packed as it
    is: one the field cannot carry fails in struct (or has no ``.bytes``), which the caller
    turns into a ProtocolError."""
    uuid_ids = fmt.uuid_ids
    f_id, f_data, f_granted = fmt.f_id, fmt.f_id_and_data, fmt.f_granted
    f_info, f_stats, f_error = fmt.f_lease_info, fmt.f_server_stats, fmt.f_error
    id_size, data_size, granted_size = fmt.s_id.size, fmt.s_id_and_data.size, fmt.s_granted.size
    info_size, stats_size, error_size = (
        fmt.s_lease_info.size,
        fmt.s_server_stats.size,
        fmt.s_error.size,
    )

    def data(reply: Data) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        data = reply.data
        n = len(data)
        kind = REPLY_TYPE_OF_OP[reply.op._value_]
        return f_data.pack(VERSION, kind, 0, data_size + n, lease_id, n) + data

    def data_header(reply: Data) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        n = len(reply.data)
        kind = REPLY_TYPE_OF_OP[reply.op._value_]
        return f_data.pack(VERSION, kind, 0, data_size + n, lease_id, n)

    def done(reply: Done) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        return f_id.pack(VERSION, REPLY_TYPE_OF_OP[reply.op._value_], 0, id_size, lease_id)

    def granted(reply: Granted) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        size, ttl_ms = reply.size, reply.ttl_ms
        return f_granted.pack(VERSION, _GRANTED, 0, granted_size, lease_id, size, ttl_ms)

    def lease_info(reply: LeaseInfo) -> bytes:
        lease_id = reply.lease_id.bytes if uuid_ids else reply.lease_id  # type: ignore[union-attr]
        size, ttl_ms = reply.size, reply.ttl_ms
        return f_info.pack(VERSION, _LEASE_INFO, 0, info_size, lease_id, size, ttl_ms)

    def server_stats(s: ServerStats) -> bytes:
        return f_stats.pack(
            *(VERSION, _SERVER_STATS, 0, stats_size),
            *(s.arena_size, s.used, s.free, s.largest_free, s.internal_fragmentation),
            s.external_fragmentation,
            *(s.live_leases, s.granted, s.expired, s.released, s.refused, s.connections),
            s.closed_for_guessing,
        )

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


def _id_only(fmt: NetworkFormat, request: GetRequest, max_message: int) -> bytes:
    lease_id = _request_id(fmt, request.lease_id)
    kind = TYPE_OF_OP[request.op._value_]
    return fmt.f_id.pack(VERSION, kind, 0, fmt.s_id.size, lease_id)


def _lease(fmt: NetworkFormat, request: LeaseRequest, max_message: int) -> bytes:
    size, ttl_ms = request.size, request.ttl_ms
    return fmt.f_lease.pack(VERSION, _LEASE, fmt.mark, fmt.s_lease.size, size, ttl_ms)


def _read(fmt: NetworkFormat, request: ReadRequest, max_message: int) -> bytes:
    lease_id = _request_id(fmt, request.lease_id)
    offset, length = request.offset, request.length
    return fmt.f_read.pack(VERSION, _READ, 0, fmt.s_read.size, lease_id, offset, length)


def _renew(fmt: NetworkFormat, request: RenewRequest, max_message: int) -> bytes:
    lease_id = _request_id(fmt, request.lease_id)
    return fmt.f_renew.pack(VERSION, _RENEW, 0, fmt.s_renew.size, lease_id, request.ttl_ms)


def _stats(fmt: NetworkFormat, request: StatsRequest, max_message: int) -> bytes:
    return fmt.s_header.pack(VERSION, _STATS, fmt.mark, 0)


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
        }.get(type(request), layouts.empty)
        raise out_of_range(fmt.protocol, request, layout) from None
