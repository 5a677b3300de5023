"""``memlease bench --servers A,B``: a fleet as one more target, its connections spread over
every server, measured beside the single server bench starts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from server_processes import ServerProcess

from memlease import Client

SHORT = ["--duration", "700ms", "--warmup", "150ms", "--no-progress"]


@pytest.fixture
def two_servers() -> Iterator[list[ServerProcess]]:
    servers = [ServerProcess("uuid", arena="4MiB") for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.close()


def test_bench_drives_a_fleet_beside_the_single_server(two_servers: list[ServerProcess]) -> None:
    fleet = ",".join(s.address for s in two_servers)
    options = ["--protocol", "uuid", "-c", "4", "--workers", "1", "--servers", fleet, "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "memlease.bench", *SHORT, *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (case,) = json.loads(done.stdout)["cases"]
    for label in ("memlease/uuid", "memlease/uuid x2"):
        median = case["targets"][label]["median"]
        assert median["ops"] > 0
        assert median["errors"] == 0, median["error_kinds"]
    for server in two_servers:  # each server held two of the four connections' leases
        with Client(server.address, "uuid") as client:
            assert client.stats().granted == 2
