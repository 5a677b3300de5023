"""Codecs and connection objects are freed by reference counting alone, the moment the last
reference goes: a server never needs a full garbage collection to give back a dropped
connection's buffers (a native codec once held its own bound method, and a connection cut off
mid-way through a 64 MiB message kept its frame buffer until the next full collection)."""

from __future__ import annotations

import gc
import types
import weakref
from collections.abc import Iterator

import pytest

from memlease.core.messages import SetRequest
from memlease.protocol import DEFAULT_MAX_MESSAGE, load_protocols

REGISTRY = load_protocols(warn=False)
BUILT_IN = ["native", "network", "uuid"]
# Objects whose referents reach whole modules: a cycle through them is not the object's own.
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def _in_a_cycle(root: object, limit: int = 100_000) -> bool:
    """Whether ``root`` can reach itself through the references of its own data."""
    seen: set[int] = set()
    todo = list(gc.get_referents(root))
    while todo and len(seen) < limit:
        item = todo.pop()
        if item is root:
            return True
        if id(item) in seen or isinstance(item, _OPAQUE):
            continue
        seen.add(id(item))
        todo.extend(gc.get_referents(item))
    return False


@pytest.fixture
def no_collector() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _lease_id(name: str) -> object:
    import uuid

    return uuid.UUID(int=7) if name == "uuid" else 7


@pytest.mark.parametrize("name", [*BUILT_IN, "demo"])
def test_no_codec_is_in_a_reference_cycle(name: str) -> None:
    spec = REGISTRY.get(name)
    server = spec.server_codec(DEFAULT_MAX_MESSAGE)
    client = spec.client_codec(DEFAULT_MAX_MESSAGE)
    assert not _in_a_cycle(server)
    assert not _in_a_cycle(client)


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_dropped_codec_frees_its_large_frame_without_the_collector(
    name: str, no_collector: None
) -> None:
    spec = REGISTRY.get(name)
    size = 8 * 1024 * 1024
    wire = spec.client_codec(DEFAULT_MAX_MESSAGE).encode_request(
        SetRequest(_lease_id(name), bytes(size))  # type: ignore[arg-type]
    )
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    codec.feed(wire[: len(wire) // 2])  # the connection ends part-way through the message
    assert codec.next_request() is None
    target = codec.receive_buffer()
    assert target is not None, "a half-received large message has a buffer of its own"
    frame = weakref.ref(target.obj)
    target.release()
    del target, codec
    assert frame() is None, "the frame buffer outlived its codec"


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_dropped_client_codec_is_freed_without_the_collector(
    name: str, no_collector: None
) -> None:
    spec = REGISTRY.get(name)
    codec = spec.client_codec(DEFAULT_MAX_MESSAGE)
    codec.encode_request(SetRequest(_lease_id(name), b"x"))  # type: ignore[arg-type]
    kind = type(codec)
    before = sum(1 for o in gc.get_objects() if type(o) is kind)
    del codec
    assert sum(1 for o in gc.get_objects() if type(o) is kind) == before - 1


async def test_no_connection_object_is_in_a_reference_cycle() -> None:
    import socket

    import trio

    from memlease.core.service import Service
    from memlease.server.connection import Connection, Limits
    from memlease.server.connection_set import ConnectionSet, OpenConnection
    from memlease.server.socket_io import SocketIO

    service = Service.create(1 << 20)
    limits = Limits(DEFAULT_MAX_MESSAGE, request_timeout=10.0, idle_timeout=60.0)
    codec = REGISTRY.get("native").server_codec(DEFAULT_MAX_MESSAGE)
    connection = Connection(
        codec, service, limits, trio.current_time(), peer="p", protocol="native"
    )
    entry = OpenConnection(connection)
    connections = ConnectionSet(10)
    connections.add(entry)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        io = SocketIO(ours, bytearray(1024))
        for item in (connection, entry, io):
            assert not _in_a_cycle(item), type(item).__name__


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_connection_ended_by_bad_input_is_freed_without_the_collector(
    name: str, no_collector: None
) -> None:
    """Requests, then a malformed message: the requests are answered, then the error, and
    nothing the connection holds (its codec's buffers, the requests) waits for a collection."""
    from memlease.core.messages import GetRequest
    from memlease.core.service import Service
    from memlease.server.connection import Connection, Ending, Limits

    service = Service.create(1 << 20)
    limits = Limits(DEFAULT_MAX_MESSAGE, request_timeout=10.0, idle_timeout=60.0)
    spec = REGISTRY.get(name)
    connection = Connection(
        spec.server_codec(DEFAULT_MAX_MESSAGE), service, limits, 0.0,
        peer="p", protocol=name,
    )  # fmt: skip
    client = spec.client_codec(DEFAULT_MAX_MESSAGE)
    wire = client.encode_request(GetRequest(_lease_id(name)))  # type: ignore[arg-type]
    connection.received(wire + b"\x7f" * 16)
    while connection.next_output(0.0):
        pass
    connection.batch_done(0.0)
    assert connection.ending is Ending.BAD_INPUT
    assert not _in_a_cycle(connection)
    before = sum(1 for o in gc.get_objects() if type(o) is Connection)
    del connection
    after = sum(1 for o in gc.get_objects() if type(o) is Connection)
    assert after == before - 1, "the connection outlived its last reference"
