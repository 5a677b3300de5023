"""Clients that ask for large replies and never read them cannot make the server hold more
than limits.connection_memory: past it, a large reply is refused with SERVER_BUSY, and the
memory comes back when the client that held it goes."""

from __future__ import annotations

import socket

import pytest
import trio
from conftest import StartServer

from memlease import ServerBusy
from memlease.core.messages import GetRequest
from memlease.server.budget import RECEIVE_ROOM
from memlease.server.connection import ANSWER_ROOM

VALUE = 16 << 20
MAX_MESSAGE = 20 << 20
CONNECTIONS = 16
# The least the server allows: room for one 16 MiB reply left unsent, not for two.
BUDGET = MAX_MESSAGE + ANSWER_ROOM + CONNECTIONS * RECEIVE_ROOM


def _non_reader(address: tuple[str, int], wire: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes almost nothing
    sock.connect(address)
    sock.sendall(wire)
    return sock


async def test_replies_nobody_reads_stay_within_the_budget(start_server: StartServer) -> None:
    server = await start_server(
        "network",
        arena_size=64 << 20,
        max_message=MAX_MESSAGE,
        max_connections=CONNECTIONS,
        connection_memory=BUDGET,
    )
    async with await server.connect("network") as client:
        lease_id = (await client.lease(VALUE, 600_000)).lease_id
        await client.set(lease_id, b"\x05" * VALUE)
        wire = (
            server.registry.get("network")
            .client_codec(MAX_MESSAGE)
            .encode_request(GetRequest(lease_id))
        )
        holder = await trio.to_thread.run_sync(_non_reader, server.address("network"), wire)
        await trio.sleep(0.2)  # its reply is being sent, and held
        with pytest.raises(ServerBusy, match=r"limits\.connection_memory"):
            await client.get(lease_id)
        others = [
            await trio.to_thread.run_sync(_non_reader, server.address("network"), wire)
            for _ in range(3)
        ]
        with pytest.raises(ServerBusy):
            await client.get(lease_id)
        holder.close()  # the memory it held comes back
        for sock in others:
            sock.close()
        with trio.fail_after(5):
            while True:
                try:
                    assert await client.get(lease_id) == b"\x05" * VALUE
                    break
                except ServerBusy:
                    await trio.sleep(0.05)
