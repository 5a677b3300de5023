"""Where the client commands' output goes: a reader that goes away (``| head``) ends the command
quietly, and a terminal never receives a lease's control characters raw."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest
import trio
from conftest import RunningServer
from test_cli_server import Capture, Cli
from trio.testing import MockClock

from memlease.cli.main import EXIT_PIPE_CLOSED

ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # set the window title, clear the screen


def memlease_command(server: RunningServer, *argv: str) -> list[str]:
    host, port = server.address("network")
    return [
        *(sys.executable, "-m", "memlease.cli.main"),
        *("--server", f"{host}:{port}", "--protocol", "network", *argv),
    ]


async def test_a_closed_stdout_ends_the_command_quietly(
    server: RunningServer, mock_clock: MockClock
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written
    try:
        done = await trio.to_thread.run_sync(
            partial(
                subprocess.run,
                memlease_command(server, "stats"),
                stdout=write_end,
                stderr=subprocess.PIPE,
                timeout=30,
            )
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (EXIT_PIPE_CLOSED, b"")


async def test_a_reader_that_stops_early_ends_a_large_get_quietly(
    server: RunningServer, mock_clock: MockClock
) -> None:
    def lease_and_head() -> tuple[int, bytes, bytes]:
        leased = subprocess.run(
            memlease_command(server, "lease", "512KiB", "--ttl", "1m"),
            capture_output=True,
            check=True,
        )
        lease_id = leased.stdout.decode().strip()
        with subprocess.Popen(
            memlease_command(server, "get", lease_id),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            head = os.read(proc.stdout.fileno(), 4)  # as `| head -c 4`
            proc.stdout.close()
            err = proc.stderr.read()
            return proc.wait(timeout=30), head, err

    status, head, err = await trio.to_thread.run_sync(lease_and_head)
    assert (status, head, err) == (EXIT_PIPE_CLOSED, b"\0" * 4, b"")


@pytest.fixture
async def cli(server: RunningServer, capsys: Capture) -> Cli:
    return Cli(server, "network", capsys)


async def test_get_and_read_escape_control_characters_on_a_terminal(
    cli: Cli, mock_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease_id = (await cli.ok("lease", "64")).strip()
    await cli.ok("set", lease_id, f"a{ESCAPE}b\n\tc")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    shown = "a\\x1b]0;owned\\x07\\x1b[2Jb\n\tc\n"
    assert await cli.ok("get", lease_id) == shown
    assert await cli.ok("read", lease_id, "1", "5") == "\\x1b]0;o\n"


async def test_a_pipe_and_output_files_still_get_the_raw_bytes(
    cli: Cli, mock_clock: MockClock, tmp_path: os.PathLike[str]
) -> None:
    lease_id = (await cli.ok("lease", "16")).strip()
    await cli.ok("set", lease_id, ESCAPE)
    assert (await cli.ok("get", lease_id)).startswith(ESCAPE)
    out = f"{tmp_path}/region"
    await cli.ok("get", lease_id, "--output", out)
    with open(out, "rb") as f:
        assert f.read().startswith(ESCAPE.encode())
