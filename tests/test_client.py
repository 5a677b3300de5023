"""Every method of both clients against a real server on loopback, for each protocol,
including every refusal and connection failure."""

from __future__ import annotations

import uuid

import pytest
import trio
from conftest import TEST_ARENA_SIZE, RunningServer, StartServer

import memlease
from memlease import (
    BadSize,
    BadTtl,
    ConfigError,
    ConnectionFailed,
    LeaseError,
    LeaseNotFound,
    LeaseTooSmall,
    NoRoom,
    ProtocolError,
)
from memlease.client.connecting import parse_address
from memlease.core.messages import (
    ErrorReply,
    GetRequest,
    Granted,
    IdKind,
    LeaseId,
    LeaseRequest,
    SetRequest,
)


def unknown_id(protocol: str) -> LeaseId:
    return uuid.uuid4() if protocol == "uuid" else 12345


async def test_lease_gives_an_id_of_the_protocols_kind_with_size_and_ttl(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        granted = await client.lease(100, 60_000)
    assert isinstance(granted, Granted)
    assert (granted.size, granted.ttl_ms) == (100, 60_000)
    if protocol == "uuid":
        assert isinstance(granted.lease_id, uuid.UUID)
    else:
        assert isinstance(granted.lease_id, int) and 0 < granted.lease_id < 2**31


async def test_set_then_get_returns_the_whole_region(server: RunningServer, protocol: str) -> None:
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(100, 60_000)).lease_id
        await client.set(lease_id, b"hello\0")
        assert await client.get(lease_id) == b"hello\0" + bytes(94)
        await client.set(lease_id, b"HE")
        assert (await client.get(lease_id))[:6] == b"HEllo\0"


async def test_read_and_write_address_part_of_the_region(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(64, 60_000)).lease_id
        await client.write(lease_id, 10, b"abc")
        assert await client.read(lease_id, 9, 5) == b"\0abc\0"
        assert (await client.get(lease_id))[10:13] == b"abc"


async def test_stat_renew_release(server: RunningServer, protocol: str) -> None:
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(50, 10_000)).lease_id
        info = await client.stat(lease_id)
        assert info.size == 50 and 0 < info.ttl_ms <= 10_000
        await client.renew(lease_id, 90_000)
        assert 10_000 < (await client.stat(lease_id)).ttl_ms <= 90_000
        await client.release(lease_id)
        with pytest.raises(LeaseNotFound):
            await client.get(lease_id)


async def test_stats_counts_leases_and_connections(server: RunningServer, protocol: str) -> None:
    async with await server.connect(protocol) as client, await server.connect(protocol):
        before = await client.stats()
        await client.lease(1000, 60_000)
        after = await client.stats()
    assert before.arena_size == TEST_ARENA_SIZE
    assert after.live_leases == before.live_leases + 1
    assert after.granted == before.granted + 1
    assert after.used >= before.used + 1000
    assert after.connections == 2


async def test_every_lease_operation_on_an_unknown_id_raises_lease_not_found(
    server: RunningServer, protocol: str
) -> None:
    missing = unknown_id(protocol)
    async with await server.connect(protocol) as client:
        operations = [
            client.get(missing),
            client.set(missing, b"x"),
            client.read(missing, 0, 1),
            client.write(missing, 0, b"x"),
            client.renew(missing, 1000),
            client.release(missing),
            client.stat(missing),
        ]
        for operation in operations:
            with pytest.raises(LeaseNotFound):
                await operation
        assert (await client.stats()).live_leases == 0  # the connection is still usable


async def test_data_past_the_end_raises_lease_too_small_and_writes_nothing(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(32, 60_000)).lease_id
        with pytest.raises(LeaseTooSmall):
            await client.set(lease_id, b"y" * 33)
        with pytest.raises(LeaseTooSmall):
            await client.write(lease_id, 30, b"zzz")
        with pytest.raises(LeaseTooSmall):
            await client.read(lease_id, 30, 3)
        assert await client.get(lease_id) == bytes(32)


async def test_lease_refusals(server: RunningServer, protocol: str) -> None:
    # native's one refusal form cannot say why, so its client reports every refusal as NoRoom
    too_big: type[LeaseError] = NoRoom if protocol == "native" else BadSize
    bad_ttl: type[LeaseError] = NoRoom if protocol == "native" else BadTtl
    async with await server.connect(protocol) as client:
        with pytest.raises(too_big):
            await client.lease(TEST_ARENA_SIZE + 1, 1000)
        with pytest.raises(bad_ttl):
            await client.lease(10, 0)
        whole = await client.lease(TEST_ARENA_SIZE, 60_000)
        with pytest.raises(NoRoom):
            await client.lease(1, 60_000)
        await client.release(whole.lease_id)
        await client.lease(1, 60_000)


async def test_an_id_the_protocol_cannot_carry_raises_before_sending(
    server: RunningServer, protocol: str
) -> None:
    wrong: LeaseId = 7 if protocol == "uuid" else uuid.uuid4()
    async with await server.connect(protocol) as client:
        with pytest.raises(ProtocolError):
            await client.get(wrong)
        assert (await client.stats()).connections == 1


async def test_pipeline_returns_replies_in_order_without_raising(
    server: RunningServer, protocol: str
) -> None:
    id_kind = IdKind.UUID if protocol == "uuid" else IdKind.INT
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(16, 60_000)).lease_id
        replies = await client.pipeline(
            [
                SetRequest(lease_id, b"0123"),
                GetRequest(lease_id),
                GetRequest(unknown_id(protocol)),
                LeaseRequest(20, 5000, id_kind),
            ]
        )
        assert await client.pipeline([]) == []
    assert [type(r).__name__ for r in replies] == ["Done", "Data", "ErrorReply", "Granted"]
    assert getattr(replies[1], "data", None) == b"0123" + bytes(12)
    assert isinstance(replies[2], ErrorReply) and replies[2].code == memlease.ErrorCode.NOT_FOUND
    granted = replies[3]
    assert isinstance(granted, Granted) and (granted.size, granted.ttl_ms) == (20, 5000)


async def test_tasks_can_share_one_client(server: RunningServer, protocol: str) -> None:
    async with await server.connect(protocol) as client:

        async def roundtrip(n: int) -> None:
            lease_id = (await client.lease(8, 60_000)).lease_id
            await client.set(lease_id, n.to_bytes(8, "big"))
            assert await client.get(lease_id) == n.to_bytes(8, "big")

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(roundtrip, n)


async def test_blocking_client_has_the_same_methods_and_errors(
    server: RunningServer, protocol: str
) -> None:
    def work() -> None:
        with server.client(protocol) as client:
            granted = client.lease(64, 60_000)
            assert (granted.size, granted.ttl_ms) == (64, 60_000)
            lease_id = granted.lease_id
            client.set(lease_id, b"hello")
            assert client.get(lease_id) == b"hello" + bytes(59)
            client.write(lease_id, 60, b"tail")
            assert client.read(lease_id, 58, 6) == b"\0\0tail"
            client.renew(lease_id, 30_000)
            assert client.stat(lease_id).size == 64
            assert client.stats().connections == 1
            replies = client.pipeline([GetRequest(lease_id), GetRequest(unknown_id(protocol))])
            assert isinstance(replies[1], ErrorReply)
            with pytest.raises(LeaseTooSmall):
                client.set(lease_id, bytes(65))
            client.release(lease_id)
            with pytest.raises(LeaseNotFound):
                client.get(lease_id)
            with pytest.raises(NoRoom):
                client.lease(TEST_ARENA_SIZE, 1000)
                client.lease(TEST_ARENA_SIZE, 1000)
        with pytest.raises(ConnectionFailed, match="closed"):
            client.stats()

    await trio.to_thread.run_sync(work)


def test_exports() -> None:
    assert memlease.connect is memlease.client.trio_client.connect
    assert memlease.Client is memlease.client.blocking.Client
    assert memlease.AsyncClient is memlease.client.trio_client.AsyncClient


async def test_connect_refused_raises_connection_failed() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        await memlease.connect(("127.0.0.1", port), "native")
    with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        await trio.to_thread.run_sync(lambda: memlease.Client(f"127.0.0.1:{port}"))


async def test_unknown_protocol_and_bad_address_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'nope'"):
        await memlease.connect("127.0.0.1:1", "nope")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        memlease.Client("localhost")


async def test_no_reply_within_the_timeout_raises_and_closes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    received = []

    async def silent(stream: trio.SocketStream) -> None:
        async for data in stream:
            received.append(data)

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]
    client = await memlease.connect(("127.0.0.1", port), "native", timeout=2.0)
    started = trio.current_time()
    hint = rf"no reply within 2 s \(is the server at 127\.0\.0\.1:{port} speaking native\?\)"
    with pytest.raises(ConnectionFailed, match=hint):
        await client.stats()
    assert trio.current_time() - started == pytest.approx(2.0)
    with pytest.raises(ConnectionFailed, match="unusable"):
        await client.stats()
    assert received


async def test_server_closing_the_connection_raises_connection_failed(
    nursery: trio.Nursery,
) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, hang_up, 0)
    port = listeners[0].socket.getsockname()[1]
    async with await memlease.connect(("127.0.0.1", port), "native") as client:
        with pytest.raises(ConnectionFailed, match="broke"):
            await client.stats()


async def test_bytes_off_protocol_raise_protocol_error(nursery: trio.Nursery) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"\xff" * 64)
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, garbage, 0)
    port = listeners[0].socket.getsockname()[1]
    async with await memlease.connect(("127.0.0.1", port), "native") as client:
        with pytest.raises(ProtocolError):
            await client.stats()
        with pytest.raises(ConnectionFailed, match="unusable"):
            await client.stats()


async def test_clients_on_a_server_with_a_small_arena(start_server: StartServer) -> None:
    server = await start_server("native", arena_size=4096)
    async with await server.connect() as client:
        with pytest.raises(NoRoom):
            await client.lease(999_999, 10)


def test_addresses_parse_as_host_and_port() -> None:
    assert parse_address("127.0.0.1:7411") == ("127.0.0.1", 7411)
    assert parse_address("[::1]:7412") == ("::1", 7412)
    assert parse_address(("example.org", 1)) == ("example.org", 1)
    for bad in ("7411", "host:", ":7411", "host:port"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_address(bad)


async def test_both_clients_take_a_host_port_string(server: RunningServer) -> None:
    host, port = server.address("network")
    async with await memlease.connect(f"{host}:{port}", "network", registry=server.registry) as c:
        assert (await c.stats()).connections == 1

    def blocking() -> int:
        with memlease.Client(f"{host}:{port}", "network", registry=server.registry) as client:
            return client.stats().connections

    assert await trio.to_thread.run_sync(blocking) == 1


async def test_blocking_client_gives_up_after_its_timeout(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async for _ in stream:
            pass

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]

    def work() -> None:
        # a real-time wait, kept to 50 ms: the blocking client has no mock clock
        with memlease.Client(("127.0.0.1", port), "network", timeout=0.05) as client:
            hint = (
                rf"no reply within 0\.05 s \(is the server at 127\.0\.0\.1:{port} speaking network"
            )
            with pytest.raises(ConnectionFailed, match=hint):
                client.stats()
            with pytest.raises(ConnectionFailed, match="unusable"):
                client.stats()

    await trio.to_thread.run_sync(work)
