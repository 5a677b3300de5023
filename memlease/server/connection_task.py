"""The task that drives one client connection, from accept to close: a TLS handshake first on
a TLS listener, then bytes between the socket and the connection's rules (the sans-IO
:class:`~memlease.server.connection.Connection`, which holds every rule), and a close that a
peer which never reads cannot hold up. Never raises for the peer's doing.

The connection's cancel scope enforces its limits. While the task waits for bytes, the
scope's deadline is only ever moved earlier, never later (moving a trio deadline cost about a
third of a small request's time): when it fires before the limit, the task goes on under a
new scope, waiting again, or answering the bytes that came in the same scheduler pass as the
early deadline (trio cancels the scope all the same). A blocked send's deadline is exact.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable

import trio
from trio.lowlevel import ParkingLot

from memlease.client.connecting import RECEIVE_SIZE
from memlease.server.accept import close_socket
from memlease.server.connection import Connection, Ending, Limits, log_ending
from memlease.server.connection_set import CLOSE_REASONS, ConnectionSet, OpenConnection
from memlease.server.logs import PEER
from memlease.server.socket_io import Bytes, SocketIO, StreamIO

log = logging.getLogger("memlease")

SCRATCH_SIZE = 64 * 1024
"""The receive buffer the server's connections share. 256 KiB was measured slower than 64 KiB
for 512 KiB values (bench large-values), so it stays the clients' receive size."""

CLOSE_TIMEOUT = 1.0
"""Seconds to say goodbye on a TLS connection (close_notify) before dropping it anyway: a peer
that never reads must not hold a task."""


async def serve_connection(
    sock: socket.socket,
    entry: OpenConnection,
    tls: ssl.SSLContext | None = None,
    *,
    limits: Limits,
    connections: ConnectionSet,
    after_batch: Callable[[], None],
    scratch: bytearray | None = None,
) -> None:
    """Serve one accepted connection (a non-blocking socket, which this closes) until the
    peer closes it, a limit cuts it off, it sends bytes that do not follow the protocol, or
    the server shuts down. With ``tls``, first a TLS handshake as the server, bounded by the
    handshake timeout. Never raises for the peer's doing.

    ``entry`` is already counted in ``connections`` (by whoever accepted the socket, so
    that connections accepted in one go count against the limit before any task runs);
    this takes it out when done. ``after_batch`` is called before each send.

    ``scratch``: the receive buffer, which every connection of a server may share (each
    receive is consumed before the next await); a buffer of its own when None."""
    connection = entry.connection
    peer, protocol = connection.peer, connection.protocol
    about = {PEER: peer}
    debug = log.isEnabledFor(logging.DEBUG)
    if debug:
        log.debug(
            "%s: %s connection opened (%d open)", peer, protocol, len(connections), extra=about
        )
    if scratch is None:
        scratch = bytearray(RECEIVE_SIZE)
    reason = "closed by the client"
    closed_as = "client"
    stream: trio.SSLStream[trio.abc.Stream] | None = None
    try:
        if tls is None:
            # A plain connection needs no trio stream: system calls on the socket itself.
            io: StreamIO = SocketIO(sock, scratch)
        else:
            plain = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            stream = trio.SSLStream(plain, tls, server_side=True)
            if not await _handshake(stream, entry, limits, connections):
                reason = "TLS handshake failed"
                closed_as = "tls_handshake"
                return
            io = StreamIO(stream, len(scratch))
        await drive(io, entry, after_batch, connections.room)
        log_ending(connection, limits)
        if connection.ending is Ending.GUESSING:
            connections.closed_for_guessing += 1
        reason = connection.ending.value if connection.ending is not None else "?"
        closed_as = CLOSE_REASONS[connection.ending]
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        reason = f"broken ({exc or type(exc).__name__})"
    except trio.Cancelled:
        closed_as = "shutdown"  # the server cut it short
        raise
    except Exception:
        log.exception(
            "%s: internal error serving a %s connection; closing it", peer, protocol, extra=about
        )
        reason = "internal error"
        closed_as = "internal"
    finally:
        connections.closed[closed_as] += 1
        try:
            connection.release()  # its bound leases and watches end with it
            after_batch()  # wakes the expiry task for those left to end
        except Exception:
            log.exception(
                "%s: internal error ending a %s connection's leases", peer, protocol, extra=about
            )
        connections.discard(entry)
        if stream is None:
            close_socket(sock)
        else:
            with trio.CancelScope(shield=True) as closing:
                closing.deadline = trio.current_time() + CLOSE_TIMEOUT
                await stream.aclose()
        if debug:
            log.debug(
                "%s: connection closed: %s (%d open)", peer, reason, len(connections), extra=about
            )


async def drive(
    io: StreamIO,
    entry: OpenConnection,
    after_batch: Callable[[], None],
    room: ParkingLot | None = None,
) -> None:
    """Move bytes between ``io`` and ``entry``'s connection until the connection ends.
    ``room`` is unparked whenever memory of the connections' budget is given back."""
    connection = entry.connection
    connection.send_buffers = io.send_buffers
    while True:
        scope = entry.scope
        with scope:
            await _serve(io, connection, scope, after_batch, room)
        if connection.ending is not None:
            return
        # The scope fired, or bytes came as it fell due: past the limit that ends it.
        connection.time_is(trio.current_time())
        if connection.ending is not None:
            return
        entry.scope = trio.CancelScope(deadline=connection.due)


async def _serve(
    io: StreamIO,
    connection: Connection,
    scope: trio.CancelScope,
    after_batch: Callable[[], None],
    room: ParkingLot | None,
) -> None:
    """Serve under ``scope`` until the connection ends or its scope fell due early."""
    receive, receive_into = io.receive, io.receive_into
    send_now = io.send_now
    current_time = trio.current_time
    timed = connection.timed
    while True:
        if connection.has_output:
            now = received = current_time()
        else:
            while not connection.may_receive():
                await _room(connection, room)  # back pressure: the memory budget is spent
            target = connection.receive_buffer()
            if target is None:
                connection.received(await receive())
            else:
                with target:
                    connection.received_into(await receive_into(target))
            if connection.ending is not None:
                return
            now = received = current_time()  # the batch's requests' last byte came by now
            if scope.deadline <= now < connection.due:
                return  # an early deadline fell due in this pass: answer under a new scope
        while connection.has_output:
            if not connection.may_answer():
                while not connection.may_answer():
                    await _room(connection, room)  # no batch is built to wait for room
                now = current_time()
            out = connection.next_output(now)
            if not out:
                break
            after_batch()  # before the send: a slow reader must not delay an expiry
            rest = send_now(out)  # no wait between building replies and this
            if rest is not None:
                connection.send_held(len(rest))
                now = await _send_rest(io, connection, scope, rest, now)
                if connection.ending is not None:
                    return
                # The send kept only the shutdown grace: a wait for room in this batch is
                # bounded by the connection's own limit again.
                scope.deadline = connection.due
            if timed:  # all of it in the kernel's hands (a TLS stream's too) by now
                connection.replies_handed(received, current_time())
        connection.batch_done(now)
        if connection.ending is not None:
            return
        if connection.due < scope.deadline:
            scope.deadline = connection.due


async def _room(connection: Connection, room: ParkingLot | None) -> None:
    if room is None:  # a budget without a way to wait for it: never taken, by design
        raise RuntimeError("a connection with a memory budget needs a room to wait in")
    with connection.waiting_for_memory():
        await room.park()


async def _send_rest(
    io: StreamIO, connection: Connection, scope: trio.CancelScope, rest: Bytes, now: float
) -> float:
    """Send what the socket did not take at once; the time after. The client must take some
    within the send bound, counted again from each write that went and from each time the
    kernel's queue for the client shrank (a slow reader drains it long before the socket
    takes more). Ends the connection if it takes nothing for that long."""
    connection.send_blocked(now)
    # The waits below keep the send bound; the scope keeps only the shutdown grace.
    scope.deadline = connection.wait_until
    view = memoryview(rest)
    queued = io.unacknowledged()
    while view:
        sent = await io.send_some(view, connection.due)
        now = trio.current_time()
        if sent:
            view = view[sent:]
        else:
            still = io.unacknowledged()
            if still is None or queued is None or still >= queued:
                connection.time_is(now)  # nothing taken within the bound
                return now
        queued = io.unacknowledged()
        connection.send_progress(now)
    connection.send_done(now)
    return now


async def _handshake(
    stream: trio.SSLStream[trio.abc.Stream],
    entry: OpenConnection,
    limits: Limits,
    connections: ConnectionSet,
) -> bool:
    connection = entry.connection
    connection.handshake_begun(trio.current_time())
    scope = entry.scope
    try:
        with scope:
            scope.deadline = connection.due
            await stream.do_handshake()
            connection.handshake_done(trio.current_time())
            connections.handshake_done(entry)
            # A scope is entered once: the exchange runs under a new one.
            entry.scope = trio.CancelScope(deadline=connection.due)
            return True
        if connections.closing:
            return False  # shutdown cut it short: not the peer's fault
        log.warning(
            "%s: %s TLS handshake not done within %gs; cut off",
            connection.peer,
            connection.protocol,
            limits.handshake_timeout,
            extra={PEER: connection.peer},
        )
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__ or exc
        log.warning(
            "%s: %s TLS handshake failed: %s",
            connection.peer,
            connection.protocol,
            cause,
            extra={PEER: connection.peer},
        )
    return False
