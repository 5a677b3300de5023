"""The native format's struct forms (derived from ``layout``) and the server's codec.

Replies to the original's own requests (lease, set, get) keep the original's forms, refusals
included, so the C++ client always understands them; memlease's own operations answer with
types 12 and up. The client's codec is in ``client_codec``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from memlease_wire.derive import derive
from memlease_wire.framing import (
    FrameDecoder,
    PayloadRule,
    short_text,
    take_tail,
)

from memlease.core.errors import ErrorCode, ProtocolError
from memlease.core.messages import (
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
from memlease.protocol import Bytes, ServerCodec
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

# The hot paths use plain ints and module-level aliases: an IntEnum or Enum member looked up
# on its class, or an Enum used as a dict key, costs a Python-level call each time.
TYPE_OF_OP: dict[str, int] = {op._value_: int(code) for op, code in OP_TYPE.items()}
_GET, _SET, _LEASE = Op.GET, Op.SET, Op.LEASE
_T_LEASED = int(T.LEASED)
_T_ACCESS_DATA = int(T.ACCESS_DATA)
_T_DATA_SET = int(T.DATA_SET)
_T_READ_DATA = int(T.READ_DATA)
_T_DONE = int(T.DONE)
_T_LEASE_INFO = int(T.LEASE_INFO)
_T_SERVER_STATS = int(T.SERVER_STATS)
_T_ERROR = int(T.ERROR)
_ID_SIZE = S_ID.size
_ID_AND_DATA_SIZE = S_ID_AND_DATA.size
_WRITE_SIZE = S_WRITE.size
_SET_DONE = F_STATUS.pack(T.DATA_SET, S_STATUS.size, L.DATA_SET_OK)
_LEASE_REFUSED = F_ID.pack(T.LEASED, S_ID.size, L.LEASE_REFUSED)
_OUT_OF_RANGE = ErrorCode.OUT_OF_RANGE


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


def _echo_id(lease_id: LeaseId | None) -> int:
    """An id to echo in a refusal; 0 where there is none (or it cannot be carried)."""
    return lease_id if type(lease_id) is int and -MAX_ID - 1 <= lease_id <= MAX_ID else 0


def data_header(kind: int, lease_id: LeaseId, n: int) -> bytes:
    """The header of a data frame (a get's or read's reply, or a set) of ``n`` data bytes."""
    return F_ID_AND_DATA.pack(kind, _ID_AND_DATA_SIZE + n, lease_id, n)


def data_frame(kind: int, lease_id: LeaseId, data: bytes | memoryview) -> bytes:
    return data_header(kind, lease_id, len(data)) + data


def _encode_data(reply: Data) -> bytes:
    kind = _T_ACCESS_DATA if reply.op is _GET else _T_READ_DATA
    data = reply.data
    n = len(data)
    return F_ID_AND_DATA.pack(kind, _ID_AND_DATA_SIZE + n, reply.lease_id, n) + data


def encode_data_parts(reply: Data) -> tuple[bytes, bytes | memoryview]:
    """``reply``'s frame as header and data, so that the data is sent without a copy."""
    kind = _T_ACCESS_DATA if reply.op is _GET else _T_READ_DATA
    data = reply.data
    try:
        return data_header(kind, reply.lease_id, len(data)), data
    except struct.error as exc:
        raise ProtocolError(f"{PROTOCOL}: cannot encode {reply!r:.200}: {exc}") from None


def _encode_done(reply: Done) -> bytes:
    if reply.op is _SET:
        return _SET_DONE
    return F_DONE.pack(_T_DONE, S_DONE.size, TYPE_OF_OP[reply.op._value_], reply.lease_id)


def _encode_granted(reply: Granted) -> bytes:
    return F_ID.pack(_T_LEASED, _ID_SIZE, reply.lease_id)


def _encode_lease_info(reply: LeaseInfo) -> bytes:
    size = S_LEASE_INFO.size
    return F_LEASE_INFO.pack(_T_LEASE_INFO, size, reply.lease_id, reply.size, reply.ttl_ms)


def _encode_server_stats(s: ServerStats) -> bytes:
    return F_SERVER_STATS.pack(
        _T_SERVER_STATS,
        S_SERVER_STATS.size,
        *(s.arena_size, s.used, s.free, s.largest_free, s.internal_fragmentation),
        s.external_fragmentation,
        *(s.live_leases, s.granted, s.expired, s.released, s.refused, s.connections),
        s.closed_for_guessing,
    )


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


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Data: _encode_data,
    Done: _encode_done,
    Granted: _encode_granted,
    ErrorReply: _encode_error,
    LeaseInfo: _encode_lease_info,
    ServerStats: _encode_server_stats,
}


def encode_reply(reply: Reply) -> bytes:
    """The native bytes of ``reply``."""
    encode = _ENCODERS.get(type(reply))
    if encode is None:
        raise ProtocolError(f"{PROTOCOL}: no native form for a {type(reply).__name__} reply")
    try:
        return encode(reply)
    except struct.error as exc:
        raise ProtocolError(f"{PROTOCOL}: cannot encode {reply!r:.200}: {exc}") from None


EARLY_KEY = struct.Struct("=l")
"""The type field alone: a network or uuid stats request (8 bytes) is shorter than a native
header (12), and is refused on its first 4 bytes instead of waited for."""
_NETWORK_REQUEST_TYPES = range(0x01, 0x0A)


def describe_type(key: int) -> str:
    """What is wrong with an unknown type; naming the protocol the frame seems to be of."""
    version, kind, flags = key & 0xFF, (key >> 8) & 0xFF, (key >> 16) & 0xFFFF
    # A network header read as a host-order int32: version 1, then a type, then flags.
    if version == 1 and kind in _NETWORK_REQUEST_TYPES and flags in (0, 1):
        other = "uuid" if flags else "network"
        return f"a {other} frame (type {kind}), it seems; this side speaks {PROTOCOL}"
    return f"unknown message type {key}"


class NativeServerCodec(FrameDecoder[Request], ServerCodec):
    """The server's end of one native connection."""

    __slots__ = ()

    def __init__(self, max_message: int) -> None:
        super().__init__(
            protocol=PROTOCOL,
            header=S_HEADER,
            rules=REQUEST_RULES,
            max_message=max_message,
            unknown=describe_type,
            early_key=EARLY_KEY,
        )

    # The frame decoder's own method, not a wrapper: this is the hottest call of a server.
    next_request = FrameDecoder.next_message
    encode_reply = staticmethod(encode_reply)

    def encode_reply_parts(self, reply: Reply) -> Sequence[Bytes]:
        if type(reply) is Data:
            return encode_data_parts(reply)
        return (encode_reply(reply),)
