"""The server's open connections: what it keeps of each (enough to close it), their limit,
and the shutdown that closes them once each has served what it received."""

from __future__ import annotations

import math
from typing import Protocol

import trio


class CountsConnections(Protocol):
    connections: int


SHUTDOWN_DRAIN = 0.1
"""Seconds a connection waiting for a request still has once shutdown begins, so that a
request already sent (or readable in the same instant as the signal) is served, not dropped."""


class Connection:
    """What the server keeps of an open connection: enough to close it on shutdown."""

    __slots__ = ("due", "partial", "peer", "receiving", "scope", "sending")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.scope = trio.CancelScope()
        # When its current time limit ends. While it waits for bytes, the scope's deadline
        # may be earlier: moving a deadline later costs more than a small request (exchange).
        self.due = math.inf
        self.receiving = False
        self.sending = False
        # Part of a message is in: shutdown then gives it the grace, not the short drain.
        self.partial = False


class ConnectionSet:
    """The open connections, their limit, and the shutdown that closes them once idle."""

    def __init__(self, service: CountsConnections, max_connections: int) -> None:
        self._service = service
        self._open: set[Connection] = set()
        self.max_connections = max_connections
        self.closing = False
        # Once closing: when replies in flight, and messages half received, are given up on.
        self.grace_deadline = math.inf

    def __len__(self) -> int:
        return len(self._open)

    def full(self) -> bool:
        return len(self._open) >= self.max_connections

    def add(self, connection: Connection) -> None:
        self._open.add(connection)
        self._service.connections = len(self._open)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)
        self._service.connections = len(self._open)

    def shut_down(self, grace: float) -> None:
        """Close every connection once it has served what it already received (waiting
        :data:`SHUTDOWN_DRAIN` for bytes already on their way) and sent its replies; a
        connection still sending or receiving a message after ``grace`` seconds is cut off."""
        now = trio.current_time()
        self.closing = True
        self.grace_deadline = now + grace
        for connection in self._open:
            scope = connection.scope
            waiting = connection.receiving and not connection.partial
            limit = now + SHUTDOWN_DRAIN if waiting else self.grace_deadline
            scope.deadline = connection.due = min(connection.due, limit)
