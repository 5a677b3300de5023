"""A client that guesses ids is closed once it asks for too many unknown ones in a second;
others, and the leases they hold, are not touched."""

from __future__ import annotations

import trio
from conftest import StartServer

from memlease.core.messages import GetRequest
from memlease.server.connection import MAX_MISSES


async def test_a_guessing_client_is_closed_and_others_go_on(start_server: StartServer) -> None:
    server = await start_server("network")
    async with await server.connect("network") as owner:
        granted = await owner.lease(64, 60_000)
        await owner.set(granted.lease_id, b"mine")
        codec = server.registry.get("network").client_codec(server.config.max_message)
        guesses = b"".join(codec.encode_request(GetRequest(1 + i)) for i in range(5000))
        async with await server.open_socket("network") as guesser:
            replies = 0
            with trio.fail_after(10):
                await guesser.send_all(guesses)
                try:
                    while data := await guesser.receive_some(1 << 16):
                        codec.feed(data)
                        while codec.next_reply() is not None:
                            replies += 1
                except trio.BrokenResourceError:
                    pass  # closed with requests unread: a reset
            assert MAX_MISSES < replies < 5000  # closed part-way through the guesses
        assert (await owner.get(granted.lease_id))[:4] == b"mine"
