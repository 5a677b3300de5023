"""The clients' method set, sans-IO: the request each method sends and how its reply becomes a
result or a typed exception.

The trio client (memlease.client.trio_client) and the blocking client
(memlease.client.blocking) differ only in how bytes move; everything a method means lives
here, once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from memlease.core.errors import ProtocolError, error_for_code
from memlease.core.messages import (
    Data,
    Done,
    ErrorReply,
    GetRequest,
    Granted,
    IdKind,
    LeaseId,
    LeaseInfo,
    LeaseRequest,
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

T = TypeVar("T")

IdLike = LeaseId | str
"""A lease id, or a UUID's string form ("1b4e28ba-2fa1-11d2-883f-0016d3cca427")."""
DataLike = bytes | bytearray | memoryview | str
"""Bytes to write; a str is written as its UTF-8 bytes."""


def lease_id_of(value: IdLike) -> LeaseId:
    """``value`` as a lease id: a UUID's string form becomes a UUID; any other string is left
    for the codec to refuse, naming the kind of id its protocol carries."""
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return value  # type: ignore[return-value]
    return value


def data_of(value: DataLike) -> bytes:
    """``value`` as bytes; a str as its UTF-8 encoding."""
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One method call: the request to send and how its reply becomes the method's result."""

    request: Request
    result: Callable[[Request, Reply], T]


def complete(request: Request, reply: Reply) -> Reply:
    """``reply`` with what the protocol left out filled in from ``request``: native Granted
    replies carry only the id."""
    if isinstance(reply, Granted):
        return _filled(request, reply)
    return reply


def _filled(request: Request, granted: Granted) -> Granted:
    if isinstance(request, LeaseRequest) and granted.size == 0 and granted.ttl_ms == 0:
        return replace(granted, size=request.size, ttl_ms=request.ttl_ms)
    return granted


def _refusal(request: Request, reply: ErrorReply) -> Exception:
    return error_for_code(reply.code, reply.message or f"{request.op.value} refused: {reply.code}")


def _unexpected(request: Request, reply: Reply) -> ProtocolError:
    return ProtocolError(
        f"the server answered a {request.op.value} request with {type(reply).__name__}; "
        "is the client speaking the protocol the server's port serves?"
    )


def _expect(kind: type[T]) -> Callable[[Request, Reply], T]:
    def result(request: Request, reply: Reply) -> T:
        if isinstance(reply, kind):
            return reply
        if isinstance(reply, ErrorReply):
            raise _refusal(request, reply)
        raise _unexpected(request, reply)

    return result


_expect_granted = _expect(Granted)
_expect_data = _expect(Data)
_expect_done = _expect(Done)
_expect_lease_info = _expect(LeaseInfo)
_expect_server_stats = _expect(ServerStats)


def _granted(request: Request, reply: Reply) -> Granted:
    return _filled(request, _expect_granted(request, reply))


def _data(request: Request, reply: Reply) -> bytes:
    data = _expect_data(request, reply).data
    # A large reply decodes to a view of its own buffer; callers get bytes.
    return data if type(data) is bytes else bytes(data)


def _done(request: Request, reply: Reply) -> None:
    _expect_done(request, reply)


def lease(size: int, ttl_ms: int, id_kind: IdKind) -> Call[Granted]:
    return Call(LeaseRequest(size, ttl_ms, id_kind), _granted)


def get(lease_id: IdLike) -> Call[bytes]:
    return Call(GetRequest(lease_id_of(lease_id)), _data)


def set_(lease_id: IdLike, data: DataLike) -> Call[None]:
    return Call(SetRequest(lease_id_of(lease_id), data_of(data)), _done)


def read(lease_id: IdLike, offset: int, length: int) -> Call[bytes]:
    return Call(ReadRequest(lease_id_of(lease_id), offset, length), _data)


def write(lease_id: IdLike, offset: int, data: DataLike) -> Call[None]:
    return Call(WriteRequest(lease_id_of(lease_id), offset, data_of(data)), _done)


def renew(lease_id: IdLike, ttl_ms: int) -> Call[None]:
    return Call(RenewRequest(lease_id_of(lease_id), ttl_ms), _done)


def release(lease_id: IdLike) -> Call[None]:
    return Call(ReleaseRequest(lease_id_of(lease_id)), _done)


def stat(lease_id: IdLike) -> Call[LeaseInfo]:
    return Call(StatRequest(lease_id_of(lease_id)), _expect_lease_info)


def stats() -> Call[ServerStats]:
    return Call(StatsRequest(), _expect_server_stats)
