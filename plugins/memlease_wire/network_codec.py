"""Sans-IO codecs of the ``network`` and ``uuid`` formats, one implementation for both.

A :class:`NetworkFormat` is built once per id variant: it declares the layouts with its id
field, derives their struct forms, and makes codecs for connections. Every reply says which
operation it answers, so neither side needs to remember what it sent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from memlease.errors import ProtocolError
from memlease.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    LeaseId,
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
from memlease_wire.derive import derive
from memlease_wire.framing import (
    FrameDecoder,
    PayloadRule,
    check_size,
    error_code,
    short_text,
    take_tail,
)
from memlease_wire.network_ids import IdFormat
from memlease_wire.network_layout import HEADER, REPLY_BIT, VERSION, NetType, declare

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
}
TYPE_OP: dict[int, Op] = {code: op for op, code in OP_TYPE.items()}


class NetworkFormat:
    """The network layout with one kind of lease id, ready to make codecs."""

    def __init__(self, protocol: str, ids: IdFormat) -> None:
        self.protocol = protocol
        self.ids = ids
        self.layouts = L = declare(ids.field)
        self.s_header = derive(HEADER).fixed
        self.s_lease = derive(L.lease).fixed
        self.s_id = derive(L.id_only).fixed
        self.s_id_and_data = derive(L.id_and_data).fixed
        self.s_read = derive(L.read).fixed
        self.s_write = derive(L.write).fixed
        self.s_renew = derive(L.renew).fixed
        self.s_granted = derive(L.granted).fixed
        self.s_lease_info = derive(L.lease_info).fixed
        self.s_server_stats = derive(L.server_stats).fixed
        self.s_error = derive(L.error).fixed
        # Whole-frame forms: header and fixed payload in one pack.
        self.f_lease = derive(HEADER, L.lease).fixed
        self.f_id = derive(HEADER, L.id_only).fixed
        self.f_id_and_data = derive(HEADER, L.id_and_data).fixed
        self.f_read = derive(HEADER, L.read).fixed
        self.f_write = derive(HEADER, L.write).fixed
        self.f_renew = derive(HEADER, L.renew).fixed
        self.f_granted = derive(HEADER, L.granted).fixed
        self.f_lease_info = derive(HEADER, L.lease_info).fixed
        self.f_server_stats = derive(HEADER, L.server_stats).fixed
        self.f_error = derive(HEADER, L.error).fixed
        self.header_size = self.s_header.size
        self.request_rules = self._request_rules()
        self.reply_rules = self._reply_rules()

    def server_codec(self, max_message: int) -> NetworkServerCodec:
        """A server codec for one connection."""
        return NetworkServerCodec(self, max_message)

    def client_codec(self, max_message: int) -> NetworkClientCodec:
        """A client codec for one connection."""
        return NetworkClientCodec(self, max_message)

    def read_header(self, buf: bytearray, at: int) -> tuple[int, int]:
        version, kind, flags, length = self.s_header.unpack_from(buf, at)
        if version != VERSION:
            raise ProtocolError(
                f"frame has version {version}, this side speaks version {VERSION} (is the peer "
                "speaking another protocol on this port?)"
            )
        if flags:
            raise ProtocolError(f"frame has flags {flags:#06x}; no flags are defined yet")
        return kind, length

    # ------------------------------------------------------------ decoding

    def _request_rules(self) -> dict[int, PayloadRule[Request]]:
        ids = self.ids.from_wire
        kind = self.ids.kind
        s_lease, s_id, s_data = self.s_lease, self.s_id, self.s_id_and_data
        s_read, s_write, s_renew = self.s_read, self.s_write, self.s_renew

        def lease(buf: bytearray, at: int, length: int) -> Request:
            size, ttl_ms = s_lease.unpack_from(buf, at)
            return LeaseRequest(size, ttl_ms, kind)

        def get(buf: bytearray, at: int, length: int) -> Request:
            return GetRequest(ids(s_id.unpack_from(buf, at)[0]))

        def set_(buf: bytearray, at: int, length: int) -> Request:
            raw, n = s_data.unpack_from(buf, at)
            return SetRequest(ids(raw), take_tail(buf, at, s_data.size, n, length, "set data"))

        def read(buf: bytearray, at: int, length: int) -> Request:
            raw, offset, n = s_read.unpack_from(buf, at)
            return ReadRequest(ids(raw), offset, n)

        def write(buf: bytearray, at: int, length: int) -> Request:
            raw, offset, n = s_write.unpack_from(buf, at)
            data = take_tail(buf, at, s_write.size, n, length, "write data")
            return WriteRequest(ids(raw), offset, data)

        def renew(buf: bytearray, at: int, length: int) -> Request:
            raw, ttl_ms = s_renew.unpack_from(buf, at)
            return RenewRequest(ids(raw), ttl_ms)

        def release(buf: bytearray, at: int, length: int) -> Request:
            return ReleaseRequest(ids(s_id.unpack_from(buf, at)[0]))

        def stat(buf: bytearray, at: int, length: int) -> Request:
            return StatRequest(ids(s_id.unpack_from(buf, at)[0]))

        def stats(buf: bytearray, at: int, length: int) -> Request:
            return StatsRequest()

        return {
            NetType.LEASE: PayloadRule("lease", s_lease.size, False, lease),
            NetType.GET: PayloadRule("get", s_id.size, False, get),
            NetType.SET: PayloadRule("set", s_data.size, True, set_),
            NetType.READ: PayloadRule("read", s_read.size, False, read),
            NetType.WRITE: PayloadRule("write", s_write.size, True, write),
            NetType.RENEW: PayloadRule("renew", s_renew.size, False, renew),
            NetType.RELEASE: PayloadRule("release", s_id.size, False, release),
            NetType.STAT: PayloadRule("stat", s_id.size, False, stat),
            NetType.STATS: PayloadRule("stats", 0, False, stats),
        }

    def _reply_rules(self) -> dict[int, PayloadRule[Reply]]:
        ids = self.ids.from_wire
        absent = self.ids.absent
        s_id, s_data, s_granted = self.s_id, self.s_id_and_data, self.s_granted
        s_info, s_stats, s_error = self.s_lease_info, self.s_server_stats, self.s_error

        def granted(buf: bytearray, at: int, length: int) -> Reply:
            raw, size, ttl_ms = s_granted.unpack_from(buf, at)
            return Granted(ids(raw), size, ttl_ms)

        def data_of(op: Op) -> Callable[[bytearray, int, int], Reply]:
            def data(buf: bytearray, at: int, length: int) -> Reply:
                raw, n = s_data.unpack_from(buf, at)
                return Data(op, ids(raw), take_tail(buf, at, s_data.size, n, length, "data"))

            return data

        def done_of(op: Op) -> Callable[[bytearray, int, int], Reply]:
            def done(buf: bytearray, at: int, length: int) -> Reply:
                return Done(op, ids(s_id.unpack_from(buf, at)[0]))

            return done

        def info(buf: bytearray, at: int, length: int) -> Reply:
            raw, size, ttl_ms = s_info.unpack_from(buf, at)
            return LeaseInfo(ids(raw), size, ttl_ms)

        def stats(buf: bytearray, at: int, length: int) -> Reply:
            return ServerStats(*s_stats.unpack_from(buf, at))

        def error(buf: bytearray, at: int, length: int) -> Reply:
            code, request_type, raw, n = s_error.unpack_from(buf, at)
            message = take_tail(buf, at, s_error.size, n, length, "error message")
            op = TYPE_OP.get(request_type)
            if request_type and op is None:
                raise ProtocolError(f"error reply names unknown request type {request_type}")
            lease_id = None if raw == absent else ids(raw)
            return ErrorReply(error_code(code), message.decode("utf-8", "replace"), op, lease_id)

        def rule(kind: NetType, fixed: int, variable: bool, decode: Any) -> PayloadRule[Reply]:
            return PayloadRule(kind.name.lower().replace("_", " "), fixed, variable, decode)

        return {
            kind: rule(kind, fixed, variable, decode)
            for kind, fixed, variable, decode in [
                (NetType.GRANTED, s_granted.size, False, granted),
                (NetType.GET_DATA, s_data.size, True, data_of(Op.GET)),
                (NetType.READ_DATA, s_data.size, True, data_of(Op.READ)),
                (NetType.SET_DONE, s_id.size, False, done_of(Op.SET)),
                (NetType.WRITE_DONE, s_id.size, False, done_of(Op.WRITE)),
                (NetType.RENEW_DONE, s_id.size, False, done_of(Op.RENEW)),
                (NetType.RELEASE_DONE, s_id.size, False, done_of(Op.RELEASE)),
                (NetType.LEASE_INFO, s_info.size, False, info),
                (NetType.SERVER_STATS, s_stats.size, False, stats),
                (NetType.ERROR, s_error.size, True, error),
            ]
        }

    # ------------------------------------------------------------ encoding

    def _id(self, lease_id: LeaseId | None) -> int | bytes:
        return self.ids.absent if lease_id is None else self.ids.to_wire(self.protocol, lease_id)

    def encode_reply(self, reply: Reply) -> bytes:
        """The bytes of ``reply``."""
        try:
            if isinstance(reply, Data):
                n = len(reply.data)
                kind = REPLY_BIT | OP_TYPE[reply.op]
                size = self.s_id_and_data.size + n
                lease_id = self._id(reply.lease_id)
                return self.f_id_and_data.pack(VERSION, kind, 0, size, lease_id, n) + reply.data
            if isinstance(reply, Done):
                kind = REPLY_BIT | OP_TYPE[reply.op]
                return self.f_id.pack(VERSION, kind, 0, self.s_id.size, self._id(reply.lease_id))
            if isinstance(reply, Granted):
                return self.f_granted.pack(
                    VERSION,
                    NetType.GRANTED,
                    0,
                    self.s_granted.size,
                    self._id(reply.lease_id),
                    reply.size,
                    reply.ttl_ms,
                )
            if isinstance(reply, ErrorReply):
                message = short_text(reply.message)
                return (
                    self.f_error.pack(
                        VERSION,
                        NetType.ERROR,
                        0,
                        self.s_error.size + len(message),
                        int(reply.code),
                        0 if reply.op is None else OP_TYPE[reply.op],
                        self._error_id(reply.lease_id),
                        len(message),
                    )
                    + message
                )
            if isinstance(reply, LeaseInfo):
                return self.f_lease_info.pack(
                    VERSION,
                    NetType.LEASE_INFO,
                    0,
                    self.s_lease_info.size,
                    self._id(reply.lease_id),
                    reply.size,
                    reply.ttl_ms,
                )
            if isinstance(reply, ServerStats):
                s = reply
                return self.f_server_stats.pack(
                    VERSION,
                    NetType.SERVER_STATS,
                    0,
                    self.s_server_stats.size,
                    *(s.arena_size, s.used, s.free, s.largest_free, s.internal_fragmentation),
                    s.external_fragmentation,
                    *(s.live_leases, s.granted, s.expired, s.released, s.refused),
                    s.connections,
                )
        except struct.error as exc:
            raise ProtocolError(
                f"{self.protocol}: cannot encode {type(reply).__name__}: {exc}"
            ) from None
        raise ProtocolError(f"{self.protocol}: no form for a {type(reply).__name__} reply")

    def _error_id(self, lease_id: LeaseId | None) -> int | bytes:
        # A refusal echoes the id it was given; one this format cannot carry is left out.
        try:
            return self._id(lease_id)
        except ProtocolError:
            return self.ids.absent

    def encode_request(self, request: Request, max_message: int) -> bytes:
        """The bytes of ``request``; ProtocolError for one the format cannot carry."""
        try:
            if isinstance(request, SetRequest | WriteRequest):
                n = len(request.data)
                lease_id = self._id(request.lease_id)
                if isinstance(request, SetRequest):
                    size = self.s_id_and_data.size + n
                    check_size(self.protocol, "set", self.header_size + size, max_message)
                    head = self.f_id_and_data.pack(VERSION, NetType.SET, 0, size, lease_id, n)
                else:
                    size = self.s_write.size + n
                    check_size(self.protocol, "write", self.header_size + size, max_message)
                    head = self.f_write.pack(
                        VERSION, NetType.WRITE, 0, size, lease_id, request.offset, n
                    )
                return head + request.data
            if isinstance(request, GetRequest | ReleaseRequest | StatRequest):
                lease_id = self._id(request.lease_id)
                return self.f_id.pack(VERSION, OP_TYPE[request.op], 0, self.s_id.size, lease_id)
            if isinstance(request, LeaseRequest):
                return self.f_lease.pack(
                    VERSION, NetType.LEASE, 0, self.s_lease.size, request.size, request.ttl_ms
                )
            if isinstance(request, ReadRequest):
                lease_id = self._id(request.lease_id)
                size = self.s_read.size
                return self.f_read.pack(
                    VERSION, NetType.READ, 0, size, lease_id, request.offset, request.length
                )
            if isinstance(request, RenewRequest):
                lease_id = self._id(request.lease_id)
                size = self.s_renew.size
                return self.f_renew.pack(VERSION, NetType.RENEW, 0, size, lease_id, request.ttl_ms)
            if isinstance(request, StatsRequest):
                return self.s_header.pack(VERSION, NetType.STATS, 0, 0)
        except struct.error as exc:
            raise ProtocolError(
                f"{self.protocol}: {type(request).__name__} does not fit the format's fields: {exc}"
            ) from None
        raise ProtocolError(f"{self.protocol}: no form for a {type(request).__name__}")


class NetworkServerCodec:
    """The server's end of one network or uuid connection."""

    __slots__ = ("_format", "_frames")

    def __init__(self, fmt: NetworkFormat, max_message: int) -> None:
        self._format = fmt
        self._frames = FrameDecoder(
            protocol=fmt.protocol,
            header=fmt.s_header,
            read_header=fmt.read_header,
            rules=fmt.request_rules,
            max_message=max_message,
        )

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_request(self) -> Request | None:
        return self._frames.next_message()

    def encode_reply(self, reply: Reply) -> bytes:
        return self._format.encode_reply(reply)


class NetworkClientCodec:
    """The client's end of one network or uuid connection."""

    __slots__ = ("_format", "_frames", "_max")

    def __init__(self, fmt: NetworkFormat, max_message: int) -> None:
        self._format = fmt
        self._max = max_message
        self._frames = FrameDecoder(
            protocol=fmt.protocol,
            header=fmt.s_header,
            read_header=fmt.read_header,
            rules=fmt.reply_rules,
            max_message=max_message,
        )

    def encode_request(self, request: Request) -> bytes:
        return self._format.encode_request(request, self._max)

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_reply(self) -> Reply | None:
        return self._frames.next_message()
