"""The ``memlease`` client commands against a real server on loopback, for each protocol.

The server runs in the test's trio run on port 0 (tests/conftest.py); the blocking CLI runs in
a worker thread. The clock is trio's MockClock without autojump: server time stands still
unless a test jumps it, so no timeout fires by accident and expiry is exact. (pytest-trio
takes the clock from the test function's own arguments, hence ``mock_clock`` on each test.)
"""

from __future__ import annotations

import io
import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import RunningServer, StartServer
from trio.testing import MockClock

import memlease
from memlease.cli.main import main
from memlease.server.config import Config
from memlease.server.config_values import Listener

Capture = pytest.CaptureFixture[str]

TEXT = "this is some text"


class Cli:
    """Runs ``memlease --server ... --protocol ... ARGS`` against one test server."""

    def __init__(self, server: RunningServer, protocol: str, capsys: Capture) -> None:
        self.server, self.protocol, self.capsys = server, protocol, capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        host, port = self.server.address(self.protocol)
        args = ["--server", f"{host}:{port}", "--protocol", self.protocol, *argv]
        status = await trio.to_thread.run_sync(partial(main, args, registry=self.server.registry))
        out, err = self.capsys.readouterr()
        return status, out, err

    async def ok(self, *argv: str) -> str:
        status, out, err = await self(*argv)
        assert (status, err) == (0, ""), (argv, out, err)
        return out

    async def fails(self, *argv: str, status: int = 1) -> str:
        got, out, err = await self(*argv)
        assert got == status, (argv, out, err)
        assert out == ""
        assert err.count("\n") == 1, err
        return err.strip()

    async def lease(self, size: str = "1024", *more: str) -> str:
        return (await self.ok("lease", size, *more)).strip()

    def unknown_id(self) -> str:
        return str(uuid.uuid4()) if self.protocol == "uuid" else "123"


@pytest.fixture
async def cli(start_server: StartServer, protocol: str, capsys: Capture) -> Cli:
    server = await start_server(protocol, arena_size=64 * 1024)
    return Cli(server, protocol, capsys)


async def test_the_original_example_run(
    cli: Cli, mock_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease_id = await cli.lease("1024", "--ttl", "5000ms")
    # native's set is the original exchange, which does not carry the lease's version
    version = "" if cli.protocol == "native" else " (version 2)"
    assert await cli.ok("set", lease_id, TEXT) == f"set 17 bytes of lease {lease_id}{version}\n"
    # Not a terminal: the whole region, raw, zero padded.
    assert await cli.ok("get", lease_id) == TEXT + "\0" * (1024 - len(TEXT))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert await cli.ok("get", lease_id) == TEXT + "\n"


async def test_lease_json_and_stat(
    cli: Cli,
    mock_clock: MockClock,
) -> None:
    record = json.loads(await cli.ok("--json", "lease", "100", "--ttl", "2s"))
    assert record["size"] == 100
    assert record["ttl_ms"] == 2000
    lease_id = str(record["id"])
    stat = json.loads(await cli.ok("stat", lease_id, "--json"))
    assert stat == {"id": record["id"], "size": 100, "ttl_ms": 2000, "version": 1}
    stat_line = f"lease {lease_id}: 100 bytes, 2000 ms left, version 1\n"
    assert await cli.ok("stat", lease_id) == stat_line


async def test_lease_default_ttl_is_5s(
    cli: Cli,
    mock_clock: MockClock,
) -> None:
    record = json.loads(await cli.ok("--json", "lease", "64"))
    assert record["ttl_ms"] == 5000


async def test_read_write_and_output_file(cli: Cli, mock_clock: MockClock, tmp_path: Path) -> None:
    lease_id = await cli.lease("64")
    assert "wrote 3 bytes at 10" in await cli.ok("write", lease_id, "10", "abc")
    assert await cli.ok("read", lease_id, "9", "5") == "\0abc\0"
    out = tmp_path / "region"
    assert await cli.ok("get", lease_id, "--output", str(out)) == ""
    assert out.read_bytes() == b"\0" * 10 + b"abc" + b"\0" * 51
    record = json.loads(await cli.ok("--json", "read", lease_id, "10", "3"))
    assert (record["size"], record["text"], record["base64"]) == (3, "abc", "YWJj")


async def test_set_from_a_file_and_from_stdin(
    cli: Cli, mock_clock: MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease_id = await cli.lease("32")
    data = tmp_path / "data"
    data.write_bytes(b"\x00\xffbinary")
    await cli.ok("set", lease_id, "--file", str(data))
    record = json.loads(await cli.ok("--json", "get", lease_id))
    assert record["base64"].startswith("AP9iaW5hcnk")  # \x00\xffbinary
    assert record["text"] is None
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    await cli.ok("set", lease_id, "-")
    assert (await cli.ok("get", lease_id)).startswith("from stdin\0")


async def test_renew_release_and_stats(
    cli: Cli,
    mock_clock: MockClock,
) -> None:
    lease_id = await cli.lease("100", "--ttl", "1s")
    assert (
        await cli.ok("renew", lease_id, "--ttl", "1m") == f"renewed lease {lease_id} for 60000 ms\n"
    )
    assert json.loads(await cli.ok("--json", "stat", lease_id))["ttl_ms"] == 60000
    stats = json.loads(await cli.ok("--json", "stats"))
    assert stats["arena_size"] == 64 * 1024
    assert stats["live_leases"] == 1
    assert "live leases" in await cli.ok("stats")
    assert await cli.ok("release", lease_id) == f"released lease {lease_id}\n"
    assert json.loads(await cli.ok("--json", "stats"))["live_leases"] == 0
    err = await cli.fails("get", lease_id)
    assert err == f"memlease: lease {lease_id} not found (expired, released or never granted)"


async def test_stats_shows_uptime_version_hits_misses_and_requests_per_op(
    cli: Cli, mock_clock: MockClock
) -> None:
    lease_id = await cli.lease("100", "--ttl", "1h")
    await cli.ok("get", lease_id)
    await cli.ok("stat", lease_id)
    await cli.fails("get", cli.unknown_id())
    mock_clock.jump(3723.5)  # 1 h 2 min 3.5 s
    stats = json.loads(await cli.ok("--json", "stats"))
    assert stats["version"] == memlease.__version__
    assert stats["uptime_ms"] >= 3_723_500
    assert (stats["hits"], stats["misses"]) == (2, 1)
    assert {op: n for op, n in stats["requests"].items() if n} == {
        "lease": 1, "get": 2, "stat": 1, "stats": 1,
    }  # fmt: skip
    lines = dict(line.split(None, 1) for line in (await cli.ok("stats")).splitlines())
    assert lines["version"].strip() == memlease.__version__
    assert lines["uptime"].strip().startswith("1h 2m 3s")
    assert lines["requests"].strip() == "lease 1, get 2, stat 1, stats 2"


async def test_stats_shows_how_late_expiry_gave_memory_back(
    cli: Cli, mock_clock: MockClock
) -> None:
    await cli.lease("100", "--ttl", "500ms")
    await cli.lease("100", "--ttl", "1500ms")
    mock_clock.jump(1.0)  # the first is freed now, 500 ms after its deadline
    await trio.testing.wait_all_tasks_blocked()
    stats = json.loads(await cli.ok("--json", "stats"))
    assert stats["expired"] == 1
    assert stats["expiry_lag_us"] == pytest.approx(500_000, abs=1000)
    text = await cli.ok("stats")
    assert re.search(r"^expiry lag\s+50\d\.\d{3} ms in all, mean 50\d\.\d{3} ms$", text, re.M), text
    assert re.search(r"^expiry behind\s+0\.000 ms$", text, re.M), text


async def test_top_with_a_count_shows_the_server_over_each_protocol(
    cli: Cli, mock_clock: MockClock
) -> None:
    lease_id = await cli.lease("100", "--ttl", "1h")
    await cli.ok("get", lease_id)
    out = await cli.ok("top", "--count", "2", "--interval", "50ms")
    screens = out.split("memlease top")[1:]
    assert len(screens) == 2, out
    assert f"({cli.protocol})  version {memlease.__version__}" in screens[0]
    assert "1 live" in screens[-1]
    assert re.search(r"^\s*get\s+0\s+1\s*$", screens[-1], re.M), out  # no get since


async def test_an_expired_lease_is_not_found(cli: Cli, mock_clock: MockClock) -> None:
    lease_id = await cli.lease("10", "--ttl", "500ms")
    mock_clock.jump(0.499)
    await cli.ok("get", lease_id)
    mock_clock.jump(0.002)
    assert "not found (expired" in await cli.fails("get", lease_id)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["get", "ID"], "not found (expired, released or never granted)"),
        (["stat", "ID"], "not found"),
        (["release", "ID"], "not found"),
        (["renew", "ID", "--ttl", "1s"], "not found"),
        (["set", "ID", "x"], "not found"),
    ],
)
async def test_unknown_lease_fails_with_exit_1(
    cli: Cli, mock_clock: MockClock, command: list[str], expected: str
) -> None:
    argv = [cli.unknown_id() if word == "ID" else word for word in command]
    err = await cli.fails(*argv)
    assert err.startswith(f"memlease: lease {argv[1]} ")
    assert expected in err


async def test_refusals_fail_with_exit_1_and_one_line(
    cli: Cli,
    mock_clock: MockClock,
) -> None:
    await cli.fails("lease", "1MiB")  # the arena is 64 KiB
    lease_id = await cli.lease("8")
    await cli.fails("set", lease_id, "nine bytes")
    await cli.fails("write", lease_id, "7", "ab")
    await cli.fails("read", lease_id, "4", "5")
    assert await cli.ok("get", lease_id) == "\0" * 8  # nothing was written


async def test_cannot_connect_fails_with_exit_1(
    cli: Cli,
    mock_clock: MockClock,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    status, _out, err = await cli("--server", f"127.0.0.1:{free_port}", "stats")
    assert status == 1
    assert err.count("\n") == 1
    assert f"127.0.0.1:{free_port}" in err


def test_serve_with_a_port_taken_exits_2_naming_the_listener(
    capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        status = main(["serve", "--listen", "native=0", "--listen", f"native={port}"])
    _out, err = capsys.readouterr()
    assert status == 2, err
    assert err.strip().splitlines()[-1] == (
        f"memlease serve: listener native={port}: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    )


def test_serve_passes_the_flags_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def run(config: Config, reload: object = None) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr("memlease.server.run.run", run)
    argv = ["serve", "--listen", "uuid=9000", "--arena", "1MiB", "--max-ttl", "1h"]
    assert main(argv) == 0
    assert seen == [
        Config(listeners=(Listener("uuid", 9000),), arena_size=1024**2, max_ttl_ms=3_600_000)
    ]


def test_serve_takes_connection_memory_and_starts_the_default_on_24_gib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Config] = []

    def run(config: Config, reload: object = None) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr("memlease.server.run.run", run)
    monkeypatch.setattr("memlease.server.worst_case._physical_memory", lambda: 24 * 1024**3)
    assert main(["serve"]) == 0
    assert main(["serve", "--connection-memory", "200MiB"]) == 0
    assert seen == [Config(), Config(connection_memory=200 * 1024**2)]


def test_serve_refuses_a_worst_case_beyond_the_machine_s_memory_at_start(
    capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(config: Config, reload: object = None) -> int:
        raise AssertionError("started a server the machine cannot hold")

    monkeypatch.setattr("memlease.server.run.run", run)
    monkeypatch.setattr("memlease.server.worst_case._physical_memory", lambda: 24 * 1024**3)
    status = main(["serve", "--arena", "2GiB", "--listen", "network=0"])
    out, err = capsys.readouterr()
    assert (status, out, err.count("\n")) == (2, "", 1), err
    assert err.startswith("memlease: packaged default config: arena.min_block = '32B': the worst")
    assert "more than this machine's memory (24 GiB): raise arena.min_block" in err
    assert err.rstrip().endswith("or lower --arena")
    status = main(["serve", "--connection-memory", "24GiB", "--listen", "network=0"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("memlease: --connection-memory = '24GiB': the worst case, ")


def test_memlease_serve_subprocess_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[[listener]]\nprotocol = "network"\nport = 0\n[arena]\nsize = "64KiB"\n')
    command = [sys.executable, "-m", "memlease.cli.main", "serve", "--config", str(config)]
    # Unbuffered, so that select() sees every line not yet read.
    with subprocess.Popen(command, stderr=subprocess.PIPE, bufsize=0) as proc:
        try:
            port = _wait_for_port(proc)
            status = main(["--server", f"127.0.0.1:{port}", "--protocol", "network", "stats"])
            assert status == 0
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def _wait_for_port(proc: subprocess.Popen[bytes]) -> int:
    """The port from the server's "listening: network on HOST:PORT" log line."""
    assert proc.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while selector.select(timeout=10):
            line = proc.stderr.readline().decode()
            if "listening: network on" in line:
                return int(line.rsplit(":", 1)[1])
            assert line, "the server exited before listening"
    raise AssertionError("the server did not start listening within 10 s")
