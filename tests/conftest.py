"""Shared fixtures: a real memlease server on loopback, on port 0, in the test's own trio run.

    async def test_something(server):                 # every built-in protocol, 1 MiB arena
        async with await server.connect("network") as client:
            granted = await client.lease(100, 5000)

    async def test_other(start_server):               # choose protocols and config fields
        server = await start_server("native", arena_size=4096, max_connections=2)

    async def test_blocking(server):                  # the blocking client, off the trio thread
        def work() -> bytes:
            with server.client("uuid") as client: ...
        await trio.to_thread.run_sync(work)

The server runs in pytest-trio's ``nursery`` fixture and is cancelled when the test ends.
Pair with the ``autojump_clock`` fixture (MockClock(autojump_threshold=0)) for expiry and
timeout tests: time then moves only when every task waits.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from memlease.client.blocking import Client
from memlease.client.trio_client import AsyncClient, connect
from memlease.protocol import ProtocolRegistry, load_protocols
from memlease.server.config import Config
from memlease.server.config_values import Listener
from memlease.server.run import BoundListener, serve

PROTOCOLS = ("native", "network", "uuid")
"""The built-in protocols; tests parametrized with ``protocol`` run once for each."""

TEST_ARENA_SIZE = 1024 * 1024


def make_config(*protocols: str, **fields: Any) -> Config:
    """A Config listening on loopback, port 0, for ``protocols`` (default: the built-ins), with
    a 1 MiB arena unless ``fields`` say otherwise."""
    fields.setdefault("arena_size", TEST_ARENA_SIZE)
    fields.setdefault("host", "127.0.0.1")
    fields.setdefault("listeners", tuple(Listener(name, 0) for name in protocols or PROTOCOLS))
    return Config(**fields)


@dataclass
class RunningServer:
    """A server started by the fixtures: its config and where each protocol listens."""

    config: Config
    listeners: list[BoundListener]
    registry: ProtocolRegistry
    cancel_scope: trio.CancelScope = field(repr=False)

    def address(self, protocol: str = "native") -> tuple[str, int]:
        for bound in self.listeners:
            if bound.protocol == protocol:
                return bound.host, bound.port
        raise LookupError(f"the test server does not listen for {protocol!r}")

    async def connect(self, protocol: str = "native", **options: Any) -> AsyncClient:
        return await connect(self.address(protocol), protocol, registry=self.registry, **options)

    def client(self, protocol: str = "native", **options: Any) -> Client:
        """A blocking client: call from a worker thread (trio.to_thread.run_sync)."""
        return Client(self.address(protocol), protocol, registry=self.registry, **options)

    async def open_socket(self, protocol: str = "native") -> trio.SocketStream:
        """A raw connection, for sending bytes no client would."""
        return await trio.open_tcp_stream(*self.address(protocol))

    def stop(self) -> None:
        """Cancel the server at once (as the end of the test would)."""
        self.cancel_scope.cancel()


StartServer = Callable[..., Awaitable[RunningServer]]


SUBJECT_INTERPRETED_IN_BOTH_BUILDS = frozenset(
    {
        "test_bench.py",
        "test_bench_cli.py",
        "test_bench_fleet.py",
        "test_cli_fleet.py",
        "test_fleet.py",
        "test_fleet_dns.py",
        "test_fleet_partition.py",
        "test_handle.py",
        "test_hardening_signals.py",
        "test_logs.py",
        "test_shards.py",
        "test_shards_metrics.py",
        "test_top.py",
    }
)
"""Test files whose subject (the fleet client and its handles, bench, the shards' supervisor,
signals, the log, top) is not among the compiled modules: the compiled build's pass
(MEMLEASE_MYPYC=1, .ci/run's second) skips them, as they would test the same interpreted code
again. The servers and clients they start reach compiled modules, which every other file tests
in both builds."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MEMLEASE_MYPYC") != "1":
        return
    skip = pytest.mark.skip(
        reason="compiled build: its subject is interpreted in both builds (tests/conftest.py)"
    )
    for item in items:
        if item.path.name in SUBJECT_INTERPRETED_IN_BOTH_BUILDS:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: pytest -p no:xdist runs too
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pytest-xdist): two workers a core. Many tests spend much of their time
    waiting, on servers and subprocesses starting, on sockets, on real-time bounds: with one
    worker a core the cores stood idle (on 2 cores, 4 workers took 35-45 s, 2 took 58-60 s).
    PYTEST_XDIST_AUTO_NUM_WORKERS still chooses another number."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return 2 * len(os.sched_getaffinity(0))


@pytest.fixture(scope="session")
def registry() -> ProtocolRegistry:
    """The installed protocols, loaded once for the whole session."""
    return load_protocols(warn=False)


@pytest.fixture
def start_server(nursery: trio.Nursery, registry: ProtocolRegistry) -> StartServer:
    """``await start_server(*protocols, **config_fields)`` -> RunningServer; no protocols:
    every installed built-in. ``protocols_from``: a registry of one's own."""

    async def start(
        *protocols: str, protocols_from: ProtocolRegistry | None = None, **fields: Any
    ) -> RunningServer:
        plugins = protocols_from or registry
        installed = [name for name in PROTOCOLS if name in plugins.protocols]
        config = make_config(*(protocols or installed), **fields)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[list[BoundListener]]) -> None:
            with scope:
                await serve(config, registry=plugins, handle_signals=False, task_status=task_status)

        listeners: list[BoundListener] = await nursery.start(run)
        return RunningServer(config, listeners, plugins, scope)

    return start


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    """A server for every built-in protocol with the default limits and a 1 MiB arena."""
    return await start_server()


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each built-in protocol in turn."""
    name: str = request.param
    return name
