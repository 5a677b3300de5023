"""A large get is sent from the lease's block without a copy: it must still carry the bytes
the block held when the get was handled, whatever the requests after it do."""

from __future__ import annotations

import trio
from conftest import RunningServer, StartServer

from memlease.core.messages import Data, GetRequest, Granted, LeaseRequest, SetRequest
from memlease.core.service import SHARE_AT, Service
from memlease.server.socket_io import StreamIO

LARGE = 2 * SHARE_AT


def _service(share: bool) -> tuple[Service, int, int]:
    service = Service.create(1 << 20)
    service.share_blocks = share
    ids = []
    for size in (LARGE, 64):
        reply = service.handle(LeaseRequest(size, 10_000), 0.0)
        assert type(reply) is Granted and type(reply.lease_id) is int
        ids.append(reply.lease_id)
    return service, ids[0], ids[1]


def test_a_sharing_service_answers_a_large_get_with_a_read_only_view() -> None:
    service, large, small = _service(share=True)
    service.handle(SetRequest(large, b"A" * LARGE), 0.0)
    reply = service.handle(GetRequest(large), 0.0)
    assert type(reply) is Data and type(reply.data) is memoryview
    assert reply.data.readonly and reply.data == b"A" * LARGE
    small_reply = service.handle(GetRequest(small), 0.0)
    assert type(small_reply) is Data and type(small_reply.data) is bytes


def test_a_service_copies_by_default() -> None:
    service, large, _ = _service(share=False)
    reply = service.handle(GetRequest(large), 0.0)
    assert type(reply) is Data and type(reply.data) is bytes


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
    await io.send_rest(rest)
    assert await right.receive_some() == b"head" + b"A" * 16
    single = io.send_now([memoryview(block)])
    assert type(single) is bytes
