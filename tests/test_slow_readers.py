"""The send bound counts from the last write the client took (as nginx's send_timeout does):
a client that reads a large reply slowly but steadily gets all of it, one that stops reading
is cut a request timeout after it last took some."""

from __future__ import annotations

import pytest
import trio
from conftest import StartServer
from trio.testing import MockClock

from memlease.core.messages import Data, GetRequest

REQUEST_TIMEOUT = 2.0
VALUE = 8 << 20  # far more than the socket buffers hold
PIECE = 64 << 10


async def _ask_for_a_large_get(start_server: StartServer) -> tuple[trio.SocketStream, object]:
    server = await start_server(
        "network", arena_size=16 << 20, request_timeout=REQUEST_TIMEOUT, idle_timeout=60.0
    )
    async with await server.connect("network") as client:
        granted = await client.lease(VALUE, 600_000)
        await client.set(granted.lease_id, b"\x07" * VALUE)
    codec = server.registry.get("network").client_codec(server.config.max_message)
    stream = await server.open_socket("network")
    await stream.send_all(codec.encode_request(GetRequest(granted.lease_id)))
    return stream, codec


async def test_a_slow_steady_reader_gets_the_whole_reply(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    stream, codec = await _ask_for_a_large_get(start_server)
    started = trio.current_time()
    async with stream:
        while (reply := codec.next_reply()) is None:  # type: ignore[attr-defined]
            await trio.sleep(REQUEST_TIMEOUT / 2)  # slower than the bound allows for the whole
            data = await stream.receive_some(PIECE)
            assert data, f"cut off after {trio.current_time() - started:.1f} s"
            codec.feed(data)  # type: ignore[attr-defined]
    assert isinstance(reply, Data) and reply.data == b"\x07" * VALUE
    assert trio.current_time() - started > 10 * REQUEST_TIMEOUT  # it really was slow


async def test_a_reader_that_stops_is_cut_a_request_timeout_after_its_last_read(
    start_server: StartServer, autojump_clock: MockClock
) -> None:
    stream, _ = await _ask_for_a_large_get(start_server)
    async with stream:
        for _ in range(20):  # a little, slowly: well past one request timeout in all
            await trio.sleep(REQUEST_TIMEOUT / 2)
            assert await stream.receive_some(PIECE)
        stopped = trio.current_time()
        await trio.sleep(REQUEST_TIMEOUT * 3)  # then nothing
        with trio.fail_after(1):
            try:
                while await stream.receive_some(1 << 20):  # what the kernel still held
                    pass
            except trio.BrokenResourceError:
                pass
    # Cut: the rest of the 8 MiB never came. The bound ran from the server's last write,
    # which was no later than the last read made room for it.
    assert trio.current_time() - stopped == pytest.approx(REQUEST_TIMEOUT * 3, abs=0.01)
