"""The clients' method set, sans-IO: the request each method sends and how its reply becomes a
result or a typed exception.

The trio client (memlease.client.trio_client) and the blocking client
(memlease.client.blocking) differ only in how bytes move; everything a method means lives
here, once.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from memlease.core.arena import ArenaMap
from memlease.core.errors import ProtocolError, VersionMismatch, error_for_code
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
    IdKind,
    IdList,
    LeaseId,
    LeaseInfo,
    LeaseManyRequest,
    LeaseRequest,
    Notice,
    ReadRequest,
    ReleaseManyRequest,
    ReleaseRequest,
    RenewManyRequest,
    RenewRequest,
    Reply,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    UnwatchRequest,
    WatchRequest,
    WriteRequest,
)

if TYPE_CHECKING:
    from memlease.protocol import ClientCodec

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
        return Granted(granted.lease_id, request.size, request.ttl_ms)
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
_expect_cas_result = _expect(CasResult)
_expect_granted_many = _expect(GrantedMany)
_expect_id_list = _expect(IdList)
_expect_arena_map = _expect(ArenaMapReply)


def _granted(request: Request, reply: Reply) -> Granted:
    return _filled(request, _expect_granted(request, reply))


def _data(request: Request, reply: Reply) -> bytes:
    data = _expect_data(request, reply).data
    # A large reply decodes to a view of its own buffer; callers get bytes.
    return data if type(data) is bytes else bytes(data)


def _done(request: Request, reply: Reply) -> None:
    _expect_done(request, reply)


def _version(request: Request, reply: Reply) -> int:
    return _expect_done(request, reply).version


def _data_and_version(request: Request, reply: Reply) -> tuple[bytes, int]:
    found = _expect_data(request, reply)
    data = found.data
    return (data if type(data) is bytes else bytes(data)), found.version


def _swapped(request: Request, reply: Reply) -> int:
    result = _expect_cas_result(request, reply)
    if not result.swapped:
        raise VersionMismatch(
            f"cas on lease {result.lease_id} refused: it is at version {result.version}, not "
            f"{request.version}; nothing was written (read it again with gets)",  # type: ignore[union-attr]
            result.version,
        )
    return result.version


def _granted_many(request: Request, reply: Reply) -> list[Granted]:
    many = _expect_granted_many(request, reply)
    size, ttl_ms = many.size, many.ttl_ms
    if isinstance(request, LeaseManyRequest) and size == 0 and ttl_ms == 0:
        size, ttl_ms = request.size, request.ttl_ms  # native carries only the ids
    return [Granted(lease_id, size, ttl_ms) for lease_id in many.lease_ids]


def _ids(request: Request, reply: Reply) -> list[LeaseId]:
    return _expect_id_list(request, reply).lease_ids


def _watched(request: Request, reply: Reply) -> None:
    _expect_id_list(request, reply)


def lease(size: int, ttl_ms: int, id_kind: IdKind, bound: bool = False) -> Call[Granted]:
    return Call(LeaseRequest(size, ttl_ms, id_kind, bound), _granted)


def get(lease_id: IdLike) -> Call[bytes]:
    return Call(GetRequest(lease_id_of(lease_id)), _data)


def set_(lease_id: IdLike, data: DataLike) -> Call[int]:
    return Call(SetRequest(lease_id_of(lease_id), data_of(data)), _version)


def read(lease_id: IdLike, offset: int, length: int) -> Call[bytes]:
    return Call(ReadRequest(lease_id_of(lease_id), offset, length), _data)


def write(lease_id: IdLike, offset: int, data: DataLike) -> Call[int]:
    return Call(WriteRequest(lease_id_of(lease_id), offset, data_of(data)), _version)


def renew(lease_id: IdLike, ttl_ms: int) -> Call[None]:
    return Call(RenewRequest(lease_id_of(lease_id), ttl_ms), _done)


def release(lease_id: IdLike) -> Call[None]:
    return Call(ReleaseRequest(lease_id_of(lease_id)), _done)


def stat(lease_id: IdLike) -> Call[LeaseInfo]:
    return Call(StatRequest(lease_id_of(lease_id)), _expect_lease_info)


def stats() -> Call[ServerStats]:
    return Call(StatsRequest(), _expect_server_stats)


def _arena_map(request: Request, reply: Reply) -> ArenaMap:
    got = _expect_arena_map(request, reply)
    size, min_block, cell_bytes, cells = got.arena_size, got.min_block, got.cell_bytes, got.cells
    # Whoever draws the map divides by these: a map that does not add up is refused here.
    if not (
        min_block > 0
        and min_block & (min_block - 1) == 0
        and cell_bytes >= min_block
        and cell_bytes % min_block == 0
        and (cell_bytes // min_block) & (cell_bytes // min_block - 1) == 0
        and size > 0
        and size % min_block == 0
        and len(cells) == -(-size // cell_bytes)
    ):
        raise ProtocolError(
            f"the server's arena map does not add up ({size} B arena, {min_block} B blocks, "
            f"{len(cells)} cells of {cell_bytes} B)"
        )
    return ArenaMap(size, min_block, cell_bytes, cells)


def arena_map() -> Call[ArenaMap]:
    return Call(ArenaMapRequest(), _arena_map)


def gets(lease_id: IdLike) -> Call[tuple[bytes, int]]:
    return Call(GetsRequest(lease_id_of(lease_id)), _data_and_version)


def cas(lease_id: IdLike, version: int, data: DataLike, offset: int = 0) -> Call[int]:
    return Call(CasRequest(lease_id_of(lease_id), version, offset, data_of(data)), _swapped)


def lease_many(
    count: int, size: int, ttl_ms: int, id_kind: IdKind, bound: bool = False
) -> Call[list[Granted]]:
    return Call(LeaseManyRequest(count, size, ttl_ms, id_kind, bound), _granted_many)


def renew_many(lease_ids: Sequence[IdLike], ttl_ms: int) -> Call[list[LeaseId]]:
    return Call(RenewManyRequest(ids_of(lease_ids), ttl_ms), _ids)


def release_many(lease_ids: Sequence[IdLike]) -> Call[list[LeaseId]]:
    return Call(ReleaseManyRequest(ids_of(lease_ids)), _ids)


def watch(lease_ids: IdLike | Sequence[IdLike]) -> Call[None]:
    return Call(WatchRequest(ids_of(lease_ids)), _watched)


def unwatch(lease_ids: IdLike | Sequence[IdLike]) -> Call[list[LeaseId]]:
    return Call(UnwatchRequest(ids_of(lease_ids)), _ids)


def decode_notices(codec: ClientCodec, into: deque[Notice]) -> None:
    """Every whole message ``codec`` holds, each a notice, onto ``into``: while no request is
    outstanding nothing else may come, so anything else is a ProtocolError."""
    while (reply := codec.next_reply()) is not None:
        if type(reply) is not Notice:
            raise ProtocolError(f"a {type(reply).__name__} came with no request")
        into.append(reply)


def ids_of(lease_ids: IdLike | Sequence[IdLike]) -> list[LeaseId]:
    """One id or many (UUIDs may come as their string form), as a list."""
    if isinstance(lease_ids, (int, str, uuid.UUID)):
        return [lease_id_of(lease_ids)]
    return [lease_id_of(lease_id) for lease_id in lease_ids]
