"""The ``memlease`` lease commands over a fleet: ``--servers A,B`` (or ``--dns NAME``) and
``lease`` prints a handle; every other command takes the handle in place of an id, with no
``--server``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import pytest
from dns_zone import Zone, zone_fixture  # noqa: F401  (the zone fixture)
from dnslib import SRV, A
from server_processes import ServerProcess

import memlease
from memlease import Handle
from memlease.cli.main import main

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def two_servers() -> Iterator[list[ServerProcess]]:
    servers = [ServerProcess("uuid") for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.close()


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_lease_on_a_fleet_prints_a_handle_that_every_command_takes(
    two_servers: list[ServerProcess], capsys: Capture
) -> None:
    servers = ",".join(s.address for s in two_servers)
    handles = []
    for _ in range(10):
        status, out, err = run(capsys, "--servers", servers, "lease", "64KiB", "--ttl", "1m")
        assert (status, err) == (0, "")
        handles.append(Handle.parse(out.strip()))
    assert {f"{h.server[0]}:{h.server[1]}" for h in handles} == {s.address for s in two_servers}
    assert all(isinstance(h.lease_id, uuid.UUID) for h in handles)

    text = str(handles[0])
    set_ = f"set 5 bytes of lease {text} (version 2)\n"
    assert run(capsys, "set", text, "hello") == (0, set_, "")
    wrote = f"wrote 1 bytes at 1 of lease {text} (version 3)\n"
    assert run(capsys, "write", text, "1", "E") == (0, wrote, "")
    status, out, _ = run(capsys, "gets", text)
    assert status == 0 and out.startswith("version 3\n")
    assert run(capsys, "cas", text, "3", "H") == (
        0,
        f"wrote 1 bytes of lease {text} (version 4)\n",
        "",
    )
    assert run(capsys, "cas", text, "3", "h")[0] == 1
    status, out, _ = run(capsys, "--json", "get", text)
    assert status == 0 and json.loads(out)["text"] == "HEllo"
    assert run(capsys, "read", text, "0", "2", "--json")[1].count('"text": "HE"') == 1
    renewed = f"renewed lease {text} for 5000 ms\n"
    assert run(capsys, "renew", text, "--ttl", "5s") == (0, renewed, "")
    status, out, _ = run(capsys, "stat", text)
    assert status == 0 and out.startswith(f"lease {text}: 65536 bytes,")
    assert run(capsys, "release", text) == (0, f"released lease {text}\n", "")
    assert run(capsys, "get", text) == (
        1,
        "",
        f"memlease: lease {text} not found (expired, released or never granted)\n",
    )

    status, out, _ = run(capsys, "--servers", servers, "--json", "lease", "1KiB")
    record = json.loads(out)
    assert record["handle"] == f"{record['server']}/{record['id']}"
    assert (record["size"], record["ttl_ms"]) == (1024, 5000)

    status, out, _ = run(capsys, "--servers", servers, "stats")
    assert status == 0
    assert [line.split(":", 2)[:2] for line in out.splitlines()] == [
        s.address.split(":") for s in two_servers
    ]
    tail = rf", version {re.escape(memlease.__version__)}, up \d+(ms|[dhms])( \d+[hms])*$"
    assert all(re.search(tail, line) for line in out.splitlines()), out


def test_a_fleet_with_a_server_down_says_which_in_stats_and_exits_1(
    two_servers: list[ServerProcess], capsys: Capture
) -> None:
    two_servers[1].kill()
    servers = ",".join(s.address for s in two_servers)
    status, out, _ = run(capsys, "--servers", servers, "--timeout", "1s", "stats", "--json")
    assert status == 1
    records = json.loads(out)["servers"]
    assert "arena_size" in records[two_servers[0].address]
    assert records[two_servers[0].address]["requests"]["stats"] >= 1
    assert "unavailable" in records[two_servers[1].address]["error"]
    # a lease goes to the live one
    status, out, _ = run(capsys, "--servers", servers, "lease", "1KiB")
    assert status == 0 and out.startswith(two_servers[0].address + "/")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "127.0.0.1:7413/nope"], "memlease get: '127.0.0.1:7413/nope': the id 'nope'"),
        (["get", "::1:7413/5"], "memlease get: server '::1:7413' is not HOST:PORT"),
        (["--servers", "a,b", "lease", "1"], "--servers: server 'a' is not HOST:PORT"),
        (["--dns", "x:y", "lease", "1"], "--dns 'x:y': expected NAME or NAME:PORT"),
    ],
)
def test_bad_handles_and_server_lists_are_usage_errors(
    capsys: Capture, argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert message in err and err.count("\n") == 1


def test_dns_finds_the_fleet_by_srv_records_or_by_a_records_with_a_port(
    two_servers: list[ServerProcess], zone: tuple[Zone, object], capsys: Capture
) -> None:
    records, resolver = zone
    dns_server = f"127.0.0.1:{resolver.port}"  # type: ignore[attr-defined]
    name = "_uuid._tcp.memlease.test"
    records.records[(name, "SRV")] = [SRV(0, 0, s.port, "localhost") for s in two_servers]
    status, out, err = run(capsys, "--dns", name, "--dns-server", dns_server, "lease", "1KiB")
    assert (status, err) == (0, "")
    assert Handle.parse(out.strip()).server[1] in {s.port for s in two_servers}

    records.records[("memlease.test", "A")] = [A("127.0.0.1")]
    port = two_servers[0].port
    argv = ["--dns", f"memlease.test:{port}", "--dns-server", dns_server, "lease", "1KiB"]
    status, out, err = run(capsys, *argv)
    assert (status, err) == (0, "")
    assert out.startswith(f"127.0.0.1:{port}/")
