"""Every protocol gets the same time limits, built-in or third-party: the limits rest only on
what the codec interface requires (``buffered()``), never on a codec's optional speed-ups.

A message begun right after a whole one, then silence, is cut at the request timeout; a
whole message then silence, at the idle timeout. ``minimal`` is a codec that gives only the
four required methods (over the native format), ``demo`` the third-party line protocol."""

from __future__ import annotations

import dataclasses

import pytest
import trio
from conftest import StartServer
from trio.testing import MockClock

from memlease.core.messages import IdKind, LeaseRequest, Request
from memlease.protocol import (
    ProtocolEntry,
    ProtocolRegistry,
    ServerCodec,
    load_protocols,
)

REQUEST_TIMEOUT = 2.0
IDLE_TIMEOUT = 30.0


class MinimalServerCodec(ServerCodec):
    """Only what a codec must give: feed, next_request, encode_reply, buffered."""

    def __init__(self, max_message: int) -> None:
        self._inner = load_protocols(warn=False).get("native").server_codec(max_message)

    def feed(self, data: bytes) -> None:
        self._inner.feed(data)

    def next_request(self) -> Request | None:
        return self._inner.next_request()

    def encode_reply(self, reply: object) -> bytes:
        return self._inner.encode_reply(reply)  # type: ignore[arg-type]

    def buffered(self) -> int:
        return self._inner.buffered()


def _with_minimal(registry: ProtocolRegistry) -> ProtocolRegistry:
    native = registry.get("native")
    minimal = dataclasses.replace(native, name="minimal", server_codec=MinimalServerCodec)
    protocols = dict(registry.protocols, minimal=ProtocolEntry(minimal, "tests"))
    return ProtocolRegistry(protocols=protocols)


ALL = ["native", "network", "uuid", "demo", "minimal"]


async def _closed_after(
    start_server: StartServer, registry: ProtocolRegistry, protocol: str, tail: int
) -> float:
    """Seconds from sending one whole lease request and ``tail`` bytes of the next, then
    nothing, to the server closing the connection."""
    plugins = _with_minimal(registry)
    server = await start_server(
        protocol,
        protocols_from=plugins,
        request_timeout=REQUEST_TIMEOUT,
        idle_timeout=IDLE_TIMEOUT,
    )
    spec = plugins.get(protocol)
    kind = IdKind.UUID if spec.id_kind is IdKind.UUID else IdKind.INT
    frame = spec.client_codec(4096).encode_request(LeaseRequest(16, 5000, kind))
    async with await server.open_socket(protocol) as sock:
        await sock.send_all(frame + frame[:tail])
        sent = trio.current_time()
        with trio.fail_after(IDLE_TIMEOUT * 2):
            try:
                while await sock.receive_some():
                    pass
            except trio.BrokenResourceError:
                pass
        return trio.current_time() - sent


@pytest.mark.parametrize("protocol", ALL)
async def test_a_message_begun_after_a_whole_one_gets_the_request_timeout(
    start_server: StartServer, registry: ProtocolRegistry, autojump_clock: MockClock, protocol: str
) -> None:
    closed = await _closed_after(start_server, registry, protocol, tail=3)
    assert closed == pytest.approx(REQUEST_TIMEOUT)


@pytest.mark.parametrize("protocol", ALL)
async def test_a_whole_message_then_silence_gets_the_idle_timeout(
    start_server: StartServer, registry: ProtocolRegistry, autojump_clock: MockClock, protocol: str
) -> None:
    closed = await _closed_after(start_server, registry, protocol, tail=0)
    assert closed == pytest.approx(IDLE_TIMEOUT)
