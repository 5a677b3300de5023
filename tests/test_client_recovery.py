"""A client stays in step with its server after a request that never left: one cancelled
before sending, or a batch that could not be encoded. A request cancelled after its bytes may
have gone out leaves the client unusable, and it says so."""

from __future__ import annotations

import uuid

import pytest
import trio
from conftest import RunningServer

import memlease
from memlease import ConnectionFailed, ProtocolError
from memlease.core.messages import Data, GetRequest, LeaseId, LeaseInfo, StatRequest


def uncarriable_id(protocol: str) -> LeaseId:
    """An id the protocol's codec refuses to encode."""
    return 7 if protocol == "uuid" else 2**32


async def test_a_call_cancelled_before_sending_leaves_the_client_usable(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        granted = await client.lease(16, 60_000)
        with trio.move_on_after(0):
            await client.get(granted.lease_id)
        second = await client.lease(32, 60_000)
        assert second.size == 32
        await client.set(granted.lease_id, b"abc")
        assert await client.get(granted.lease_id) == b"abc" + bytes(13)


async def test_a_pipeline_that_fails_to_encode_sends_nothing_and_leaves_the_client_usable(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(16, 60_000)).lease_id
        with pytest.raises(ProtocolError):
            await client.pipeline([GetRequest(lease_id), GetRequest(uncarriable_id(protocol))])
        info = await client.stat(lease_id)
        assert isinstance(info, LeaseInfo) and info.size == 16
        replies = await client.pipeline([GetRequest(lease_id), StatRequest(lease_id)])
        assert [type(reply) for reply in replies] == [Data, LeaseInfo]


async def test_blocking_pipeline_that_fails_to_encode_leaves_the_client_usable(
    server: RunningServer, protocol: str
) -> None:
    def work() -> None:
        with server.client(protocol) as client:
            lease_id = client.lease(16, 60_000).lease_id
            with pytest.raises(ProtocolError):
                client.pipeline([GetRequest(lease_id), GetRequest(uncarriable_id(protocol))])
            assert client.stat(lease_id).size == 16
            assert client.get(lease_id) == bytes(16)

    await trio.to_thread.run_sync(work)


async def test_a_call_cancelled_after_sending_makes_the_client_unusable(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    received = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        async for _ in stream:
            received.set()

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]
    client = await memlease.connect(("127.0.0.1", port), "native", timeout=60.0)
    with trio.move_on_after(1.0):
        await client.get(uuid.uuid4().int % 2**31 or 1)
    assert received.is_set()
    with pytest.raises(ConnectionFailed, match="unusable: a request was cancelled"):
        await client.stats()
