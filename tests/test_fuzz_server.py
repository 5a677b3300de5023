"""Hypothesis fuzzing of raw byte streams against a live server.

The server runs in a thread of its own (its own trio run) for the whole module, so that each
hypothesis example is a plain blocking connection: send the bytes in the drawn chunks, close
the sending side, and the server must end the connection promptly (an error reply or not),
while a guard client's lease, held across every example, stays served and intact.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import pytest
import trio
from conftest import PROTOCOLS, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memlease.client.blocking import Client
from memlease.core.messages import GetRequest, IdKind, LeaseRequest, Request, StatsRequest
from memlease.protocol import ProtocolRegistry
from memlease.server.run import BoundListener, serve

EXAMPLES = 100
GUARDED = b"guarded bytes " * 8


@dataclass
class LiveServer:
    ports: dict[str, int]
    registry: ProtocolRegistry
    guards: dict[str, tuple[Client, object]]


@pytest.fixture(scope="module")
def live_server(registry: ProtocolRegistry) -> Iterator[LiveServer]:
    config = make_config(*PROTOCOLS, request_timeout=5.0)
    ready: queue.Queue[tuple[list[BoundListener], trio.lowlevel.TrioToken, trio.CancelScope]]
    ready = queue.Queue()

    async def main() -> None:
        with trio.CancelScope() as scope:
            run = partial(serve, config, registry=registry, handle_signals=False)
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(run)
                ready.put((listeners, trio.lowlevel.current_trio_token(), scope))

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    listeners, token, scope = ready.get(timeout=10)
    ports = {bound.protocol: bound.port for bound in listeners}
    guards = {}
    for protocol in PROTOCOLS:
        client = Client(("127.0.0.1", ports[protocol]), protocol, registry=registry, timeout=5)
        lease_id = client.lease(len(GUARDED), 3_600_000).lease_id
        client.set(lease_id, GUARDED)
        guards[protocol] = (client, lease_id)
    try:
        yield LiveServer(ports, registry, guards)
    finally:
        for client, _ in guards.values():
            client.close()
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=10)


def _frames(protocol: str, registry: ProtocolRegistry) -> st.SearchStrategy[bytes]:
    """Whole valid requests, so that fuzzed streams reach past the first header."""
    kind = IdKind.UUID if protocol == "uuid" else IdKind.INT
    ids = st.uuids(version=4) if protocol == "uuid" else st.integers(1, 2**31 - 1)
    requests: st.SearchStrategy[Request] = st.one_of(
        st.just(StatsRequest()),
        st.builds(GetRequest, ids),
        st.builds(LeaseRequest, st.integers(1, 1024), st.integers(1, 5000), st.just(kind)),
    )

    def encode(request: Request) -> bytes:
        return registry.get(protocol).client_codec(1 << 20).encode_request(request)

    return requests.map(encode)


def _headers(protocol: str) -> st.SearchStrategy[bytes]:
    """Headers with any type and length: where decoders make their decisions."""
    if protocol == "native":
        return st.builds(
            lambda kind, length: struct.pack("<iq", kind, length),
            st.integers(-(2**31), 2**31 - 1) | st.integers(0, 12),
            st.integers(-(2**63), 2**63 - 1) | st.integers(0, 64),
        )
    return st.builds(
        lambda version, kind, flags, length: struct.pack(">BBHI", version, kind, flags, length),
        st.integers(0, 255) | st.just(1),
        st.integers(0, 255) | st.integers(1, 9),
        st.integers(0, 0xFFFF) | st.just(0),
        st.integers(0, 2**32 - 1) | st.integers(0, 64),
    )


def _streams(protocol: str, registry: ProtocolRegistry) -> st.SearchStrategy[list[bytes]]:
    piece = st.one_of(st.binary(max_size=64), _frames(protocol, registry), _headers(protocol))
    return st.lists(piece, min_size=1, max_size=8)


def _exchange(port: int, chunks: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except TimeoutError:
            raise AssertionError(f"the server left a connection hanging: {chunks!r}") from None
        except OSError:
            pass  # the server closed on bad bytes before reading them all (EPIPE, ENOTCONN...)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_any_byte_stream_costs_the_sender_its_connection_at_most(
    live_server: LiveServer, protocol: str, registry: ProtocolRegistry
) -> None:
    client, lease_id = live_server.guards[protocol]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(chunks=_streams(protocol, registry))
    def attack(chunks: list[bytes]) -> None:
        _exchange(live_server.ports[protocol], chunks)
        assert client.get(lease_id) == GUARDED  # type: ignore[arg-type]

    attack()
    _wait_for_connections(client, len(live_server.guards))


def _wait_for_connections(client: Client, expected: int) -> None:
    """Every fuzzing connection was closed by the server (each exchange read to its end), so
    only the guard clients remain; the server may still be counting a close, so poll (real
    time: the server runs in its own thread), for at most 5 s."""
    deadline = time.monotonic() + 5.0
    while (connections := client.stats().connections) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{connections} connections open, {expected} expected")
        time.sleep(0.01)
