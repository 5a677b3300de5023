"""Sans-IO codecs of the native format, running struct forms derived from ``layout``.

Replies to the original's own requests (lease, set, get) keep the original's forms, refusals
included, so the C++ client always understands them; memlease's own operations answer with
types 12 and up.
"""

from __future__ import annotations

import struct
from collections import deque

from memlease_wire.derive import derive
from memlease_wire.framing import (
    FrameDecoder,
    PayloadRule,
    check_size,
    error_code,
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


def _data_frame(kind: int, lease_id: int, data: bytes) -> bytes:
    n = len(data)
    return F_ID_AND_DATA.pack(kind, S_ID_AND_DATA.size + n, lease_id, n) + data


def encode_reply(reply: Reply) -> bytes:
    """The native bytes of ``reply``."""
    try:
        if isinstance(reply, Data):
            frame = T.ACCESS_DATA if reply.op is Op.GET else T.READ_DATA
            return _data_frame(frame, _wire_id(reply.lease_id), reply.data)
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
        return _data_frame(T.ACCESS_DATA, _wire_id(reply.lease_id), b"")
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


# ---------------------------------------------------------------- client side


def _request_id(lease_id: LeaseId) -> int:
    if type(lease_id) is not int:
        raise ProtocolError(
            f"{PROTOCOL}: lease id {lease_id!r} is not an int; the native format carries int "
            "ids only (UUID leases belong to the uuid protocol)"
        )
    if not 0 < lease_id <= MAX_ID:
        raise ProtocolError(
            f"{PROTOCOL}: lease id {lease_id} is outside 1..{MAX_ID}, so no native lease has it"
        )
    return lease_id


def encode_request(request: Request, max_message: int) -> tuple[bytes, int]:
    """The native bytes of ``request`` and the int id it names (0 for none)."""
    try:
        if isinstance(request, SetRequest):
            lease_id = _request_id(request.lease_id)
            size = HEADER_SIZE + S_ID_AND_DATA.size + len(request.data)
            check_size(PROTOCOL, "set", size, max_message)
            return _data_frame(T.SET_DATA, lease_id, request.data), lease_id
        if isinstance(request, GetRequest):
            lease_id = _request_id(request.lease_id)
            return F_ID.pack(T.ACCESS_DATA, S_ID.size, lease_id), lease_id
        if isinstance(request, LeaseRequest):
            return F_LEASE.pack(T.LEASE, S_LEASE.size, request.size, request.ttl_ms), 0
        if isinstance(request, ReadRequest):
            lease_id = _request_id(request.lease_id)
            frame = F_READ.pack(T.READ, S_READ.size, lease_id, request.offset, request.length)
            return frame, lease_id
        if isinstance(request, WriteRequest):
            lease_id = _request_id(request.lease_id)
            n = len(request.data)
            check_size(PROTOCOL, "write", HEADER_SIZE + S_WRITE.size + n, max_message)
            header = F_WRITE.pack(T.WRITE, S_WRITE.size + n, lease_id, request.offset, n)
            return header + request.data, lease_id
        if isinstance(request, RenewRequest):
            lease_id = _request_id(request.lease_id)
            return F_RENEW.pack(T.RENEW, S_RENEW.size, lease_id, request.ttl_ms), lease_id
        if isinstance(request, ReleaseRequest | StatRequest):
            lease_id = _request_id(request.lease_id)
            return F_ID.pack(OP_TYPE[request.op], S_ID.size, lease_id), lease_id
        if isinstance(request, StatsRequest):
            return S_HEADER.pack(T.STATS, 0), 0
    except struct.error as exc:
        raise ProtocolError(
            f"{PROTOCOL}: {type(request).__name__} does not fit the native format's fields: {exc}"
        ) from None
    raise ProtocolError(f"{PROTOCOL}: no native form for a {type(request).__name__}")


class NativeClientCodec:
    """The client's end of one native connection.

    The original's replies do not say which request they answer (a set's status carries no
    id), so the codec keeps the requests it encoded and pairs replies with them in order.
    """

    __slots__ = ("_frames", "_max", "_pending")

    def __init__(self, max_message: int) -> None:
        self._max = max_message
        self._pending: deque[tuple[Op, int]] = deque()
        rules: dict[int, PayloadRule[Reply]] = {
            T.LEASED: PayloadRule("leased", S_ID.size, False, self._leased),
            T.ACCESS_DATA: PayloadRule("access data", S_ID_AND_DATA.size, True, self._got),
            T.DATA_SET: PayloadRule("data set", S_STATUS.size, False, self._data_set),
            T.READ_DATA: PayloadRule("read data", S_ID_AND_DATA.size, True, self._read),
            T.DONE: PayloadRule("done", S_DONE.size, False, self._done),
            T.LEASE_INFO: PayloadRule("lease info", S_LEASE_INFO.size, False, self._info),
            T.SERVER_STATS: PayloadRule("stats", S_SERVER_STATS.size, False, self._stats),
            T.ERROR: PayloadRule("error", S_ERROR.size, True, self._error),
        }
        self._frames = FrameDecoder(
            protocol=PROTOCOL,
            header=S_HEADER,
            read_header=S_HEADER.unpack_from,
            rules=rules,
            max_message=max_message,
        )

    def encode_request(self, request: Request) -> bytes:
        frame, lease_id = encode_request(request, self._max)
        self._pending.append((request.op, lease_id))
        return frame

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_reply(self) -> Reply | None:
        return self._frames.next_message()

    def _answered(self, *expected: Op) -> int:
        """The id of the oldest outstanding request, which must be one of ``expected``."""
        if not self._pending:
            raise ProtocolError("a reply arrived with no request outstanding")
        op, lease_id = self._pending.popleft()
        if op not in expected:
            names = " or ".join(o.value for o in expected)
            raise ProtocolError(f"a reply to {names} arrived where a {op.value} reply was due")
        return lease_id

    def _leased(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.LEASE)
        (lease_id,) = S_ID.unpack_from(buf, at)
        if lease_id > 0:
            return Granted(lease_id, 0, 0)
        return ErrorReply(
            ErrorCode.NO_ROOM,
            "the server refused the lease (the native format does not say why: no room, or a "
            "size or ttl out of bounds); try a smaller or shorter lease, or later",
            Op.LEASE,
        )

    def _got(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.GET)
        lease_id, n = S_ID_AND_DATA.unpack_from(buf, at)
        data = take_tail(buf, at, S_ID_AND_DATA.size, n, length, "get reply")
        if n == 0:
            return ErrorReply(
                ErrorCode.NOT_FOUND,
                f"no lease {lease_id}: it expired, was released, or was never granted",
                Op.GET,
                lease_id,
            )
        return Data(Op.GET, lease_id, data)

    def _read(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.READ)
        lease_id, n = S_ID_AND_DATA.unpack_from(buf, at)
        return Data(
            Op.READ, lease_id, take_tail(buf, at, S_ID_AND_DATA.size, n, length, "read reply")
        )

    def _data_set(self, buf: bytearray, at: int, length: int) -> Reply:
        lease_id = self._answered(Op.SET)
        (status,) = S_STATUS.unpack_from(buf, at)
        if status == L.DATA_SET_OK:
            return Done(Op.SET, lease_id)
        if status == L.DATA_SET_NOT_FOUND:
            return ErrorReply(
                ErrorCode.NOT_FOUND,
                f"no lease {lease_id}: it expired, was released, or was never granted",
                Op.SET,
                lease_id,
            )
        if status == L.DATA_SET_TOO_LARGE:
            return ErrorReply(
                ErrorCode.OUT_OF_RANGE,
                f"the data is larger than lease {lease_id}; send less or lease more",
                Op.SET,
                lease_id,
            )
        raise ProtocolError(f"data set reply has unknown status {status}")

    def _done(self, buf: bytearray, at: int, length: int) -> Reply:
        request_type, lease_id = S_DONE.unpack_from(buf, at)
        op = TYPE_OP.get(request_type)
        if op not in (Op.WRITE, Op.RENEW, Op.RELEASE):
            raise ProtocolError(f"done reply names request type {request_type}, not one it ends")
        assert op is not None
        self._answered(op)
        return Done(op, lease_id)

    def _info(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.STAT)
        return LeaseInfo(*S_LEASE_INFO.unpack_from(buf, at))

    def _stats(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.STATS)
        return ServerStats(*S_SERVER_STATS.unpack_from(buf, at))

    def _error(self, buf: bytearray, at: int, length: int) -> Reply:
        code, request_type, lease_id, n = S_ERROR.unpack_from(buf, at)
        message = take_tail(buf, at, S_ERROR.size, n, length, "error reply")
        op = TYPE_OP.get(request_type)
        if request_type != 0 and op is None:
            raise ProtocolError(f"error reply names unknown request type {request_type}")
        if self._pending:
            self._pending.popleft()
        return ErrorReply(
            error_code(code), message.decode("utf-8", "replace"), op, lease_id or None
        )
