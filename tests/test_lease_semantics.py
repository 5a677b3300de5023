"""Versions and compare-and-set, batches, connection-bound leases and notices, end to end:
through a real server on loopback, with the clients as a user calls them, on every protocol."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer

from memlease import (
    ConnectionFailed,
    LeaseNotFound,
    NoRoom,
    TooMany,
    VersionMismatch,
)
from memlease.core.messages import (
    EndReason,
    GrantedMany,
    LeaseManyRequest,
    Notice,
    ReleaseRequest,
    StatsRequest,
)

KiB = 1024


async def test_versions_count_writes_and_cas_writes_only_at_its_version(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        lease = (await client.lease(16, 60_000)).lease_id
        assert (await client.stat(lease)).version == 1
        # native's set is the original exchange, which carries no version: 0 there
        assert await client.set(lease, b"hello") == (0 if protocol == "native" else 2)
        assert await client.write(lease, 5, b"!") == 3
        assert await client.gets(lease) == (b"hello!" + bytes(10), 3)
        assert await client.cas(lease, 3, b"HELLO") == 4
        with pytest.raises(VersionMismatch) as stale:
            await client.cas(lease, 3, b"stale")
        assert stale.value.current == 4
        assert await client.get(lease) == b"HELLO!" + bytes(10)  # nothing written
        assert (await client.stat(lease)).version == 4
        await client.release(lease)
        with pytest.raises(LeaseNotFound):
            await client.cas(lease, 4, b"gone")


async def test_lease_many_is_all_or_nothing(server: RunningServer, protocol: str) -> None:
    async with await server.connect(protocol) as client:
        with pytest.raises(NoRoom, match="none was granted"):
            await client.lease_many(3, 512 * KiB, 60_000)
        assert (await client.stats()).live_leases == 0
        granted = await client.lease_many(4, 64 * KiB, 60_000)
        assert len({g.lease_id for g in granted}) == 4
        assert all((g.size, g.ttl_ms) == (64 * KiB, 60_000) for g in granted)
        assert await client.get(granted[3].lease_id) == bytes(64 * KiB)


async def test_renew_many_and_release_many_say_which_ids_were_not_found(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        a, b = (g.lease_id for g in await client.lease_many(2, 32, 1_000))
        await client.release(b)
        assert await client.renew_many([a, b], 60_000) == [b]
        assert (await client.stat(a)).ttl_ms > 59_000
        assert await client.release_many([b, a]) == [b]
        assert (await client.stats()).live_leases == 0


async def test_a_batch_over_the_limit_is_refused_before_anything_is_done(
    start_server: StartServer, protocol: str
) -> None:
    server = await start_server(protocol, max_batch=5)
    async with await server.connect(protocol) as client:
        with pytest.raises(TooMany, match="at most 5"):
            await client.lease_many(6, 32, 60_000)
        ids = [g.lease_id for g in await client.lease_many(5, 32, 60_000)]
        with pytest.raises(TooMany):
            await client.release_many(ids + ids[:1])
        assert (await client.stats()).live_leases == 5  # and the connection still serves


async def test_a_bound_lease_ends_with_its_connection_and_others_may_use_it_meanwhile(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as other:
        owner = await server.connect(protocol)
        bound = (await owner.lease(64, 60_000, bound=True)).lease_id
        await other.set(bound, b"shared")
        assert (await owner.get(bound))[:6] == b"shared"
        await other.watch(bound)
        await owner.aclose()
        with trio.fail_after(1):
            notice = await other.notices().__anext__()
        assert notice == Notice(bound, EndReason.CLOSED)
        with pytest.raises(LeaseNotFound):
            await other.get(bound)
        assert (await other.stats()).live_leases == 0


async def test_a_bound_lease_ends_when_the_server_cuts_its_connection(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("network", request_timeout=2.0)
    codec = server.registry.get("network").client_codec(server.config.max_message)
    async with await server.open_socket("network") as owner:
        await owner.send_all(codec.encode_request(LeaseManyRequest(3, 32, 60_000, bound=True)))
        granted = None
        while granted is None:
            codec.feed(await owner.receive_some(1 << 16))
            granted = codec.next_reply()
        assert isinstance(granted, GrantedMany)
        ids = granted.lease_ids
        await owner.send_all(b"\x01\x07")  # the start of a message, never finished
        async with await server.connect("network") as other:
            await trio.sleep(1)
            assert await other.renew_many(ids, 60_000) == []
            await trio.sleep(1.5)  # the owner's request timeout has cut it
            assert await other.release_many(ids) == ids


async def test_a_bound_lease_still_expires_at_its_ttl(
    server: RunningServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with await server.connect("uuid") as owner:
        bound = (await owner.lease(32, 100, bound=True)).lease_id
        await trio.sleep(0.2)
        with pytest.raises(LeaseNotFound):
            await owner.get(bound)


async def test_notices_come_at_the_deadline_never_before(
    server: RunningServer, protocol: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with await server.connect(protocol) as client:
        granted_at = trio.current_time()
        lease = (await client.lease(32, 250)).lease_id
        await client.watch([lease])
        with trio.fail_after(1):
            notice = await client.notices().__anext__()
        came = trio.current_time() - granted_at
        assert notice == Notice(lease, EndReason.EXPIRED)
        assert 0.25 <= came <= 0.25 + 0.05


async def test_a_release_by_anyone_is_noticed_and_notices_never_pass_for_replies(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as watcher:
        a, b = (g.lease_id for g in await watcher.lease_many(2, 32, 60_000))
        await watcher.watch([a, b])
        # Its own release of a, pipelined with stats: the notice comes among the replies.
        replies = await watcher.pipeline([ReleaseRequest(a), StatsRequest()])
        assert [type(r).__name__ for r in replies] == ["Done", "ServerStats"]
        async with await server.connect(protocol) as stranger:
            await stranger.release(b)
        with trio.fail_after(1):
            notices = watcher.notices()
            got = [await notices.__anext__(), await notices.__anext__()]
        assert got == [Notice(a, EndReason.RELEASED), Notice(b, EndReason.RELEASED)]
        assert (await watcher.stats()).live_leases == 0  # calls go on after the waits


async def test_watch_refusals_are_typed_and_unwatch_of_the_unwatched_is_not_an_error(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        lease = (await client.lease(32, 60_000)).lease_id
        missing = 4242 if protocol != "uuid" else __import__("uuid").uuid4()
        with pytest.raises(LeaseNotFound):
            await client.watch([lease, missing])  # all or none: lease is not watched either
        assert await client.unwatch([lease, missing]) == [lease, missing]
        await client.watch(lease)
        assert await client.unwatch(lease) == []
        await client.release(lease)
        with trio.move_on_after(0.2):
            await client.notices().__anext__()
            pytest.fail("a notice came for an unwatched lease")


async def test_the_server_holds_at_most_max_watches(start_server: StartServer) -> None:
    server = await start_server("network", max_watches=3)
    async with await server.connect("network") as client:
        ids = [g.lease_id for g in await client.lease_many(4, 32, 60_000)]
        await client.watch(ids[:2])
        async with await server.connect("network") as other:
            await other.watch(ids[2])
            with pytest.raises(TooMany, match="at most 3 over all connections"):
                await client.watch(ids[3:])
        await client.watch(ids[3:])  # the other connection's watch ended with it


async def test_twenty_thousand_watched_leases_expiring_at_once_are_all_noticed(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("network", arena_size=4 * 1024 * 1024)
    async with await server.connect("network") as client:
        ids: list[object] = []
        for _ in range(4):
            ids += [g.lease_id for g in await client.lease_many(5_000, 32, 1_000)]
        for start in range(0, len(ids), 5_000):
            await client.watch(ids[start : start + 5_000])  # type: ignore[arg-type]
        deadline = trio.current_time() + 1.0
        seen = set()
        with trio.fail_after(3):
            async for notice in client.notices():
                assert notice.reason is EndReason.EXPIRED
                seen.add(notice.lease_id)
                if len(seen) == len(ids):
                    break
        assert seen == set(ids)
        assert trio.current_time() <= deadline + 1.0


async def test_the_blocking_client_waits_for_notices_with_a_timeout(
    server: RunningServer,
) -> None:
    def work() -> None:
        with server.client("uuid") as client:
            lease = client.lease(32, 60_000).lease_id
            client.watch(lease)
            assert client.next_notice(timeout=0.05) is None
            client.release(lease)
            assert client.next_notice(timeout=5) == Notice(lease, EndReason.RELEASED)

    await trio.to_thread.run_sync(work)


async def test_a_connection_waiting_for_notices_or_holding_bound_leases_is_not_idle(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("network", idle_timeout=5.0)
    async with await server.connect("network") as holder:
        bound = (await holder.lease(32, 20_000, bound=True)).lease_id
        watched = (await holder.lease(32, 12_000)).lease_id
        await holder.watch(watched)
        with trio.fail_after(13):
            notice = await holder.notices().__anext__()  # 12 s of silence: still open
        assert notice == Notice(watched, EndReason.EXPIRED)
        await trio.sleep(6)  # its bound lease still holds it open
        assert (await holder.stat(bound)).size == 32
        await holder.release(bound)
        await trio.sleep(6)  # nothing left to wait for: idle again
        with pytest.raises(ConnectionFailed):
            await holder.stats()


async def test_two_tasks_may_wait_for_notices_on_one_client_without_spinning(
    server: RunningServer,
) -> None:
    async with await server.connect("network") as client:
        a, b = (g.lease_id for g in await client.lease_many(2, 32, 60_000))
        await client.watch([a, b])
        waits = 0
        wait = client._wait_for_notices

        async def counted() -> None:
            nonlocal waits
            waits += 1
            await wait()

        client._wait_for_notices = counted  # type: ignore[method-assign]
        heard: list[Notice] = []

        async def listen() -> None:
            async for notice in client.notices():
                heard.append(notice)
                return

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                nursery.start_soon(listen)
                await trio.sleep(0.2)  # both wait: one in a receive, one for the lock
                assert waits <= 4
                await client.release_many([a, b])
        assert sorted(n.lease_id for n in heard) == sorted([a, b])


async def test_a_burst_of_notices_reaches_a_reading_watcher_whole(server: RunningServer) -> None:
    async with await server.connect("network") as watcher:
        ids = [g.lease_id for g in await watcher.lease_many(3000, 32, 60_000)]
        await watcher.watch(ids)
        async with await server.connect("network") as other:
            assert await other.release_many(ids) == []  # 3,000 notices in one go
        heard = set()
        with trio.fail_after(10):
            async for notice in watcher.notices():
                heard.add(notice.lease_id)
                if len(heard) == len(ids):
                    break
        assert (await watcher.stats()).live_leases == 0
