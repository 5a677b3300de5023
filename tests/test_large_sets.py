"""Large sets on a live server arrive straight into a buffer of their own: the value is stored
whole, a set cut off half-way changes nothing, and a stalled one is cut at the request
timeout like any other message."""

from __future__ import annotations

import pytest
import trio
from conftest import StartServer
from memlease_wire.framing import LARGE_FRAME
from trio.testing import MockClock

from memlease.core.messages import SetRequest

VALUE = 2 * LARGE_FRAME + 12_345


def _value(seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(256)) * (VALUE // 256) + bytes(VALUE % 256)


async def test_large_sets_are_stored_whole(start_server: StartServer, protocol: str) -> None:
    server = await start_server(protocol, arena_size=8 << 20)
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(VALUE, 60_000)).lease_id
        for seed in range(3):
            await client.set(lease_id, _value(seed))
            assert await client.get(lease_id) == _value(seed)


async def test_a_large_set_sent_in_small_pieces_is_stored_whole(
    start_server: StartServer, protocol: str
) -> None:
    server = await start_server(protocol, arena_size=8 << 20)
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(VALUE, 60_000)).lease_id
        codec = server.registry.get(protocol).client_codec(server.config.max_message)
        wire = codec.encode_request(SetRequest(lease_id, _value(5)))
        async with await server.open_socket(protocol) as stream:
            for at in range(0, len(wire), 10_007):
                await stream.send_all(wire[at : at + 10_007])
                await trio.sleep(0)
            codec.feed(await stream.receive_some())
            assert codec.next_reply() is not None
        assert await client.get(lease_id) == _value(5)


async def test_a_large_set_cut_off_half_way_changes_nothing(
    start_server: StartServer, protocol: str
) -> None:
    server = await start_server(protocol, arena_size=8 << 20)
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(VALUE, 60_000)).lease_id
        await client.set(lease_id, _value(1))
        codec = server.registry.get(protocol).client_codec(server.config.max_message)
        wire = codec.encode_request(SetRequest(lease_id, _value(2)))
        async with await server.open_socket(protocol) as stream:
            await stream.send_all(wire[: len(wire) * 3 // 4])  # well past the 1/8 mark
        await trio.sleep(0.05)
        assert await client.get(lease_id) == _value(1)
        assert (await client.stats()).connections == 1


async def test_a_stalled_large_set_is_cut_at_the_request_timeout(
    start_server: StartServer, protocol: str, autojump_clock: MockClock
) -> None:
    server = await start_server(
        protocol, arena_size=8 << 20, request_timeout=2.0, idle_timeout=60.0
    )
    codec = server.registry.get(protocol).client_codec(server.config.max_message)
    lease_id = 7 if protocol != "uuid" else __import__("uuid").UUID(int=7)
    wire = codec.encode_request(SetRequest(lease_id, _value(3)))  # type: ignore[arg-type]
    async with await server.open_socket(protocol) as stream:
        started = trio.current_time()
        await stream.send_all(wire[: len(wire) // 2])
        with trio.move_on_after(30):
            while await stream.receive_some():
                pass  # an error reply, if the protocol has one, then EOF
        assert trio.current_time() - started == pytest.approx(2.0, abs=0.01)
