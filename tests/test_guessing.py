"""A client that guesses ids is closed once it asks for too many unknown ones in a second;
others, and the leases they hold, are not touched."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer

from memlease import TooMany
from memlease.core.messages import GetRequest
from memlease.server.config import load_config
from memlease.server.connection import MAX_MISSES
from memlease.server.connection_set import MissLedger


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
        assert (await owner.stats()).closed_for_guessing == 1  # the figure operators see


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


def _guess_from(server: RunningServer, source: str, first: int, count: int) -> tuple[int, bool]:
    """From loopback address ``source``, ask for ``count`` unknown ids on a new connection:
    how many were answered, and whether the server then closed the connection."""
    codec = server.registry.get("network").client_codec(server.config.max_message)
    wire = b"".join(codec.encode_request(GetRequest(first + i)) for i in range(count))
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.connect(server.address("network"))
        sock.settimeout(5)
        sock.sendall(wire)
        answered, closed = 0, False
        try:
            while answered < count:
                data = sock.recv(1 << 16)
                if not data:
                    closed = True
                    break
                codec.feed(data)
                while codec.next_reply() is not None:
                    answered += 1
        except ConnectionResetError:
            closed = True
        return answered, closed


async def test_a_client_cannot_pass_the_limit_by_opening_new_connections(
    start_server: StartServer,
) -> None:
    server = await start_server("network")

    def guess() -> list[tuple[int, bool]]:
        return [_guess_from(server, "127.0.0.2", 1 + 10_000 * n, 600) for n in range(3)]

    first, second, third = await trio.to_thread.run_sync(guess)
    assert first == (600, False)  # 600 misses: within the limit
    assert second[1] and second[0] < 600  # 1,001st miss of the client: closed
    assert third[1] and third[0] <= 1  # the same second: closed at once
    # Another client is not touched by this one's misses.
    assert await trio.to_thread.run_sync(_guess_from, server, "127.0.0.3", 1, 600) == (600, False)


def test_the_ledger_forgets_a_client_a_second_after_its_last_window() -> None:
    ledger = MissLedger(limit=2)
    assert [ledger.missed("a", 0.0) for _ in range(3)] == [False, False, True]
    assert not ledger.missed("a", 1.0)  # a new window
    assert not ledger.missed("b", 1.0)
    assert MissLedger(limit=0).missed("a", 0.0) is False  # 0: no limit
    local = MissLedger(limit=1)
    assert not any(local.missed("127.0.0.1", 0.0) for _ in range(5))  # every local client


async def test_a_batch_is_no_faster_way_to_guess_yet_keeps_its_connection(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("network", max_batch=10_000)
    async with await server.connect("network") as owner:
        granted = await owner.lease(64, 60_000)
        async with await server.connect("network") as batcher:
            bound = (await batcher.lease(32, 60_000, bound=True)).lease_id
            # renew_many answers with the ids it did not find: each one is a miss...
            missing = await batcher.renew_many(list(range(1, 2 * MAX_MISSES)), 60_000)
            assert len(missing) >= 2 * MAX_MISSES - 3
            # ...so past the limit, batches are refused for the rest of the second,
            with pytest.raises(TooMany, match="unknown ids within the last second"):
                await batcher.release_many([granted.lease_id])
            assert (await owner.stat(granted.lease_id)).size == 64  # nothing was done
            # but the connection, and the lease bound to it, stay.
            await trio.sleep(1.0)
            assert await batcher.renew_many([bound], 60_000) == []
        assert (await owner.stats()).closed_for_guessing == 0
