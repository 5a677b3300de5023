"""The commands of versions, batches, watches and bound leases, as a user runs them: gets,
cas, lease --count, renew and release of many ids, watch, hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import pytest
import trio
from conftest import RunningServer, StartServer

from memlease.cli.main import main
from memlease.core.errors import LeaseNotFound

Capture = pytest.CaptureFixture[str]


async def run(
    server: RunningServer, protocol: str, capsys: Capture, *argv: str
) -> tuple[int, str, str]:
    host, port = server.address(protocol)
    args = ["--server", f"{host}:{port}", "--protocol", protocol, *argv]
    status = await trio.to_thread.run_sync(partial(main, args, registry=server.registry))
    out, err = capsys.readouterr()
    return status, out, err


async def test_gets_and_cas_from_the_command_line(
    server: RunningServer, protocol: str, capsys: Capture
) -> None:
    status, out, _ = await run(server, protocol, capsys, "lease", "16", "--ttl", "1m")
    lease_id = out.strip()
    assert (await run(server, protocol, capsys, "write", lease_id, "0", "hello"))[0] == 0
    status, out, err = await run(server, protocol, capsys, "gets", lease_id)
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == "version 2"
    status, out, err = await run(server, protocol, capsys, "cas", lease_id, "2", "HELLO")
    assert (status, out, err) == (0, f"wrote 5 bytes of lease {lease_id} (version 3)\n", "")
    status, out, err = await run(server, protocol, capsys, "cas", lease_id, "2", "stale")
    assert (status, out) == (1, "")
    assert "at version 3, not 2" in err and err.count("\n") == 1
    record = json.loads((await run(server, protocol, capsys, "--json", "gets", lease_id))[1])
    assert (record["version"], record["text"]) == (3, "HELLO")


async def test_lease_count_renew_and_release_many(
    server: RunningServer, protocol: str, capsys: Capture
) -> None:
    status, out, _ = await run(server, protocol, capsys, "lease", "64", "--count", "3")
    ids = out.split()
    assert status == 0 and len(set(ids)) == 3
    status, out, err = await run(server, protocol, capsys, "renew", *ids, "--ttl", "1m")
    assert (status, out, err) == (0, "renewed 3 of 3 leases for 60000 ms\n", "")
    await run(server, protocol, capsys, "release", ids[0])
    status, out, err = await run(server, protocol, capsys, "release", *ids)
    assert (status, out) == (1, "released 2 of 3 leases\n")
    assert err == f"memlease: not found (expired, released or never granted): {ids[0]}\n"


async def test_watch_prints_a_line_per_notice_and_ends_when_all_have_ended(
    server: RunningServer, capsys: Capture
) -> None:
    status, out, _ = await run(server, "network", capsys, "lease", "64", "--count", "2")
    a, b = out.split()
    async with trio.open_nursery() as nursery:
        result: list[tuple[int, str, str]] = []

        async def watch() -> None:
            result.append(await run(server, "network", capsys, "--json", "watch", a, b))

        nursery.start_soon(watch)
        async with await server.connect("network") as client:
            await trio.sleep(0.3)  # the watch is in place (a real second: the CLI's thread)
            await client.release(int(a))
            await client.release(int(b))
    status, out, err = result[0]
    assert (status, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": int(a), "reason": "released"},
        {"id": int(b), "reason": "released"},
    ]


async def test_watch_of_an_unknown_id_is_one_line_and_exit_1(
    server: RunningServer, capsys: Capture
) -> None:
    status, out, err = await run(server, "network", capsys, "watch", "4242")
    assert (status, out) == (1, "")
    assert err == "memlease: lease 4242 not found (expired, released or never granted)\n"


async def test_hold_keeps_a_lease_while_it_runs_and_the_server_releases_it_when_killed(
    start_server: StartServer,
) -> None:
    server = await start_server("uuid")
    host, port = server.address("uuid")
    command = [sys.executable, "-m", "memlease.cli.main", "--server", f"{host}:{port}"]
    command += ["--protocol", "uuid", "hold", "4KiB", "--ttl", "400ms"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        with trio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(100)
        lease_id = __import__("uuid").UUID(line.decode().strip())
        async with await server.connect("uuid") as client:
            await trio.sleep(1.0)  # past its 400 ms ttl: hold renews it
            assert (await client.stat(lease_id)).size == 4096
            proc.send_signal(signal.SIGKILL)  # no goodbye: the kernel closes the socket
            killed = time.monotonic()
            with trio.fail_after(5):
                await proc.wait()
                while True:
                    try:
                        await client.stat(lease_id)
                    except LeaseNotFound:
                        break
                    await trio.sleep(0.01)
            assert time.monotonic() - killed < 1.0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
