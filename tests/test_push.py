"""A message pushed to a connection (as expiry notices will be) reaches the client between
replies, intact, and at once when the connection is waiting for a request: the task that
drives the connection is woken for it, and loses no byte of what it was waiting for."""

from __future__ import annotations

import socket

import trio
import trio.testing

from memlease.core.messages import Done, GetRequest, Granted, LeaseRequest, Op, Reply, Request
from memlease.core.service import Service
from memlease.protocol import DEFAULT_MAX_MESSAGE, ProtocolRegistry
from memlease.server.connection import Connection, Ending, Limits
from memlease.server.connection_set import OpenConnection
from memlease.server.connection_task import drive
from memlease.server.socket_io import SocketIO

NOTICE = Done(Op.RELEASE, 4242)


class _Client:
    def __init__(self, registry: ProtocolRegistry, sock: socket.socket) -> None:
        self.codec = registry.get("network").client_codec(DEFAULT_MAX_MESSAGE)
        self.sock = sock

    def send(self, *requests: Request) -> None:
        self.sock.sendall(b"".join(self.codec.encode_request(r) for r in requests))

    def replies(self) -> list[Reply]:
        try:
            self.codec.feed(self.sock.recv(1 << 20))
        except BlockingIOError:
            return []
        found = []
        while (reply := self.codec.next_reply()) is not None:
            found.append(reply)
        return found


async def test_a_push_wakes_a_waiting_connection_and_the_next_request_is_served(
    registry: ProtocolRegistry,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    service = Service.create(1 << 20)
    limits = Limits(DEFAULT_MAX_MESSAGE, request_timeout=10.0, idle_timeout=60.0)
    codec = registry.get("network").server_codec(DEFAULT_MAX_MESSAGE)
    connection = Connection(
        codec, service, limits, trio.current_time(), peer="p", protocol="network"
    )
    entry = OpenConnection(connection)
    client = _Client(registry, theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive, SocketIO(ours, bytearray(65536)), entry, lambda: None)
        await trio.testing.wait_all_tasks_blocked()
        lease = LeaseRequest(32, 10_000)
        client.send(lease, lease)  # two pipelined requests
        await trio.testing.wait_all_tasks_blocked()
        granted = client.replies()
        assert [type(r) for r in granted] == [Granted, Granted]

        entry.push(NOTICE)  # the connection is waiting: it must send at once
        await trio.testing.wait_all_tasks_blocked()
        assert client.replies() == [NOTICE]

        lease_id = granted[0].lease_id  # type: ignore[union-attr]
        client.send(GetRequest(lease_id))  # and it still serves, under a new scope
        await trio.testing.wait_all_tasks_blocked()
        (data,) = client.replies()
        assert data.data == bytes(32)  # type: ignore[union-attr]
        theirs.close()
    assert connection.ending is Ending.CLIENT
    ours.close()
