"""The native format's struct forms (derived from ``layout``) and the server's codec.

Replies to the original's own requests (lease, set, get) keep the original's forms, refusals
included, so the C++ client always understands them; memlease's own operations answer with
types 12 and up. The client's codec is in ``client_codec``.
"""

from __future__ import annotations

import struct

from memlease_wire.derive import derive
from memlease_wire.framing import (
    FrameDecoder,
    PayloadRule,
    short_text,
    take_tail,
)

from memlease.errors import ErrorCode, ProtocolError
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
from memlease_native import layout as L
from memlease_native.layout import NativeType as T

PROTOCOL = "native"
MAX_ID = 0x7FFFFFFF

S_HEADER = derive(L.HEADER).fixed
S_LEASE = derive(L.LEASE).fixed
S_ID = derive(L.ACCESS_DATA_REQUEST).fixed
S_ID_AND_DATA = derive(L.SET_DATA).fixed
S_READ = derive(L.READ).fixed
S_WRITE = derive(L.WRITE).fixed
S_RENEW = derive(L.RENEW).fixed
S_STATUS = derive(L.DATA_SET).fixed
S_DONE = derive(L.DONE).fixed
S_LEASE_INFO = derive(L.LEASE_INFO).fixed
S_SERVER_STATS = derive(L.SERVER_STATS).fixed
S_ERROR = derive(L.ERROR).fixed

# Whole-frame forms (header and fixed payload in one pack) for the encoders.
F_LEASE = derive(L.HEADER, L.LEASE).fixed
F_ID = derive(L.HEADER, L.ACCESS_DATA_REQUEST).fixed
F_ID_AND_DATA = derive(L.HEADER, L.SET_DATA).fixed
F_READ = derive(L.HEADER, L.READ).fixed
F_WRITE = derive(L.HEADER, L.WRITE).fixed
F_RENEW = derive(L.HEADER, L.RENEW).fixed
F_STATUS = derive(L.HEADER, L.DATA_SET).fixed
F_DONE = derive(L.HEADER, L.DONE).fixed
F_LEASE_INFO = derive(L.HEADER, L.LEASE_INFO).fixed
F_SERVER_STATS = derive(L.HEADER, L.SERVER_STATS).fixed
F_ERROR = derive(L.HEADER, L.ERROR).fixed

HEADER_SIZE = S_HEADER.size

OP_TYPE: dict[Op, int] = {
    Op.LEASE: T.LEASE,
    Op.SET: T.SET_DATA,
    Op.GET: T.ACCESS_DATA,
    Op.READ: T.READ,
    Op.WRITE: T.WRITE,
    Op.RENEW: T.RENEW,
    Op.RELEASE: T.RELEASE,
    Op.STAT: T.STAT,
    Op.STATS: T.STATS,
}
TYPE_OP: dict[int, Op] = {code: op for op, code in OP_TYPE.items()}


# ---------------------------------------------------------------- server side


def _lease(buf: bytearray, at: int, length: int) -> Request:
    size, ttl_ms = S_LEASE.unpack_from(buf, at)
    return LeaseRequest(size, ttl_ms)


def _set(buf: bytearray, at: int, length: int) -> Request:
    lease_id, n = S_ID_AND_DATA.unpack_from(buf, at)
    return SetRequest(lease_id, take_tail(buf, at, S_ID_AND_DATA.size, n, length, "set data"))


def _get(buf: bytearray, at: int, length: int) -> Request:
    return GetRequest(S_ID.unpack_from(buf, at)[0])


def _read(buf: bytearray, at: int, length: int) -> Request:
    return ReadRequest(*S_READ.unpack_from(buf, at))


def _write(buf: bytearray, at: int, length: int) -> Request:
    lease_id, offset, n = S_WRITE.unpack_from(buf, at)
    return WriteRequest(lease_id, offset, take_tail(buf, at, S_WRITE.size, n, length, "write"))


def _renew(buf: bytearray, at: int, length: int) -> Request:
    return RenewRequest(*S_RENEW.unpack_from(buf, at))


def _release(buf: bytearray, at: int, length: int) -> Request:
    return ReleaseRequest(S_ID.unpack_from(buf, at)[0])


def _stat(buf: bytearray, at: int, length: int) -> Request:
    return StatRequest(S_ID.unpack_from(buf, at)[0])


def _stats(buf: bytearray, at: int, length: int) -> Request:
    return StatsRequest()


REQUEST_RULES: dict[int, PayloadRule[Request]] = {
    T.LEASE: PayloadRule("lease", S_LEASE.size, False, _lease),
    T.SET_DATA: PayloadRule("set", S_ID_AND_DATA.size, True, _set),
    T.ACCESS_DATA: PayloadRule("get", S_ID.size, False, _get),
    T.READ: PayloadRule("read", S_READ.size, False, _read),
    T.WRITE: PayloadRule("write", S_WRITE.size, True, _write),
    T.RENEW: PayloadRule("renew", S_RENEW.size, False, _renew),
    T.RELEASE: PayloadRule("release", S_ID.size, False, _release),
    T.STAT: PayloadRule("stat", S_ID.size, False, _stat),
    T.STATS: PayloadRule("stats", 0, False, _stats),
}


def _wire_id(lease_id: LeaseId | None) -> int:
    """An id to echo in a reply; 0 where there is none (or it cannot be carried)."""
    return lease_id if type(lease_id) is int and -MAX_ID - 1 <= lease_id <= MAX_ID else 0


def data_frame(kind: int, lease_id: int, data: bytes) -> bytes:
    n = len(data)
    return F_ID_AND_DATA.pack(kind, S_ID_AND_DATA.size + n, lease_id, n) + data


def encode_reply(reply: Reply) -> bytes:
    """The native bytes of ``reply``."""
    try:
        if isinstance(reply, Data):
            frame = T.ACCESS_DATA if reply.op is Op.GET else T.READ_DATA
            return data_frame(frame, _wire_id(reply.lease_id), reply.data)
        if isinstance(reply, Done):
            if reply.op is Op.SET:
                return F_STATUS.pack(T.DATA_SET, S_STATUS.size, L.DATA_SET_OK)
            return F_DONE.pack(T.DONE, S_DONE.size, OP_TYPE[reply.op], _wire_id(reply.lease_id))
        if isinstance(reply, Granted):
            return F_ID.pack(T.LEASED, S_ID.size, _wire_id(reply.lease_id))
        if isinstance(reply, ErrorReply):
            return _encode_error(reply)
        if isinstance(reply, LeaseInfo):
            return F_LEASE_INFO.pack(
                T.LEASE_INFO, S_LEASE_INFO.size, _wire_id(reply.lease_id), reply.size, reply.ttl_ms
            )
        if isinstance(reply, ServerStats):
            return F_SERVER_STATS.pack(T.SERVER_STATS, S_SERVER_STATS.size, *_stats_fields(reply))
    except struct.error as exc:
        raise ProtocolError(f"{PROTOCOL}: cannot encode {type(reply).__name__}: {exc}") from None
    raise ProtocolError(f"{PROTOCOL}: no native form for a {type(reply).__name__} reply")


def _stats_fields(s: ServerStats) -> tuple[int | float, ...]:
    return (
        s.arena_size,
        s.used,
        s.free,
        s.largest_free,
        s.internal_fragmentation,
        s.external_fragmentation,
        s.live_leases,
        s.granted,
        s.expired,
        s.released,
        s.refused,
        s.connections,
    )


def _encode_error(reply: ErrorReply) -> bytes:
    op = reply.op
    # The original client reads only its own reply forms: refusals of its requests use them.
    if op is Op.LEASE:
        return F_ID.pack(T.LEASED, S_ID.size, L.LEASE_REFUSED)
    if op is Op.GET:
        return data_frame(T.ACCESS_DATA, _wire_id(reply.lease_id), b"")
    if op is Op.SET:
        too_large = reply.code is ErrorCode.OUT_OF_RANGE
        status = L.DATA_SET_TOO_LARGE if too_large else L.DATA_SET_NOT_FOUND
        return F_STATUS.pack(T.DATA_SET, S_STATUS.size, status)
    message = short_text(reply.message)
    return (
        F_ERROR.pack(
            T.ERROR,
            S_ERROR.size + len(message),
            int(reply.code),
            0 if op is None else OP_TYPE[op],
            _wire_id(reply.lease_id),
            len(message),
        )
        + message
    )


class NativeServerCodec:
    """The server's end of one native connection."""

    __slots__ = ("_frames",)

    def __init__(self, max_message: int) -> None:
        self._frames = FrameDecoder(
            protocol=PROTOCOL,
            header=S_HEADER,
            read_header=S_HEADER.unpack_from,
            rules=REQUEST_RULES,
            max_message=max_message,
        )

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_request(self) -> Request | None:
        return self._frames.next_message()

    def encode_reply(self, reply: Reply) -> bytes:
        return encode_reply(reply)
