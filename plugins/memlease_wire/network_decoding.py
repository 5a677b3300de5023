"""Decoding the network and uuid formats: one payload rule per message type."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memlease.core.errors import ProtocolError
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
from memlease_wire.framing import PayloadRule, error_code, take_tail
from memlease_wire.network_layout import TYPE_OP, NetType

if TYPE_CHECKING:
    from memlease_wire.network_codec import NetworkFormat

Decoder = Callable[[bytearray, int, int], Reply]


def request_rules(fmt: NetworkFormat) -> dict[int, PayloadRule[Request]]:
    """How each request type decodes, by type code."""
    # Int ids need no conversion; testing a closure variable is cheaper than calling one.
    to_uuid = fmt.ids.from_wire if fmt.uuid_ids else None
    kind = fmt.ids.kind
    s_lease, s_id, s_data = fmt.s_lease, fmt.s_id, fmt.s_id_and_data
    s_read, s_write, s_renew = fmt.s_read, fmt.s_write, fmt.s_renew
    data_size, write_size = s_data.size, s_write.size

    def lease(buf: bytearray, at: int, length: int) -> Request:
        size, ttl_ms = s_lease.unpack_from(buf, at)
        return LeaseRequest(size, ttl_ms, kind)

    def get(buf: bytearray, at: int, length: int) -> Request:
        (raw,) = s_id.unpack_from(buf, at)
        return GetRequest(raw if to_uuid is None else to_uuid(raw))

    def set_(buf: bytearray, at: int, length: int) -> Request:
        raw, n = s_data.unpack_from(buf, at)
        data = take_tail(buf, at, data_size, n, length, "set data")
        return SetRequest(raw if to_uuid is None else to_uuid(raw), data)

    def read(buf: bytearray, at: int, length: int) -> Request:
        raw, offset, n = s_read.unpack_from(buf, at)
        return ReadRequest(raw if to_uuid is None else to_uuid(raw), offset, n)

    def write(buf: bytearray, at: int, length: int) -> Request:
        raw, offset, n = s_write.unpack_from(buf, at)
        data = take_tail(buf, at, write_size, n, length, "write data")
        return WriteRequest(raw if to_uuid is None else to_uuid(raw), offset, data)

    def renew(buf: bytearray, at: int, length: int) -> Request:
        raw, ttl_ms = s_renew.unpack_from(buf, at)
        return RenewRequest(raw if to_uuid is None else to_uuid(raw), ttl_ms)

    def release(buf: bytearray, at: int, length: int) -> Request:
        (raw,) = s_id.unpack_from(buf, at)
        return ReleaseRequest(raw if to_uuid is None else to_uuid(raw))

    def stat(buf: bytearray, at: int, length: int) -> Request:
        (raw,) = s_id.unpack_from(buf, at)
        return StatRequest(raw if to_uuid is None else to_uuid(raw))

    def stats(buf: bytearray, at: int, length: int) -> Request:
        return StatsRequest()

    return {
        NetType.LEASE: PayloadRule("lease", s_lease.size, False, lease),
        NetType.GET: PayloadRule("get", s_id.size, False, get),
        NetType.SET: PayloadRule("set", data_size, True, set_),
        NetType.READ: PayloadRule("read", s_read.size, False, read),
        NetType.WRITE: PayloadRule("write", write_size, True, write),
        NetType.RENEW: PayloadRule("renew", s_renew.size, False, renew),
        NetType.RELEASE: PayloadRule("release", s_id.size, False, release),
        NetType.STAT: PayloadRule("stat", s_id.size, False, stat),
        NetType.STATS: PayloadRule("stats", 0, False, stats),
    }


def reply_rules(fmt: NetworkFormat) -> dict[int, PayloadRule[Reply]]:
    """How each reply type decodes, by type code."""
    to_uuid = fmt.ids.from_wire if fmt.uuid_ids else None
    absent = fmt.ids.absent
    s_id, s_data, s_granted = fmt.s_id, fmt.s_id_and_data, fmt.s_granted
    s_info, s_stats, s_error = fmt.s_lease_info, fmt.s_server_stats, fmt.s_error
    data_size = s_data.size

    def granted(buf: bytearray, at: int, length: int) -> Reply:
        raw, size, ttl_ms = s_granted.unpack_from(buf, at)
        return Granted(raw if to_uuid is None else to_uuid(raw), size, ttl_ms)

    def data_of(op: Op) -> Decoder:
        def data(buf: bytearray, at: int, length: int) -> Reply:
            raw, n = s_data.unpack_from(buf, at)
            lease_id = raw if to_uuid is None else to_uuid(raw)
            return Data(op, lease_id, take_tail(buf, at, data_size, n, length, "data"))

        return data

    def done_of(op: Op) -> Decoder:
        def done(buf: bytearray, at: int, length: int) -> Reply:
            (raw,) = s_id.unpack_from(buf, at)
            return Done(op, raw if to_uuid is None else to_uuid(raw))

        return done

    def info(buf: bytearray, at: int, length: int) -> Reply:
        raw, size, ttl_ms = s_info.unpack_from(buf, at)
        return LeaseInfo(raw if to_uuid is None else to_uuid(raw), size, ttl_ms)

    def stats(buf: bytearray, at: int, length: int) -> Reply:
        return ServerStats(*s_stats.unpack_from(buf, at))

    def error(buf: bytearray, at: int, length: int) -> Reply:
        code, request_type, raw, n = s_error.unpack_from(buf, at)
        message = take_tail(buf, at, s_error.size, n, length, "error message")
        op = TYPE_OP.get(request_type)
        if request_type and op is None:
            raise ProtocolError(f"error reply names unknown request type {request_type}")
        lease_id = None if raw == absent else raw if to_uuid is None else to_uuid(raw)
        return ErrorReply(error_code(code), bytes(message).decode("utf-8", "replace"), op, lease_id)

    table: list[tuple[NetType, int, bool, Decoder]] = [
        (NetType.GRANTED, s_granted.size, False, granted),
        (NetType.GET_DATA, data_size, True, data_of(Op.GET)),
        (NetType.READ_DATA, data_size, True, data_of(Op.READ)),
        (NetType.SET_DONE, s_id.size, False, done_of(Op.SET)),
        (NetType.WRITE_DONE, s_id.size, False, done_of(Op.WRITE)),
        (NetType.RENEW_DONE, s_id.size, False, done_of(Op.RENEW)),
        (NetType.RELEASE_DONE, s_id.size, False, done_of(Op.RELEASE)),
        (NetType.LEASE_INFO, s_info.size, False, info),
        (NetType.SERVER_STATS, s_stats.size, False, stats),
        (NetType.ERROR, s_error.size, True, error),
    ]
    return {
        kind: PayloadRule(kind.name.lower().replace("_", " "), fixed, variable, decode)
        for kind, fixed, variable, decode in table
    }
