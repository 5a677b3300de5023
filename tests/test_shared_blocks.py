"""A large get is sent from the lease's region without a copy: it must still carry the bytes
the block held when the get was handled, whatever the requests after it do."""

from __future__ import annotations

import math

import pytest
import trio
from conftest import RunningServer, StartServer

from memlease.core.messages import Data, GetRequest, Granted, LeaseRequest, SetRequest
from memlease.core.service import Service
from memlease.protocol import DEFAULT_MAX_MESSAGE, load_protocols
from memlease.server.connection import SHARE_AT, Connection, Limits
from memlease.server.socket_io import StreamIO

REGISTRY = load_protocols(warn=False)

LARGE = 2 * SHARE_AT


def _service() -> tuple[Service, int, int]:
    service = Service.create(1 << 20)
    ids = []
    for size in (LARGE, 64):
        reply = service.handle(LeaseRequest(size, 10_000), 0.0)
        assert type(reply) is Granted and type(reply.lease_id) is int
        ids.append(reply.lease_id)
    return service, ids[0], ids[1]


def test_the_service_answers_a_get_with_a_read_only_view_of_the_region() -> None:
    service, large, small = _service()
    service.handle(SetRequest(large, b"A" * LARGE), 0.0)
    for lease_id, size in ((large, LARGE), (small, 64)):
        reply = service.handle(GetRequest(lease_id), 0.0)
        assert type(reply) is Data and type(reply.data) is memoryview
        assert reply.data.readonly and len(reply.data) == size
    assert service.handle(GetRequest(large), 0.0).data == b"A" * LARGE  # type: ignore[union-attr]


def _connection(service: Service, protocol: str = "native") -> Connection:
    codec = REGISTRY.get(protocol).server_codec(DEFAULT_MAX_MESSAGE)
    limits = Limits(DEFAULT_MAX_MESSAGE, request_timeout=10.0, idle_timeout=60.0)
    return Connection(codec, service, limits, 0.0, peer="test", protocol=protocol)


@pytest.mark.parametrize("protocol", ["native", "network"])
def test_a_large_get_goes_out_from_the_block_before_the_next_request_is_handled(
    protocol: str,
) -> None:
    service, large, small = _service()
    service.handle(SetRequest(large, b"A" * LARGE), 0.0)
    connection = _connection(service, protocol)
    client = REGISTRY.get(protocol).client_codec(DEFAULT_MAX_MESSAGE)
    requests = [GetRequest(large), SetRequest(large, b"B" * 16), GetRequest(small)]
    connection.received(b"".join(client.encode_request(r) for r in requests))
    first = connection.next_output(0.0)
    assert any(type(part) is memoryview for part in first)  # the block itself, not a copy
    sent = b"".join(first)  # as the socket takes it, before the connection goes on
    assert sent[-LARGE:] == b"A" * LARGE  # the set after it is not handled yet
    rest = connection.next_output(0.0)
    assert all(type(part) is bytes for part in rest)  # a small get's reply is a copy
    assert connection.next_output(0.0) == []
    client.feed(sent + b"".join(rest))
    replies = [client.next_reply() for _ in requests]
    assert replies[0].data == b"A" * LARGE  # type: ignore[union-attr]
    assert replies[2].data == bytes(64)  # type: ignore[union-attr]


async def test_a_pipelined_set_after_a_large_get_does_not_change_the_get_reply(
    start_server: StartServer, protocol: str
) -> None:
    server: RunningServer = await start_server(protocol)
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(LARGE, 60_000)).lease_id
        await client.set(lease_id, b"A" * LARGE)
        got = await client.get(lease_id)
        assert type(got) is bytes and got == b"A" * LARGE
    codec = server.registry.get(protocol).client_codec(server.config.max_message)
    # small enough for one receive, so that the server handles all three in one batch
    requests = [GetRequest(lease_id), SetRequest(lease_id, b"B" * 16), GetRequest(lease_id)]
    wire = b"".join(codec.encode_request(request) for request in requests)
    stream = await server.open_socket(protocol)
    async with stream:
        # The replies are not read until all requests went: the gets' replies wait in the
        # socket while the set behind them changes the block.
        await stream.send_all(wire)
        replies = []
        while len(replies) < len(requests):
            codec.feed(await stream.receive_some())
            while (reply := codec.next_reply()) is not None:
                replies.append(reply)
    first, _, last = replies
    assert type(first) is Data and first.data == b"A" * LARGE
    assert type(last) is Data and last.data == b"B" * 16 + b"A" * (LARGE - 16)


async def test_a_stream_send_copies_a_view_before_it_waits() -> None:
    left, right = trio.testing.memory_stream_pair()
    block = bytearray(b"A" * 16)
    io = StreamIO(left, 1024)
    rest = io.send_now([b"head", memoryview(block)])
    assert rest is not None
    block[:] = b"B" * 16
    assert await io.send_some(rest, math.inf) == len(rest)  # a small rest goes in one piece
    assert await right.receive_some() == b"head" + b"A" * 16
    single = io.send_now([memoryview(block)])
    assert type(single) is bytes
