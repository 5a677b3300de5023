"""The server's limits, bad input, logging and shutdown, over real loopback sockets.

Timeout tests run on trio's MockClock with autojump (the ``autojump_clock`` fixture): time
moves only when every task waits, so a 10 s limit takes no real time and is measured exactly.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer, make_config

import memlease
from memlease import BadSize, ConnectionFailed, LeaseNotFound
from memlease.client.trio_client import connect
from memlease.core.errors import ErrorCode
from memlease.core.messages import ErrorReply, GetRequest, Reply, SetRequest, StatsRequest
from memlease.protocol import ProtocolRegistry
from memlease.server.config import Config
from memlease.server.config_values import Listener
from memlease.server.run import BoundListener, serve

Caplog = pytest.LogCaptureFixture


async def _receive_until_eof(stream: trio.SocketStream) -> bytes:
    received = b""
    while chunk := await stream.receive_some():
        received += chunk
    return received


def _decode_replies(
    server: RunningServer, protocol: str, data: bytes, sent: int = 1
) -> list[Reply]:
    codec = server.registry.get(protocol).client_codec(server.config.max_message)
    # native pairs each reply with a request its client sent: pretend to have sent ``sent``
    for _ in range(sent):
        codec.encode_request(StatsRequest())
    codec.feed(data)
    replies = []
    while (reply := codec.next_reply()) is not None:
        replies.append(reply)
    return replies


async def _open_count(server: RunningServer, expected: int) -> None:
    """Wait (in virtual time) until the server counts ``expected`` open connections, this
    probe's own included."""
    async with await server.connect("native") as probe:
        for _ in range(100):
            if (await probe.stats()).connections == expected:
                return
            await trio.sleep(0.01)
    raise AssertionError(f"the server never reached {expected} open connections")


async def test_startup_is_logged_per_listener_and_for_the_arena_and_build(
    start_server: StartServer, caplog: Caplog
) -> None:
    caplog.set_level(logging.INFO, logger="memlease")
    server = await start_server("native", "network", arena_size=8192)
    messages = [record.getMessage() for record in caplog.records]
    build = "compiled with mypyc" if os.environ.get("MEMLEASE_MYPYC") == "1" else "interpreted"
    assert f"memlease {memlease.__version__} ({build})" in messages
    assert any("arena: 8192 bytes" in m for m in messages), messages
    for bound in server.listeners:
        assert f"listening: {bound.protocol} on 127.0.0.1:{bound.port}" in messages


async def test_startup_log_gives_the_largest_lease_actually_granted(
    start_server: StartServer, caplog: Caplog
) -> None:
    caplog.set_level(logging.INFO, logger="memlease")
    server = await start_server("network", arena_size=3 * 1024 * 1024)
    messages = [record.getMessage() for record in caplog.records]
    assert any("largest lease 2097152 B" in m for m in messages), messages
    async with await server.connect("network") as client:
        await client.lease(2 * 1024 * 1024, 1000)
        with pytest.raises(BadSize):
            await client.lease(2 * 1024 * 1024 + 1, 1000)


async def test_a_taken_port_raises_os_error_naming_the_listener(
    registry: ProtocolRegistry,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Config(host="127.0.0.1", listeners=(Listener("network", port),), arena_size=4096)
        with pytest.raises(OSError, match=f"cannot listen for network on 127.0.0.1:{port}"):
            await serve(config, registry=registry, handle_signals=False)


async def test_many_messages_on_one_connection_and_one_connection_per_message(
    server: RunningServer, protocol: str
) -> None:
    async with await server.connect(protocol) as client:
        lease_id = (await client.lease(10, 60_000)).lease_id
        for n in range(20):
            await client.set(lease_id, bytes([n]))
    for n in range(5):
        async with await server.connect(protocol) as client:
            await client.set(lease_id, bytes([n]))
            assert (await client.get(lease_id))[0] == n


async def test_beyond_max_connections_new_ones_are_closed_and_logged(
    start_server: StartServer, caplog: Caplog, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("native", max_connections=2)
    first = await server.connect()
    second = await server.connect()
    assert (await second.stats()).connections == 2
    refused = await server.connect()
    with pytest.raises(ConnectionFailed):
        await refused.stats()
    assert (await first.stats()).connections == 2
    assert (await second.stats()).connections == 2
    assert any(
        "connection refused" in r.getMessage() and "127.0.0.1:" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO
    )
    await first.aclose()
    await _open_count(server, 2)  # room again once one closed
    await second.aclose()


async def test_connections_arriving_together_still_count_against_max_connections(
    start_server: StartServer,
) -> None:
    # All of them wait in the backlog when the server next looks: one wakeup accepts them
    # in a row, and each must count before the next one is checked against the limit.
    server = await start_server("native", max_connections=2)
    codec = server.registry.get("native").client_codec(server.config.max_message)
    stats = codec.encode_request(StatsRequest())
    socks = [socket.create_connection(server.address("native")) for _ in range(10)]
    try:
        for sock in socks:
            sock.sendall(stats)  # blocking calls: the server has not run yet
        served = 0
        for sock in socks:
            sock.setblocking(False)
            with trio.move_on_after(2):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        data = sock.recv(4096)
                    except OSError:  # reset: refused
                        break
                    if not data:  # closed: refused
                        break
                    reply_codec = server.registry.get("native").client_codec(1 << 20)
                    reply_codec.encode_request(StatsRequest())
                    reply_codec.feed(data)
                    reply = reply_codec.next_reply()
                    assert reply is not None and reply.connections <= 2  # type: ignore[union-attr]
                    served += 1
                    break
        assert served == 2
    finally:
        for sock in socks:
            sock.close()


async def test_bad_input_gets_an_error_reply_then_the_connection_closes(
    server: RunningServer, protocol: str, caplog: Caplog
) -> None:
    codec = server.registry.get(protocol).client_codec(server.config.max_message)
    good = codec.encode_request(StatsRequest())
    async with await server.open_socket(protocol) as stream:
        await stream.send_all(good + b"\xff" * 16)
        received = await _receive_until_eof(stream)
    replies = _decode_replies(server, protocol, received, sent=2)
    assert [type(r).__name__ for r in replies] == ["ServerStats", "ErrorReply"]
    error = replies[1]
    assert isinstance(error, ErrorReply) and error.code is ErrorCode.BAD_REQUEST
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("bad" in m and "127.0.0.1:" in m for m in warnings), warnings
    async with await server.connect(protocol) as other:
        assert (await other.stats()).connections == 1


async def test_a_message_above_max_message_is_refused_on_its_header(
    start_server: StartServer, protocol: str
) -> None:
    server = await start_server(protocol, max_message=4096)
    big = SetRequest(uuid_or_int(protocol), bytes(5000))
    frame = server.registry.get(protocol).client_codec(10**6).encode_request(big)
    async with await server.open_socket(protocol) as stream:
        await stream.send_all(frame[:40])  # the header and no more: nothing to wait for
        received = await _receive_until_eof(stream)
    (error,) = _decode_replies(server, protocol, received)
    assert isinstance(error, ErrorReply) and error.code is ErrorCode.BAD_REQUEST
    assert "4096" in error.message


def uuid_or_int(protocol: str) -> Any:
    import uuid

    return uuid.uuid4() if protocol == "uuid" else 1


async def test_a_message_slower_than_the_request_timeout_is_cut_off(
    start_server: StartServer, autojump_clock: trio.testing.MockClock, caplog: Caplog
) -> None:
    server = await start_server("native", request_timeout=2.5, idle_timeout=60.0)
    frame = server.registry.get("native").client_codec(4096).encode_request(StatsRequest())
    async with await server.open_socket("native") as stream:
        started = trio.current_time()
        # a byte a second keeps the connection busy but never finishes the message
        for byte in frame[:-1]:
            await stream.send_all(bytes([byte]))
            with trio.move_on_after(1.0):
                assert await stream.receive_some() == b""
                break
        assert trio.current_time() - started == pytest.approx(2.5)
    assert any("took over 2.5s to arrive" in r.getMessage() for r in caplog.records)


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server("network", request_timeout=2.0, idle_timeout=30.0)
    async with await server.connect("network") as client:
        await client.stats()
        await trio.sleep(29.9)
        await client.stats()
        await trio.sleep(30.1)
        with pytest.raises(ConnectionFailed):
            await client.stats()
    async with await server.open_socket("network") as stream:
        started = trio.current_time()
        assert await stream.receive_some() == b""
        assert trio.current_time() - started == pytest.approx(30.0)


async def test_a_client_that_never_reads_is_cut_off_and_stalls_nobody(
    start_server: StartServer, autojump_clock: trio.testing.MockClock, caplog: Caplog
) -> None:
    server = await start_server("native", request_timeout=5.0, arena_size=1 << 20)
    async with await server.connect() as other:
        lease_id = (await other.lease(1 << 19, 600_000)).lease_id
        codec = server.registry.get("native").client_codec(1 << 21)
        flood = b"".join(codec.encode_request(GetRequest(lease_id)) for _ in range(64))
        async with await server.open_socket("native") as reader_that_never_reads:
            await reader_that_never_reads.send_all(flood)
            # Cut 5 s after the server's send stalled: open (and the other client answered)
            # at 4.75 s, gone at 5.05 s. One look before the cut, not a look every 0.1 s:
            # each look is a round trip in real time, in which a loaded machine's kernel may
            # still move loopback bytes to the reader's buffer, which the server rightly
            # counts as the client taking some (test_connection pins that rule exactly).
            await trio.sleep(4.75)
            assert (await other.stats()).connections == 2, "cut before the bound"
            await trio.sleep(0.3)
            assert (await other.stats()).connections == 1, "not cut at the bound"
    assert any("to take its replies" in r.getMessage() for r in caplog.records)


async def test_a_signal_stops_accepting_and_returns_at_once_when_idle(
    registry: ProtocolRegistry,
) -> None:
    config = make_config("native", "network", arena_size=4096)
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[list[BoundListener]]) -> None:
        await serve(config, registry=registry, task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(run)
        port = listeners[0].port
        async with await connect(("127.0.0.1", port), registry=registry) as idle:
            await idle.stats()
            os.kill(os.getpid(), signal.SIGTERM)
            with trio.fail_after(1):
                await stopped.wait()
            with pytest.raises(ConnectionFailed):
                await idle.stats()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_replies_in_flight_are_sent_before_shutdown(registry: ProtocolRegistry) -> None:
    config = make_config("native", arena_size=1 << 20)
    size, count = 1 << 19, 40
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve, config, registry=registry))
        async with await connect(("127.0.0.1", listeners[0].port), registry=registry) as owner:
            lease_id = (await owner.lease(size, 60_000)).lease_id
            await owner.set(lease_id, b"first bytes")
        client = await trio.open_tcp_stream("127.0.0.1", listeners[0].port)
        codec = registry.get("native").client_codec(1 << 21)
        await client.send_all(
            b"".join([codec.encode_request(GetRequest(lease_id)) for _ in range(count)])
        )
        # The first bytes back mean the server is writing the batch's 20 MiB of replies, far
        # more than the socket buffers hold: the signal arrives with replies in flight.
        received = bytearray(await client.receive_some())
        os.kill(os.getpid(), signal.SIGINT)
        with trio.fail_after(5):
            while chunk := await client.receive_some(1 << 20):
                received += chunk
    codec.feed(bytes(received))
    replies = [codec.next_reply() for _ in range(count)]
    assert all(getattr(r, "data", b"")[:11] == b"first bytes" for r in replies)


def test_run_exits_0_on_sigterm() -> None:
    script = (
        "import sys; from memlease.server.config import Config;"
        "from memlease.server.config_values import Listener;"
        "from memlease.server.run import run;"
        "sys.exit(run(Config(listeners=(Listener('native', 0),), arena_size=4096)))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "listening: native" in line:
            break
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    assert "SIGTERM received" in process.stderr.read()


async def test_refused_requests_are_logged_with_the_peer(
    server: RunningServer, caplog: Caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="memlease")
    async with await server.connect("network") as client:
        with pytest.raises(LeaseNotFound):
            await client.get(4242)
        with pytest.raises(BadSize):
            await client.lease(1 << 40, 1000)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2 and refusals[0].getMessage().startswith("127.0.0.1:"), refusals
    miss, bad_size = refusals
    # A miss is at DEBUG: a client with stale ids, or a guessing one, makes many.
    assert "get refused (NOT_FOUND)" in miss.getMessage() and "4242" in miss.getMessage()
    assert miss.levelno == logging.DEBUG
    assert "lease refused (BAD_SIZE)" in bad_size.getMessage()
    assert bad_size.levelno == logging.INFO


async def test_connections_opening_and_closing_are_logged_at_debug(
    server: RunningServer, caplog: Caplog, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.DEBUG, logger="memlease")
    async with await server.connect("uuid") as client:
        await client.stats()
    await _open_count(server, 1)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("uuid connection opened" in m for m in debug), debug
    assert any("connection closed: closed by the client" in m for m in debug), debug
