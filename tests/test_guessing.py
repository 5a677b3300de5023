"""A client that guesses ids is closed once it asks for too many unknown ones in a second;
others, and the leases they hold, are not touched."""

from __future__ import annotations

from pathlib import Path

import trio
from conftest import StartServer

from memlease.core.messages import GetRequest
from memlease.server.config import load_config
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


async def test_the_limit_is_configurable_and_0_turns_it_off(start_server: StartServer) -> None:
    server = await start_server("network", max_unknown_ids_per_second=0)
    codec = server.registry.get("network").client_codec(server.config.max_message)
    guesses = [GetRequest(1 + i) for i in range(3000)]
    async with await server.open_socket("network") as guesser:
        await guesser.send_all(b"".join(codec.encode_request(g) for g in guesses))
        replies = 0
        with trio.fail_after(10):
            while replies < len(guesses):
                codec.feed(await guesser.receive_some(1 << 16))
                while codec.next_reply() is not None:
                    replies += 1


def test_the_limit_reads_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[limits]\nmax_unknown_ids_per_second = 50\n")
    assert load_config(path).max_unknown_ids_per_second == 50
