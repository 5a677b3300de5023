"""What the client commands say, through ``memlease.cli.main`` against a real server on
loopback (port 0): messages a user can act on, figures as a person reads them."""

from __future__ import annotations

import json

import pytest
from conftest import StartServer
from test_cli_server import Capture, Cli
from trio.testing import MockClock

from memlease.cli.main import main


@pytest.fixture
async def network(start_server: StartServer, capsys: Capture) -> Cli:
    server = await start_server("network", arena_size=64 * 1024)
    return Cli(server, "network", capsys)


async def test_a_fragmented_arena_says_no_free_block_not_full(
    network: Cli, mock_clock: MockClock
) -> None:
    ids = [await network.lease("16KiB", "--ttl", "1m") for _ in range(4)]
    await network.ok("release", ids[0])
    await network.ok("release", ids[2])
    err = await network.fails("lease", "32KiB")
    assert err.startswith("memlease: no free 32 KiB block (32 KiB of 64 KiB free, ")
    assert "largest free block 16 KiB" in err
    assert "arena full" not in err
    await network.ok("release", ids[1])
    await network.ok("release", ids[3])
    await network.lease("64KiB")
    err = await network.fails("lease", "16KiB")
    assert err.startswith("memlease: arena full: 0 B of 64 KiB free")


async def test_stats_shows_ratios_to_three_decimals(network: Cli, mock_clock: MockClock) -> None:
    await network.lease("16KiB", "--ttl", "1m")
    await network.lease("32B", "--ttl", "1m")
    lines = (await network.ok("stats")).splitlines()
    (fragmentation,) = [line for line in lines if line.startswith("external fragmentation")]
    value = fragmentation.split()[-1]
    assert len(value.partition(".")[2]) == 3, fragmentation
    record = json.loads(await network.ok("--json", "stats"))
    assert float(value) == round(record["external_fragmentation"], 3)


async def test_read_and_write_take_units_for_offset_and_length(
    network: Cli, mock_clock: MockClock
) -> None:
    lease_id = await network.lease("4KiB")
    assert "wrote 2 bytes at 1024" in await network.ok("write", lease_id, "1KiB", "hi")
    assert await network.ok("read", lease_id, "1KiB", "2B") == "hi"
    assert len(await network.ok("read", lease_id, "0", "2KiB")) == 2048


def test_a_zero_timeout_is_named_a_timeout(capsys: Capture) -> None:
    assert main(["--timeout", "0s", "stats"]) == 2
    err = capsys.readouterr().err
    assert "'0s': a timeout is at least 1ms" in err and "ttl" not in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--max-ttl", "1000h"], "--max-ttl = '1000h': must be at most 2147483647ms"),
        (["--arena", "1000B"], "--arena = '1000B': must be a positive multiple"),
        (["--connection-memory", "1KiB"], "--connection-memory = '1KiB': must be at least"),
    ],
)
def test_serve_errors_echo_the_value_as_typed(capsys: Capture, argv: list[str], says: str) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert "3600000000" not in err
