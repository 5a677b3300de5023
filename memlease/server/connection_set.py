"""The server's open connections: what it keeps of each (its rules and the cancel scope of the
task that drives it), their limits (in all, per client, mid-TLS-handshake), shutdown, and
messages pushed to a connection."""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterator

import trio

from memlease.core.messages import Reply
from memlease.server.connection import Connection, Ending, State

HANDSHAKE_SHARE = 4
"""At most 1/4 of max_connections may be mid-TLS-handshake at once: handshakes that stall
until their timeout, refilled as they are cut, cannot take every slot."""

UNCOUNTED_CLIENTS = frozenset({"", "127.0.0.1", "::1"})
"""Clients no per-client limit applies to: every local client connecting to 127.0.0.1 or
localhost arrives from one of these, so a limit on them would cap all local use at once and
shield no local client from another (other loopback addresses, such as 127.0.0.2, count each
on its own)."""


class Refusal(enum.Enum):
    """Why a new connection is refused."""

    CLOSING = "shutting down"
    FULL = "the max_connections limit"
    CLIENT_FULL = "the max_connections_per_client limit"
    HANDSHAKES = "the share of TLS handshakes (a quarter of max_connections)"
    CLIENT_HANDSHAKES = "one client's share of TLS handshakes (half of all)"


CLOSE_REASONS: dict[Ending | None, str] = {
    None: "client",
    Ending.CLIENT: "client",
    Ending.IDLE: "idle",
    Ending.REQUEST: "request_timeout",
    Ending.SEND: "send_timeout",
    Ending.BAD_INPUT: "bad_input",
    Ending.GUESSING: "limit",
    Ending.SHUTDOWN: "shutdown",
}
"""The ``reason`` label of ``memlease_connections_closed_total`` for a connection's ending."""
CLOSED_ELSE = ("tls_handshake", "internal")
"""The other reasons: a failed TLS handshake, an internal error."""


class OpenConnection:
    """An open connection as the server keeps it: the sans-IO :class:`Connection` and the
    cancel scope its task runs under, whose deadline is never later than ``connection.due``
    (the task re-arms it when it fires early); the client it counts for, and whether its TLS
    handshake is under way."""

    __slots__ = ("client", "connection", "handshaking", "scope")

    def __init__(
        self, connection: Connection, client: str = "", *, handshaking: bool = False
    ) -> None:
        self.connection = connection
        self.scope = trio.CancelScope(deadline=connection.due)
        self.client = client
        self.handshaking = handshaking

    def push(self, message: Reply) -> None:
        """Send ``message`` to the client between replies; at once if it is waiting. If it
        holds too many already, the connection ends (its task is woken to close it)."""
        connection = self.connection
        connection.push(message)
        if connection.state is State.RECEIVING or connection.ending is not None:
            # Wake the task: the wait for bytes (or for the client to take replies) ends,
            # nothing is lost, and it sends first, or closes.
            self.scope.deadline = -math.inf


class ConnectionSet:
    """The open connections, their limits, and the shutdown that closes them once idle.

    Limits, checked by :meth:`refusal` before a connection is added: ``max_connections`` in
    all; ``max_per_client`` from one client (0: none; see UNCOUNTED_CLIENTS); a quarter of
    ``max_connections`` mid-TLS-handshake, at most half of those from one client. A
    handshake counts from :meth:`add` until :meth:`handshake_done` or :meth:`discard`."""

    def __init__(self, max_connections: int, max_per_client: int = 0) -> None:
        self._open: set[OpenConnection] = set()
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.closing = False
        # Once closing: when replies in flight, and messages half received, are given up on.
        self.grace_deadline = math.inf
        self.handshakes = 0
        self.closed_for_guessing = 0
        """Connections closed for asking for too many unknown ids."""
        self.closed: Counter[str] = Counter()
        """Connections closed (or refused on accept: ``limit``, ``shutdown``), by reason
        (CLOSE_REASONS, CLOSED_ELSE): counted once per connection, at its end."""
        # Unparked whenever memory of the connections' budget is given back.
        self.room = trio.lowlevel.ParkingLot()
        self._per_client: dict[str, int] = {}
        self._handshakes_per_client: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[OpenConnection]:
        return iter(list(self._open))

    def full(self) -> bool:
        return len(self._open) >= self.max_connections

    @property
    def max_handshakes(self) -> int:
        """Connections that may be mid-TLS-handshake at once."""
        return max(1, self.max_connections // HANDSHAKE_SHARE)

    def from_client(self, client: str) -> int:
        """Open connections counted for ``client`` (0 for an uncounted one)."""
        return self._per_client.get(client, 0)

    def handshakes_from(self, client: str) -> int:
        """Connections of ``client`` mid-TLS-handshake (0 for an uncounted one)."""
        return self._handshakes_per_client.get(client, 0)

    def refusal(self, client: str, handshake: bool = False) -> Refusal | None:
        """Why a new connection from ``client`` (see memlease.server.accept.client_of) must
        be refused, or None to :meth:`add` it; ``handshake``: it starts with a TLS one."""
        if self.closing:
            return Refusal.CLOSING
        if len(self._open) >= self.max_connections:
            return Refusal.FULL
        counted = self.max_per_client and client not in UNCOUNTED_CLIENTS
        if counted and self._per_client.get(client, 0) >= self.max_per_client:
            return Refusal.CLIENT_FULL
        if handshake:
            share = self.max_handshakes
            if self.handshakes >= share:
                return Refusal.HANDSHAKES
            if counted and self._handshakes_per_client.get(client, 0) >= max(1, share // 2):
                return Refusal.CLIENT_HANDSHAKES
        return None

    def add(self, connection: OpenConnection) -> None:
        self._open.add(connection)
        # Counted even with no per-client limit, so that one set by a reload is exact.
        client = connection.client
        if client in UNCOUNTED_CLIENTS:
            connection.client = ""  # so that discard counts nothing back
        else:
            _count(self._per_client, client, 1)
        if connection.handshaking:
            self.handshakes += 1
            if connection.client:
                _count(self._handshakes_per_client, client, 1)
        if self.closing:
            connection.connection.shut_down(trio.current_time(), self.grace_deadline)
            connection.scope.deadline = connection.connection.wait_until

    def handshake_done(self, connection: OpenConnection) -> None:
        """``connection``'s TLS handshake is over (called by its task when it ended well, by
        :meth:`discard` otherwise): it no longer counts as one. Once only."""
        if connection.handshaking:
            connection.handshaking = False
            self.handshakes -= 1
            if connection.client:
                _count(self._handshakes_per_client, connection.client, -1)

    def discard(self, connection: OpenConnection) -> None:
        if connection not in self._open:
            return
        self._open.remove(connection)
        if connection.handshaking:
            self.handshake_done(connection)
        if connection.client:
            _count(self._per_client, connection.client, -1)

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


def _count(counts: dict[str, int], client: str, step: int) -> None:
    left = counts.get(client, 0) + step
    if left > 0:
        counts[client] = left
    else:
        counts.pop(client, None)


class MissLedger:
    """Requests for unknown ids per client, over windows of a second: a client that guesses
    ids cannot get past the limit by opening connection after connection. Clients that
    missed nothing in the last second are forgotten."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # client -> (when its window began, misses in it)
        self._windows: dict[str, tuple[float, int]] = {}
        self._forgot_at = -math.inf

    def missed(self, client: str, now: float, added: int = 1) -> bool:
        """Count ``added`` misses of ``client`` at ``now``; whether it has made too many. A client
        that per-client limits do not count (UNCOUNTED_CLIENTS) is never too many here: its
        connections are each limited on their own."""
        if client in UNCOUNTED_CLIENTS:
            return False
        since, count = self._windows.get(client, (now, 0))
        if now - since >= 1.0:
            since, count = now, 0
        self._windows[client] = (since, count + added)
        # At most once a second: with more clients than that missing within a second, a
        # forget on every miss would walk them all each time.
        if len(self._windows) > _FORGET_AT and now - self._forgot_at >= 1.0:
            self._forgot_at = now
            self._windows = {c: w for c, w in self._windows.items() if now - w[0] < 1.0}
        return bool(self.limit) and count + added > self.limit

    def __len__(self) -> int:
        return len(self._windows)


_FORGET_AT = 4096
"""Clients remembered before those with no miss in the last second are dropped."""
