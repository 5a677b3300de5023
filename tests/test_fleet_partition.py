"""A fleet over servers in network namespaces of the test's own (``ip netns``, a veth pair
each, each server on its own address): a link set down cuts one server off, as a network
partition would. The client marks it down within 2 s and every other server's data stays
intact; with the link up again, the server (still alive, its leases with it) is used again.

Needs root and the ``ip`` command; skipped, with the reason, where a namespace cannot be made.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import trio
from server_processes import ServerProcess

import memlease
from memlease import Fleet, Handle, ServerUnavailable

SERVERS = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class _Namespaces:
    """Namespaces ml<pid>n<i>, each joined to this one by a veth pair on 10.<a>.<i>.0/24."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 100_000
        self.octet = 64 + os.getpid() % 128  # another test run's subnet is unlikely
        self.names = [f"ml{tag}n{i}" for i in range(count)]
        self.outer = [f"ml{tag}o{i}" for i in range(count)]
        self.made: list[str] = []

    def address(self, index: int) -> str:
        return f"10.{self.octet}.{index}.2"

    def make(self) -> None:
        for index, (name, outer) in enumerate(zip(self.names, self.outer, strict=True)):
            _ip("netns", "add", name)
            self.made.append(name)
            inner = f"{outer[:-2]}i{index}"
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", name)
            _ip("addr", "add", f"10.{self.octet}.{index}.1/24", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", name, "addr", "add", f"{self.address(index)}/24", "dev", inner)
            _ip("-n", name, "link", "set", inner, "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def link(self, index: int, state: str) -> None:
        _ip("link", "set", self.outer[index], state)

    def remove(self) -> None:
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        for outer in self.outer:  # gone with its peer's namespace; this is in case it is not
            subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[_Namespaces]:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) to make network namespaces")
    spaces = _Namespaces(SERVERS)
    try:
        spaces.make()
    except (subprocess.CalledProcessError, OSError) as exc:
        spaces.remove()
        reason = getattr(exc, "stderr", b"") or str(exc).encode()
        pytest.skip(f"cannot make a network namespace here (needs root): {reason.decode().strip()}")
    try:
        yield spaces
    finally:
        spaces.remove()


def test_a_partitioned_server_is_marked_down_within_two_seconds_and_the_others_keep_their_data(
    namespaces: _Namespaces,
) -> None:
    servers = [
        ServerProcess(
            "uuid",
            host=namespaces.address(index),
            prefix=("ip", "netns", "exec", namespaces.names[index]),
        )
        for index in range(SERVERS)
    ]
    try:
        for server in servers:
            server.start()
        with Fleet([s.address for s in servers], rng=random.Random(11), dead_timeout=0.3) as fleet:
            handles = [fleet.lease(1024, 120_000) for _ in range(30)]
            for handle in handles:
                fleet.set(handle, str(handle).encode())
            cut = servers[1]
            on_cut = [h for h in handles if h.server[0] == cut.host]
            others = [h for h in handles if h.server[0] != cut.host]
            assert on_cut and others

            namespaces.link(1, "down")
            started = time.monotonic()
            with pytest.raises(ServerUnavailable):
                fleet.get(on_cut[0])
            assert time.monotonic() - started < 2.0
            assert fleet.down() == [cut.address]
            for handle in others:
                assert fleet.get(handle).rstrip(b"\0") == str(handle).encode()
            assert all(fleet.lease(64, 120_000).server[0] != cut.host for _ in range(10))
            # A trio fleet that meets the partition on connecting: every one of its
            # concurrent calls on the cut server fails within 2 s, the others' go on.
            trio.run(_trio_calls_fail_fast, [s.address for s in servers], on_cut, others)

            namespaces.link(1, "up")
            deadline = time.monotonic() + 10
            data = None
            for _ in range(100):  # the back-off ends, the server answers again
                if time.monotonic() > deadline:
                    break
                try:
                    data = fleet.get(on_cut[0])
                    break
                except ServerUnavailable:
                    time.sleep(0.1)
            # Only cut off, never stopped: its leases are still there.
            assert data is not None and data.rstrip(b"\0") == str(on_cut[0]).encode()
    finally:
        for server in servers:
            server.close()


async def _trio_calls_fail_fast(
    addresses: list[str], on_cut: list[Handle], others: list[Handle]
) -> None:
    async with await memlease.open_fleet(addresses, dead_timeout=30) as fleet:
        failed: list[float] = []
        started = trio.current_time()

        async def get(handle: Handle) -> None:
            with pytest.raises(ServerUnavailable):
                await fleet.get(handle)
            failed.append(trio.current_time() - started)

        async with trio.open_nursery() as nursery:
            for handle in on_cut:
                nursery.start_soon(get, handle)
        assert len(failed) == len(on_cut) and max(failed) < 2.0, failed
        for handle in others:
            assert (await fleet.get(handle)).rstrip(b"\0") == str(handle).encode()
