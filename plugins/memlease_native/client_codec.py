"""The client's end of a native connection: requests to bytes, the original's replies back.

The original's replies do not always say which request they answer, so this codec keeps the
requests it encoded and pairs replies with them in order.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from memlease_wire.framing import (
    FrameDecoder,
    PayloadRule,
    check_size,
    error_code,
    take_tail,
)
from memlease_wire.ranges import out_of_range
from memlease_wire.stats_fields import decode_stats

from memlease.core.errors import ErrorCode, ProtocolError, not_found_message
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
    Reply,
    Request,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)
from memlease.protocol import ClientCodec
from memlease_native import layout as L
from memlease_native.codec import (
    F_CAS,
    F_ID,
    F_LEASE,
    F_LEASE_MANY,
    F_READ,
    F_RENEW,
    F_WRITE,
    HEADER_SIZE,
    MAX_ID,
    OP_TYPE,
    PROTOCOL,
    S_ARENA_MAP_DATA,
    S_CAS,
    S_CAS_RESULT,
    S_COUNT,
    S_DONE,
    S_ERROR,
    S_GETS_DATA,
    S_HEADER,
    S_ID,
    S_ID_AND_DATA,
    S_IDS_REPLY,
    S_LEASE,
    S_LEASE_INFO,
    S_LEASE_MANY,
    S_NOTICE,
    S_READ,
    S_RENEW,
    S_RENEW_MANY,
    S_SERVER_STATS,
    S_SERVER_STATS_MORE,
    S_STATUS,
    S_VERSION_DONE,
    S_WRITE,
    TYPE_OP,
    data_frame,
    pack_ids,
    unpack_ids,
)
from memlease_native.layout import NativeType as T

# Module-level aliases: looking an Enum member up on its class runs Python code every time.
_LEASE, _GET, _SET, _READ = Op.LEASE, Op.GET, Op.SET, Op.READ
_STAT, _STATS = Op.STAT, Op.STATS
_ENDED_BY_DONE = (Op.RENEW, Op.RELEASE)
_ANSWERED_BY_IDS = (Op.RENEW_MANY, Op.RELEASE_MANY, Op.WATCH, Op.UNWATCH)
_T_SET_DATA = int(T.SET_DATA)
_DATA_SET_OK = L.DATA_SET_OK
_T_ACCESS_DATA = int(T.ACCESS_DATA)
_ID_SIZE = S_ID.size
_ID_AND_DATA_SIZE = S_ID_AND_DATA.size


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


def _set(request: SetRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    check_size(PROTOCOL, "set", HEADER_SIZE + _ID_AND_DATA_SIZE + len(request.data), max_message)
    return data_frame(_T_SET_DATA, lease_id, request.data), lease_id


def _get(request: GetRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    return F_ID.pack(_T_ACCESS_DATA, _ID_SIZE, lease_id), lease_id


def _lease(request: LeaseRequest, max_message: int) -> tuple[bytes, int]:
    kind = T.LEASE_BOUND if request.bound else T.LEASE
    return F_LEASE.pack(kind, S_LEASE.size, request.size, request.ttl_ms), 0


def _gets(request: GetsRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    return F_ID.pack(T.GETS, _ID_SIZE, lease_id), lease_id


def _cas(request: CasRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    n = len(request.data)
    size = S_CAS.size + n
    check_size(PROTOCOL, "cas", HEADER_SIZE + size, max_message)
    head = F_CAS.pack(T.CAS, size, lease_id, request.version, request.offset, n)
    return head + request.data, lease_id


def _lease_many(request: LeaseManyRequest, max_message: int) -> tuple[bytes, int]:
    flags = L.LEASE_MANY_BOUND if request.bound else 0
    size = S_LEASE_MANY.size
    frame = F_LEASE_MANY.pack(
        T.LEASE_MANY, size, request.count, request.size, request.ttl_ms, flags
    )
    return frame, 0


def _ids(
    request: RenewManyRequest | ReleaseManyRequest | WatchRequest | UnwatchRequest,
    max_message: int,
) -> tuple[bytes, int]:
    lease_ids = [_request_id(lease_id) for lease_id in request.lease_ids]
    n = len(lease_ids)
    if type(request) is RenewManyRequest:
        fixed = S_RENEW_MANY.pack(request.ttl_ms, n)
    else:
        fixed = S_COUNT.pack(n)
    size = len(fixed) + 4 * n
    check_size(PROTOCOL, request.op.value, HEADER_SIZE + size, max_message)
    return S_HEADER.pack(OP_TYPE[request.op], size) + fixed + pack_ids(lease_ids), 0


def _read(request: ReadRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    frame = F_READ.pack(T.READ, S_READ.size, lease_id, request.offset, request.length)
    return frame, lease_id


def _write(request: WriteRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    n = len(request.data)
    check_size(PROTOCOL, "write", HEADER_SIZE + S_WRITE.size + n, max_message)
    header = F_WRITE.pack(T.WRITE, S_WRITE.size + n, lease_id, request.offset, n)
    return header + request.data, lease_id


def _renew(request: RenewRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    return F_RENEW.pack(T.RENEW, S_RENEW.size, lease_id, request.ttl_ms), lease_id


def _id_only(request: ReleaseRequest | StatRequest, max_message: int) -> tuple[bytes, int]:
    lease_id = _request_id(request.lease_id)
    return F_ID.pack(OP_TYPE[request.op], _ID_SIZE, lease_id), lease_id


def _stats(request: StatsRequest, max_message: int) -> tuple[bytes, int]:
    return S_HEADER.pack(T.STATS, 0), 0


def _arena_map(request: ArenaMapRequest, max_message: int) -> tuple[bytes, int]:
    return S_HEADER.pack(T.ARENA_MAP, 0), 0


# The declaration of each request's payload, whose fields name the request's numbers.
_LAYOUTS = {
    LeaseRequest: L.LEASE,
    ReadRequest: L.READ,
    WriteRequest: L.WRITE,
    RenewRequest: L.RENEW,
}

_ENCODERS: dict[type, Callable[[Any, int], tuple[bytes, int]]] = {
    SetRequest: _set,
    GetRequest: _get,
    LeaseRequest: _lease,
    ReadRequest: _read,
    WriteRequest: _write,
    RenewRequest: _renew,
    ReleaseRequest: _id_only,
    StatRequest: _id_only,
    StatsRequest: _stats,
    GetsRequest: _gets,
    CasRequest: _cas,
    LeaseManyRequest: _lease_many,
    RenewManyRequest: _ids,
    ReleaseManyRequest: _ids,
    WatchRequest: _ids,
    UnwatchRequest: _ids,
    ArenaMapRequest: _arena_map,
}


def encode_request(request: Request, max_message: int) -> tuple[bytes, int]:
    """The native bytes of ``request`` and the int id it names (0 for none)."""
    encode = _ENCODERS.get(type(request))
    if encode is None:
        raise ProtocolError(f"{PROTOCOL}: no native form for a {type(request).__name__}")
    try:
        return encode(request, max_message)
    except struct.error:
        raise out_of_range(PROTOCOL, request, _LAYOUTS.get(type(request), L.STATS)) from None


class NativeClientCodec(FrameDecoder[Reply], ClientCodec):
    """The client's end of one native connection.

    The original's replies do not say which request they answer (a set's status carries no
    id), so the codec keeps the requests it encoded and pairs replies with them in order.
    """

    __slots__ = ("_max_request", "_pairing")

    def __init__(self, max_message: int) -> None:
        self._max_request = max_message
        # The reply decoders are bound to the pairing, not to the codec: a decoder that held
        # a bound method of itself would live until a full garbage collection.
        pairing = self._pairing = _ReplyPairing()
        rules: dict[int, PayloadRule[Reply]] = {
            T.LEASED: PayloadRule("leased", S_ID.size, False, pairing.leased),
            T.ACCESS_DATA: PayloadRule("access data", S_ID_AND_DATA.size, True, pairing.got),
            T.DATA_SET: PayloadRule("data set", S_STATUS.size, False, pairing.data_set),
            T.READ_DATA: PayloadRule("read data", S_ID_AND_DATA.size, True, pairing.read),
            T.DONE: PayloadRule("done", S_DONE.size, False, pairing.done),
            T.LEASE_INFO: PayloadRule("lease info", S_LEASE_INFO.size, False, pairing.info),
            T.SERVER_STATS: PayloadRule("stats", S_SERVER_STATS.size, True, pairing.stats),
            T.ERROR: PayloadRule("error", S_ERROR.size, True, pairing.error),
            T.GETS_DATA: PayloadRule("gets data", S_GETS_DATA.size, True, pairing.gets),
            T.CAS_RESULT: PayloadRule("cas result", S_CAS_RESULT.size, False, pairing.cas),
            T.GRANTED_MANY: PayloadRule("granted many", S_COUNT.size, True, pairing.many),
            T.IDS: PayloadRule("ids", S_IDS_REPLY.size, True, pairing.ids),
            T.NOTICE: PayloadRule("notice", S_NOTICE.size, False, pairing.notice),
            T.VERSION_DONE: PayloadRule(
                "version done", S_VERSION_DONE.size, False, pairing.version_done
            ),
            T.ARENA_MAP_DATA: PayloadRule(
                "arena map", S_ARENA_MAP_DATA.size, True, pairing.arena_map
            ),
        }
        super().__init__(
            protocol=PROTOCOL,
            header=S_HEADER,
            rules=rules,
            max_message=max_message,
            cache_rules=False,
        )

    def encode_request(self, request: Request) -> bytes:
        frame, lease_id = encode_request(request, self._max_request)
        self._pairing.pending.append((request.op, lease_id))
        return frame

    next_reply = FrameDecoder.next_message


class _ReplyPairing:
    """The requests sent and not yet answered, and the reply decoders that pair with them."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: deque[tuple[Op, int]] = deque()

    def _answered(self, expected: Op) -> int:
        """The id of the oldest outstanding request, which must be an ``expected`` one."""
        if not self.pending:
            raise ProtocolError("a reply arrived with no request outstanding")
        op, lease_id = self.pending.popleft()
        if op is not expected:
            raise ProtocolError(
                f"a reply to {expected.value} arrived where a {op.value} reply was due"
            )
        return lease_id

    def leased(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(_LEASE)
        (lease_id,) = S_ID.unpack_from(buf, at)
        if lease_id > 0:
            return Granted(lease_id, 0, 0)
        return ErrorReply(
            ErrorCode.NO_ROOM,
            "the server refused the lease (the native format does not say why: no room, or a "
            "size or ttl out of bounds); try a smaller or shorter lease, or later",
            Op.LEASE,
        )

    def got(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(_GET)
        lease_id, n = S_ID_AND_DATA.unpack_from(buf, at)
        data = take_tail(buf, at, _ID_AND_DATA_SIZE, n, length, "get reply")
        if n == 0:
            return ErrorReply(
                ErrorCode.NOT_FOUND,
                not_found_message(lease_id),
                Op.GET,
                lease_id,
            )
        return Data(_GET, lease_id, data)

    def read(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(_READ)
        lease_id, n = S_ID_AND_DATA.unpack_from(buf, at)
        data = take_tail(buf, at, _ID_AND_DATA_SIZE, n, length, "read reply")
        return Data(_READ, lease_id, data)

    def data_set(self, buf: bytearray, at: int, length: int) -> Reply:
        lease_id = self._answered(_SET)
        (status,) = S_STATUS.unpack_from(buf, at)
        if status == _DATA_SET_OK:
            return Done(_SET, lease_id)
        if status == L.DATA_SET_NOT_FOUND:
            return ErrorReply(
                ErrorCode.NOT_FOUND,
                not_found_message(lease_id),
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

    def done(self, buf: bytearray, at: int, length: int) -> Reply:
        request_type, lease_id = S_DONE.unpack_from(buf, at)
        op = TYPE_OP.get(request_type)
        if op not in _ENDED_BY_DONE:
            raise ProtocolError(f"done reply names request type {request_type}, not one it ends")
        assert op is not None
        self._answered(op)
        return Done(op, lease_id)

    def info(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(_STAT)
        return LeaseInfo(*S_LEASE_INFO.unpack_from(buf, at))

    def gets(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.GETS)
        lease_id, version, n = S_GETS_DATA.unpack_from(buf, at)
        data = take_tail(buf, at, S_GETS_DATA.size, n, length, "gets reply")
        return Data(Op.GETS, lease_id, data, version)

    def cas(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.CAS)
        lease_id, swapped, version = S_CAS_RESULT.unpack_from(buf, at)
        return CasResult(lease_id, bool(swapped), version)

    def many(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.LEASE_MANY)
        (count,) = S_COUNT.unpack_from(buf, at)
        fixed = S_COUNT.size
        # Size and ttl are not carried: the client fills them in from its request.
        return GrantedMany(unpack_ids(buf, at + fixed, count, length - fixed, "granted"), 0, 0)

    def ids(self, buf: bytearray, at: int, length: int) -> Reply:
        request_type, count = S_IDS_REPLY.unpack_from(buf, at)
        op = TYPE_OP.get(request_type)
        if op not in _ANSWERED_BY_IDS:
            raise ProtocolError(f"ids reply names request type {request_type}, not a batch")
        assert op is not None
        self._answered(op)
        fixed = S_IDS_REPLY.size
        return IdList(op, unpack_ids(buf, at + fixed, count, length - fixed, op.value))

    def notice(self, buf: bytearray, at: int, length: int) -> Reply:
        # Pushed, not asked for: it answers no request.
        lease_id, reason = S_NOTICE.unpack_from(buf, at)
        try:
            return Notice(lease_id, EndReason(reason))
        except ValueError:
            raise ProtocolError(f"notice gives unknown reason {reason}") from None

    def version_done(self, buf: bytearray, at: int, length: int) -> Reply:
        request_type, lease_id, version = S_VERSION_DONE.unpack_from(buf, at)
        if request_type != T.WRITE:
            raise ProtocolError(f"version done names request type {request_type}, not a write")
        self._answered(Op.WRITE)
        return Done(Op.WRITE, lease_id, version)

    def stats(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(_STATS)
        return decode_stats("=", S_SERVER_STATS, S_SERVER_STATS_MORE, buf, at, length)

    def arena_map(self, buf: bytearray, at: int, length: int) -> Reply:
        self._answered(Op.ARENA_MAP)
        size, min_block, cell_bytes, n = S_ARENA_MAP_DATA.unpack_from(buf, at)
        cells = take_tail(buf, at, S_ARENA_MAP_DATA.size, n, length, "arena map cells")
        return ArenaMapReply(size, min_block, cell_bytes, bytes(cells))

    def error(self, buf: bytearray, at: int, length: int) -> Reply:
        code, request_type, lease_id, n = S_ERROR.unpack_from(buf, at)
        message = take_tail(buf, at, S_ERROR.size, n, length, "error reply")
        op = TYPE_OP.get(request_type)
        if request_type != 0 and op is None:
            raise ProtocolError(f"error reply names unknown request type {request_type}")
        if self.pending:
            self.pending.popleft()
        return ErrorReply(
            error_code(code), bytes(message).decode("utf-8", "replace"), op, lease_id or None
        )
