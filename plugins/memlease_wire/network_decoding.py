"""Decoding the network and uuid formats: one payload rule per message type."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memlease.core.errors import ProtocolError
from memlease.core.messages import (
    ArenaMapReply,
    ArenaMapRequest,
    CasRequest,
    CasResult,
    Data,
    Done,
    EndReason,
    ErrorReply,
    GetRequest,
    GetsRequest,
    Granted,
    GrantedMany,
    IdList,
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
    Reply,
    Request,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)
from memlease_wire.framing import PayloadRule, error_code, take_tail
from memlease_wire.network_layout import LEASE_MANY_BOUND, TYPE_OP, NetType
from memlease_wire.stats_fields import decode_stats

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
    s_cas, s_lease_many = fmt.s_cas, fmt.s_lease_many
    s_renew_many, s_ids, id_lists = fmt.s_renew_many, fmt.s_ids, fmt.id_lists

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

    def arena_map(buf: bytearray, at: int, length: int) -> Request:
        return ArenaMapRequest()

    def lease_bound(buf: bytearray, at: int, length: int) -> Request:
        size, ttl_ms = s_lease.unpack_from(buf, at)
        return LeaseRequest(size, ttl_ms, kind, True)

    def gets(buf: bytearray, at: int, length: int) -> Request:
        (raw,) = s_id.unpack_from(buf, at)
        return GetsRequest(raw if to_uuid is None else to_uuid(raw))

    def cas(buf: bytearray, at: int, length: int) -> Request:
        raw, version, offset, n = s_cas.unpack_from(buf, at)
        data = take_tail(buf, at, s_cas.size, n, length, "cas data")
        return CasRequest(raw if to_uuid is None else to_uuid(raw), version, offset, data)

    def lease_many(buf: bytearray, at: int, length: int) -> Request:
        count, size, ttl_ms, flags = s_lease_many.unpack_from(buf, at)
        if flags & ~LEASE_MANY_BOUND:
            raise ProtocolError(f"lease_many has flags {flags:#04x}; only 0x01 (bound) is defined")
        return LeaseManyRequest(count, size, ttl_ms, kind, bool(flags & LEASE_MANY_BOUND))

    def renew_many(buf: bytearray, at: int, length: int) -> Request:
        ttl_ms, count = s_renew_many.unpack_from(buf, at)
        room = length - s_renew_many.size
        lease_ids = id_lists.unpack(buf, at + s_renew_many.size, count, room, "renew_many")
        return RenewManyRequest(lease_ids, ttl_ms)

    def ids_of(make: type[ReleaseManyRequest | WatchRequest | UnwatchRequest], what: str) -> Any:
        def ids(buf: bytearray, at: int, length: int) -> Request:
            (count,) = s_ids.unpack_from(buf, at)
            return make(id_lists.unpack(buf, at + s_ids.size, count, length - s_ids.size, what))

        return ids

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
        NetType.LEASE_BOUND: PayloadRule("bound lease", s_lease.size, False, lease_bound),
        NetType.ARENA_MAP: PayloadRule("arena map", 0, False, arena_map),
        NetType.GETS: PayloadRule("gets", s_id.size, False, gets),
        NetType.CAS: PayloadRule("cas", s_cas.size, True, cas),
        NetType.LEASE_MANY: PayloadRule("lease_many", s_lease_many.size, False, lease_many),
        NetType.RENEW_MANY: PayloadRule("renew_many", s_renew_many.size, True, renew_many),
        NetType.RELEASE_MANY: PayloadRule(
            "release_many", s_ids.size, True, ids_of(ReleaseManyRequest, "release_many")
        ),
        NetType.WATCH: PayloadRule("watch", s_ids.size, True, ids_of(WatchRequest, "watch")),
        NetType.UNWATCH: PayloadRule(
            "unwatch", s_ids.size, True, ids_of(UnwatchRequest, "unwatch")
        ),
    }


def reply_rules(fmt: NetworkFormat) -> dict[int, PayloadRule[Reply]]:
    """How each reply type decodes, by type code."""
    to_uuid = fmt.ids.from_wire if fmt.uuid_ids else None
    absent = fmt.ids.absent
    s_id, s_data, s_granted = fmt.s_id, fmt.s_id_and_data, fmt.s_granted
    s_info, s_stats, s_error = fmt.s_lease_info, fmt.s_server_stats, fmt.s_error
    s_stats_more = fmt.s_server_stats_more
    s_done_version, s_gets_data, s_cas_result = (
        fmt.s_done_version,
        fmt.s_gets_data,
        fmt.s_cas_result,
    )
    s_ids, s_granted_many, s_notice, id_lists = (
        fmt.s_ids,
        fmt.s_granted_many,
        fmt.s_notice,
        fmt.id_lists,
    )
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

    def done_version_of(op: Op) -> Decoder:
        def done(buf: bytearray, at: int, length: int) -> Reply:
            raw, version = s_done_version.unpack_from(buf, at)
            return Done(op, raw if to_uuid is None else to_uuid(raw), version)

        return done

    def info(buf: bytearray, at: int, length: int) -> Reply:
        raw, size, ttl_ms, version = s_info.unpack_from(buf, at)
        return LeaseInfo(raw if to_uuid is None else to_uuid(raw), size, ttl_ms, version)

    def gets_data(buf: bytearray, at: int, length: int) -> Reply:
        raw, version, n = s_gets_data.unpack_from(buf, at)
        lease_id = raw if to_uuid is None else to_uuid(raw)
        data = take_tail(buf, at, s_gets_data.size, n, length, "data")
        return Data(Op.GETS, lease_id, data, version)

    def cas_result(buf: bytearray, at: int, length: int) -> Reply:
        raw, swapped, version = s_cas_result.unpack_from(buf, at)
        return CasResult(raw if to_uuid is None else to_uuid(raw), bool(swapped), version)

    def granted_many(buf: bytearray, at: int, length: int) -> Reply:
        size, ttl_ms, count = s_granted_many.unpack_from(buf, at)
        fixed = s_granted_many.size
        lease_ids = id_lists.unpack(buf, at + fixed, count, length - fixed, "granted_many")
        return GrantedMany(lease_ids, size, ttl_ms)

    def ids_of(op: Op) -> Decoder:
        def ids(buf: bytearray, at: int, length: int) -> Reply:
            (count,) = s_ids.unpack_from(buf, at)
            fixed = s_ids.size
            return IdList(op, id_lists.unpack(buf, at + fixed, count, length - fixed, op.value))

        return ids

    def notice(buf: bytearray, at: int, length: int) -> Reply:
        raw, reason = s_notice.unpack_from(buf, at)
        try:
            why = EndReason(reason)
        except ValueError:
            raise ProtocolError(f"notice gives unknown reason {reason}") from None
        return Notice(raw if to_uuid is None else to_uuid(raw), why)

    def stats(buf: bytearray, at: int, length: int) -> Reply:
        return decode_stats(">", s_stats, s_stats_more, buf, at, length)

    s_arena_map = fmt.s_arena_map

    def arena_map(buf: bytearray, at: int, length: int) -> Reply:
        size, min_block, cell_bytes, n = s_arena_map.unpack_from(buf, at)
        cells = take_tail(buf, at, s_arena_map.size, n, length, "arena map cells")
        return ArenaMapReply(size, min_block, cell_bytes, bytes(cells))

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
        (NetType.SET_DONE, s_done_version.size, False, done_version_of(Op.SET)),
        (NetType.WRITE_DONE, s_done_version.size, False, done_version_of(Op.WRITE)),
        (NetType.RENEW_DONE, s_id.size, False, done_of(Op.RENEW)),
        (NetType.RELEASE_DONE, s_id.size, False, done_of(Op.RELEASE)),
        (NetType.LEASE_INFO, s_info.size, False, info),
        (NetType.SERVER_STATS, s_stats.size, True, stats),
        (NetType.ERROR, s_error.size, True, error),
        (NetType.GETS_DATA, s_gets_data.size, True, gets_data),
        (NetType.CAS_RESULT, s_cas_result.size, False, cas_result),
        (NetType.GRANTED_MANY, s_granted_many.size, True, granted_many),
        (NetType.RENEW_MANY_DONE, s_ids.size, True, ids_of(Op.RENEW_MANY)),
        (NetType.RELEASE_MANY_DONE, s_ids.size, True, ids_of(Op.RELEASE_MANY)),
        (NetType.WATCHING, s_ids.size, True, ids_of(Op.WATCH)),
        (NetType.UNWATCHED, s_ids.size, True, ids_of(Op.UNWATCH)),
        (NetType.NOTICE, s_notice.size, False, notice),
        (NetType.ARENA_MAP_DATA, s_arena_map.size, True, arena_map),
    ]
    return {
        kind: PayloadRule(kind.name.lower().replace("_", " "), fixed, variable, decode)
        for kind, fixed, variable, decode in table
    }
