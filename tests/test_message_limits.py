"""The largest lease fits in a reply within max_message: no lease is granted that a client
with the server's limit could not get back."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from conftest import StartServer

from memlease import BadSize, NoRoom
from memlease.cli.main import main
from memlease.server.config import REPLY_ROOM, Config, largest_lease

KiB, MiB = 1024, 1024 * 1024


def test_the_largest_lease_is_the_largest_block_capped_by_max_message() -> None:
    assert largest_lease(Config()) == 64 * MiB
    assert largest_lease(Config(arena_size=96 * MiB)) == 64 * MiB
    # The default max_message is 64 MiB + 4 KiB: room for a little more than 64 MiB.
    assert largest_lease(Config(arena_size=128 * MiB)) == 64 * MiB + 4 * KiB - REPLY_ROOM
    assert largest_lease(Config(arena_size=128 * MiB, max_message=256 * MiB)) == 128 * MiB
    assert largest_lease(Config(arena_size=MiB, max_message=64 * KiB)) == 64 * KiB - REPLY_ROOM
    assert largest_lease(Config(max_lease_size=1000)) == 1000


async def test_no_lease_is_granted_that_a_reply_within_max_message_cannot_carry(
    start_server: StartServer, protocol: str
) -> None:
    server = await start_server(protocol, arena_size=MiB, max_message=64 * KiB)
    largest = largest_lease(server.config)
    async with await server.connect(protocol, max_message=64 * KiB) as client:
        # The native format does not say why it refuses a lease.
        with pytest.raises(NoRoom if protocol == "native" else BadSize):
            await client.lease(512 * KiB, 60_000)
        lease_id = (await client.lease(largest, 60_000)).lease_id
        await client.set(lease_id, b"\x01" * largest)
        assert await client.get(lease_id) == b"\x01" * largest


async def test_the_cli_takes_the_client_s_max_message(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_server("network", arena_size=MiB, max_message=64 * KiB)
    host, port = server.address("network")

    async def cli(*argv: str) -> tuple[int, str, str]:
        args = ["--server", f"{host}:{port}", "--protocol", "network", *argv]
        status = await trio.to_thread.run_sync(partial(main, args, registry=server.registry))
        out, err = capsys.readouterr()
        return status, out, err

    status, out, err = await cli("lease", "32KiB")
    assert status == 0, err
    lease_id = out.strip()
    status, _out, err = await cli("--max-message", "16KiB", "get", lease_id)
    assert status == 1
    assert "above the maximum message size of 16384 bytes" in err, err
    status, out, err = await cli("get", lease_id, "--max-message", "64KiB")
    assert (status, err) == (0, ""), err
    assert len(out) == 32 * KiB
