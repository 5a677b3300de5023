"""Fleets that find their servers in DNS, against a DNS server (dnslib's) started by the test
on loopback: A records with a port, as a headless Kubernetes Service gives; SRV records
without one; looked up again on the interval, so a server added joins and one removed takes
no new leases."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import dns.resolver
import pytest
import trio
from dns_zone import Zone, zone_fixture  # noqa: F401  (the zone fixture)
from dnslib import SRV, A
from server_processes import ServerProcess

import memlease
from memlease import ConnectionFailed, Fleet


@pytest.fixture
def headless() -> Iterator[list[ServerProcess]]:
    """Three servers on one port, each on its own loopback address, as pods behind a
    headless Service; a fourth address ready to join."""
    servers = [ServerProcess("uuid", host=f"127.0.0.{index}") for index in (2, 3, 4)]
    try:
        servers[0].start()
        for server in servers[1:]:
            server.port = servers[0].port
            server.start()
        yield servers
    finally:
        for server in servers:
            server.close()


def test_a_records_with_a_port_name_the_fleet_and_a_new_one_joins_on_the_next_lookup(
    zone: tuple[Zone, dns.resolver.Resolver], headless: list[ServerProcess]
) -> None:
    records, resolver = zone
    name = "memlease.default.svc.cluster.local"
    records.records[(name, "A")] = [A(s.host) for s in headless[:2]]
    port = headless[0].port
    with Fleet.from_dns(
        name, port, resolver=resolver, resolve_every=0.2, rng=random.Random(1)
    ) as fleet:
        assert fleet.servers == [s.address for s in headless[:2]]
        first = {fleet.lease(64, 60_000).server[0] for _ in range(20)}
        assert first == {"127.0.0.2", "127.0.0.3"}

        records.records[(name, "A")] = [A(s.host) for s in headless[1:]]
        time.sleep(0.25)
        handle = fleet.lease(64, 60_000)  # looks up again first
        assert fleet.servers == [s.address for s in headless[1:]]
        later = {handle.server[0], *(fleet.lease(64, 60_000).server[0] for _ in range(20))}
        assert later == {"127.0.0.3", "127.0.0.4"}

        records.records.pop((name, "A"))
        time.sleep(0.25)
        fleet.lease(64, 60_000)  # a failed lookup keeps the servers found before
        assert fleet.servers == [s.address for s in headless[1:]]


def test_srv_records_give_each_server_its_own_port(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    records, resolver = zone
    servers = [ServerProcess("uuid").start() for _ in range(2)]
    try:
        name = "_uuid._tcp.memlease.default.svc.cluster.local"
        records.records[(name, "SRV")] = [
            SRV(0, 0, s.port, "localhost") for s in servers
        ]
        with Fleet.from_dns(name, resolver=resolver, rng=random.Random(2)) as fleet:
            # Targets stay names: a handle names the pod, resolved when connecting.
            assert sorted(fleet.servers) == sorted(f"localhost:{s.port}" for s in servers)
            ports = {fleet.lease(64, 60_000).server[1] for _ in range(20)}
            assert ports == {s.port for s in servers}
    finally:
        for server in servers:
            server.close()


def test_a_name_with_no_records_is_refused_at_once_saying_which(
    zone: tuple[Zone, dns.resolver.Resolver],
) -> None:
    _, resolver = zone
    with pytest.raises(ConnectionFailed, match=r"cannot find the servers of 'nothing\.test'"):
        Fleet.from_dns("nothing.test", 7413, resolver=resolver)
    with pytest.raises(ConnectionFailed, match="SRV records"):
        Fleet.from_dns("_uuid._tcp.nothing.test", resolver=resolver)


async def test_the_trio_fleet_finds_its_servers_in_dns(
    zone: tuple[Zone, dns.resolver.Resolver], headless: list[ServerProcess]
) -> None:
    records, resolver = zone
    name = "memlease.default.svc.cluster.local"
    records.records[(name, "A")] = [A(s.host) for s in headless]
    async with await memlease.open_fleet(
        dns_name=name, port=headless[0].port, resolver=resolver, rng=random.Random(4)
    ) as fleet:
        assert fleet.servers == [s.address for s in headless]
        with trio.fail_after(10):
            handles = [await fleet.lease(64, 60_000) for _ in range(30)]
            await fleet.set(handles[0], b"found")
            assert (await fleet.get(str(handles[0]))).startswith(b"found")
        assert {h.server[0] for h in handles} == {s.host for s in headless}
