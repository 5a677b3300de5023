"""The server's open connections: what it keeps of each (its rules and the cancel scope of the
task that drives it), their limit, shutdown, and messages pushed to a connection."""

from __future__ import annotations

import math
from collections.abc import Iterator

import trio

from memlease.core.messages import Reply
from memlease.server.connection import Connection, State


class OpenConnection:
    """An open connection as the server keeps it: the sans-IO :class:`Connection` and the
    cancel scope its task runs under, whose deadline is never later than ``connection.due``
    (the task re-arms it when it fires early)."""

    __slots__ = ("connection", "scope")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.scope = trio.CancelScope(deadline=connection.due)

    def push(self, message: Reply) -> None:
        """Send ``message`` to the client between replies; at once if it is waiting."""
        self.connection.push(message)
        if self.connection.state is State.RECEIVING:
            # Wake the task: the wait for bytes ends, nothing is lost, and it sends first.
            self.scope.deadline = -math.inf


class ConnectionSet:
    """The open connections, their limit, and the shutdown that closes them once idle."""

    def __init__(self, max_connections: int) -> None:
        self._open: set[OpenConnection] = set()
        self.max_connections = max_connections
        self.closing = False
        # Once closing: when replies in flight, and messages half received, are given up on.
        self.grace_deadline = math.inf

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[OpenConnection]:
        return iter(list(self._open))

    def full(self) -> bool:
        return len(self._open) >= self.max_connections

    def add(self, connection: OpenConnection) -> None:
        self._open.add(connection)
        if self.closing:
            connection.connection.shut_down(trio.current_time(), self.grace_deadline)
            connection.scope.deadline = connection.connection.wait_until

    def discard(self, connection: OpenConnection) -> None:
        self._open.discard(connection)

    def shut_down(self, grace: float) -> None:
        """Close every connection once it has served what it already received (waiting
        a short drain for bytes already on their way) and sent its replies; a connection
        still sending or receiving a message after ``grace`` seconds is cut off."""
        now = trio.current_time()
        self.closing = True
        self.grace_deadline = now + grace
        for entry in self._open:
            entry.connection.shut_down(now, self.grace_deadline)
            entry.scope.deadline = entry.connection.wait_until
