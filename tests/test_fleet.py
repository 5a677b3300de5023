"""memlease.Fleet over real servers in child processes on loopback: leases spread over them,
every call routed by handle, a dead or silent server marked down within 2 s and refused at
once while down, the others untouched, and a restarted server used again."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from server_processes import ServerProcess

import memlease
from memlease import Fleet, Handle, LeaseNotFound, NoRoom, ServerUnavailable


@pytest.fixture
def three_servers() -> Iterator[list[ServerProcess]]:
    servers = [ServerProcess("uuid") for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.close()


def _fleet(servers: list[ServerProcess], **options: object) -> Fleet:
    options.setdefault("dead_timeout", 0.2)
    return Fleet([s.address for s in servers], rng=random.Random(7), **options)  # type: ignore[arg-type]


def _on(servers: list[ServerProcess], handles: list[Handle]) -> dict[str, int]:
    counts = {s.address: 0 for s in servers}
    for handle in handles:
        counts[f"{handle.server[0]}:{handle.server[1]}"] += 1
    return counts


def test_leases_spread_over_every_server_and_any_fleet_reaches_them_by_handle_text(
    three_servers: list[ServerProcess],
) -> None:
    with _fleet(three_servers) as fleet:
        handles = [fleet.lease(1024, 60_000) for _ in range(60)]
        for number, handle in enumerate(handles):
            fleet.set(handle, f"lease {number}".encode())
        counts = _on(three_servers, handles)
        assert all(count >= 10 for count in counts.values()), counts
        figures = fleet.stats()
        assert sorted(s.live_leases for s in figures.values()) == sorted(counts.values())  # type: ignore[union-attr]
    # Another client, given only the text, with none of the servers in its list.
    with Fleet([], protocol="uuid") as other:
        for number, handle in enumerate(handles):
            text = str(handle)
            assert other.get(text).rstrip(b"\0") == f"lease {number}".encode()
            other.write(text, 0, b"L")
            assert other.read(text, 0, 5) == b"Lease"
            other.renew(text, 1000)
            assert other.stat(text).size == 1024
            other.release(text)
            with pytest.raises(LeaseNotFound):
                other.get(text)


def test_no_room_on_one_server_tries_the_others_before_refusing() -> None:
    small = [ServerProcess("uuid", arena="4KiB") for _ in range(3)]
    try:
        for server in small:
            server.start()
        with _fleet(small) as fleet:
            handles = [fleet.lease(4096, 60_000) for _ in range(3)]
            assert sorted(_on(small, handles).values()) == [1, 1, 1]
            with pytest.raises(NoRoom, match="no live server has room for 4096 B"):
                fleet.lease(4096, 60_000)
            fleet.release(handles[1])
            assert fleet.lease(4096, 60_000).server == handles[1].server
    finally:
        for server in small:
            server.close()


def test_a_killed_server_is_marked_down_at_once_and_a_restarted_one_is_used_again(
    three_servers: list[ServerProcess],
) -> None:
    with _fleet(three_servers, dead_timeout=0.5) as fleet:
        handles = [fleet.lease(256, 60_000) for _ in range(30)]
        for handle in handles:
            fleet.set(handle, str(handle).encode())
        victim = three_servers[1]
        victim.kill()
        on_victim = [h for h in handles if h.server[1] == victim.port]
        others = [h for h in handles if h.server[1] != victim.port]
        assert on_victim and others

        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            fleet.get(on_victim[0])
        assert time.monotonic() - started < 2.0
        assert fleet.down() == [victim.address]
        started = time.monotonic()
        for handle in on_victim:  # at once while down: no connect is tried
            with pytest.raises(ServerUnavailable, match="marked down"):
                fleet.get(handle)
        assert time.monotonic() - started < 0.5
        for handle in others:
            assert fleet.get(handle).rstrip(b"\0") == str(handle).encode()
        placed = [fleet.lease(256, 60_000) for _ in range(20)]
        assert _on(three_servers, placed)[victim.address] == 0

        victim.restart()
        deadline = time.monotonic() + 10
        back: Handle | None = None
        for _ in range(200):
            if time.monotonic() > deadline:
                break
            handle = fleet.lease(256, 60_000)
            if handle.server[1] == victim.port:
                back = handle
                break
            time.sleep(0.05)
        assert back is not None, "the restarted server took no lease within 10 s"
        assert fleet.down() == []
        with pytest.raises(LeaseNotFound):  # its old leases died with it
            fleet.get(on_victim[0])
        for handle in others:
            assert fleet.get(handle).rstrip(b"\0") == str(handle).encode()


def test_a_server_that_stops_answering_is_marked_down_within_two_seconds(
    three_servers: list[ServerProcess],
) -> None:
    with _fleet(three_servers, dead_timeout=30.0) as fleet:
        handles = [fleet.lease(256, 60_000) for _ in range(30)]
        silent = three_servers[0]
        on_silent = next(h for h in handles if h.server[1] == silent.port)
        fleet.get(on_silent)  # its connection is open
        silent.pause()
        try:
            started = time.monotonic()
            with pytest.raises(ServerUnavailable, match="no reply within 1 s"):
                fleet.get(on_silent)
            assert time.monotonic() - started < 2.0
            started = time.monotonic()
            with pytest.raises(ServerUnavailable, match="marked down"):
                fleet.stat(on_silent)
            assert time.monotonic() - started < 0.1
            for handle in handles:
                if handle.server[1] != silent.port:
                    fleet.renew(handle, 60_000)
        finally:
            silent.resume()


def test_handles_of_the_wrong_kind_or_form_are_refused_before_any_connection() -> None:
    with Fleet(["127.0.0.1:1"], protocol="uuid") as fleet:
        with pytest.raises(memlease.BadHandle, match="ids are UUIDs"):
            fleet.get("127.0.0.1:1/42")
        with pytest.raises(memlease.BadHandle, match="not a lease handle"):
            fleet.get("42")
    with pytest.raises(memlease.ConfigError, match="not HOST:PORT"):
        Fleet(["no-port"])


def test_a_fleet_with_no_live_server_says_why() -> None:
    with Fleet(["127.0.0.1:1"], protocol="uuid", dead_timeout=5) as fleet:
        live = r"no server of the fleet is live: 127\.0\.0\.1:1"
        with pytest.raises(ServerUnavailable, match=live):
            fleet.lease(64, 1000)
        with pytest.raises(ServerUnavailable, match="no server of the fleet is live"):
            fleet.lease(64, 1000)


def test_a_server_on_ipv6_is_named_in_brackets_and_reached_by_its_handle_text() -> None:
    server = ServerProcess("uuid", host="::1")
    try:
        server.start()
    except AssertionError as exc:
        server.close()
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        with Fleet([server.address]) as fleet:
            handle = fleet.lease(64, 60_000)
            text = str(handle)
            assert text.startswith(f"[::1]:{server.port}/")
            fleet.set(text, b"six")
            with Fleet([]) as other:
                assert other.get(text).startswith(b"six")
    finally:
        server.close()


def test_a_busy_server_passes_the_lease_to_another_and_all_busy_is_said(
    three_servers: list[ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    from memlease.core.messages import LeaseRequest

    busy = {three_servers[0].port, three_servers[1].port}
    with _fleet(three_servers) as fleet:
        real_call = fleet._call

        def call(state, call):  # type: ignore[no-untyped-def]
            if isinstance(call.request, LeaseRequest) and state.address[1] in busy:
                raise memlease.ServerBusy("shutting down")
            return real_call(state, call)

        monkeypatch.setattr(fleet, "_call", call)
        ports = {fleet.lease(64, 60_000).server[1] for _ in range(10)}
        assert ports == {three_servers[2].port}
        busy.add(three_servers[2].port)
        with pytest.raises(memlease.ServerBusy, match="every live server is busy"):
            fleet.lease(64, 60_000)


def test_versions_and_batches_over_a_fleet(three_servers: list[ServerProcess]) -> None:
    with _fleet(three_servers) as fleet:
        handle = fleet.lease(64, 60_000)
        assert fleet.set(handle, b"v1") == 2
        assert fleet.gets(str(handle))[1] == 2
        assert fleet.cas(handle, 2, b"v2") == 3
        with pytest.raises(memlease.VersionMismatch) as stale:
            fleet.cas(handle, 2, b"late")
        assert stale.value.current == 3
        # A batch is placed on one server, all or none; another is tried when it has no room.
        many = fleet.lease_many(3, 256 * 1024, 60_000)
        assert len({h.server for h in many}) == 1
        with pytest.raises(NoRoom):
            fleet.lease_many(5, 256 * 1024, 60_000)  # no server of 1 MiB holds 5 x 256 KiB
        spread = [fleet.lease(1024, 1_000) for _ in range(12)] + many
        assert len({h.server for h in spread}) == 3
        fleet.release(spread[0])
        # Renewals and releases go to each handle's server, one request per server.
        assert fleet.renew_many(spread, 60_000) == [spread[0]]
        assert fleet.release_many(spread) == [spread[0]]
        assert sum(s.live_leases for s in fleet.stats().values()) == 1  # type: ignore[union-attr]


async def test_the_trio_fleet_has_the_batches_too(three_servers: list[ServerProcess]) -> None:
    async with await memlease.open_fleet([s.address for s in three_servers]) as fleet:
        many = await fleet.lease_many(4, 1024, 60_000)
        assert len({h.server for h in many}) == 1
        assert await fleet.gets(many[0]) == (bytes(1024), 1)
        assert await fleet.release_many(many + many[:1]) == many[:1]
