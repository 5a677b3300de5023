"""One client connection from accept to close: registered with the server's open
connections, a TLS handshake first on a TLS listener (bounded by the request timeout), then
the request/reply loop of ``exchange``, and a close that a peer which never reads cannot hold
up. Never raises for the peer's doing.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable

import trio

from memlease.client.connecting import RECEIVE_SIZE
from memlease.protocol import ProtocolSpec
from memlease.server.accept import close_socket
from memlease.server.connection_set import Connection, ConnectionSet
from memlease.server.exchange import LeaseService, Limits, exchange
from memlease.server.socket_io import SocketIO, StreamIO

log = logging.getLogger("memlease")

SCRATCH_SIZE = 64 * 1024
"""The receive buffer the server's connections share. 256 KiB was measured slower than 64 KiB
for 512 KiB values (bench large-values), so it stays the clients' receive size."""

CLOSE_TIMEOUT = 1.0
"""Seconds to say goodbye on a TLS connection (close_notify) before dropping it anyway: a peer
that never reads must not hold a task."""


async def serve_connection(
    sock: socket.socket,
    spec: ProtocolSpec,
    connection: Connection,
    tls: ssl.SSLContext | None = None,
    *,
    service: LeaseService,
    limits: Limits,
    connections: ConnectionSet,
    after_batch: Callable[[], None],
    scratch: bytearray | None = None,
) -> None:
    """Serve one accepted connection (a non-blocking socket, which this closes) until the
    peer closes it, a limit cuts it off, it sends bytes that do not follow the protocol, or
    the server shuts down. With ``tls``, first a TLS handshake as the server, bounded by the
    request timeout. Never raises for the peer's doing.

    ``connection`` is already counted in ``connections`` (by whoever accepted the socket, so
    that connections accepted in one go count against the limit before any task runs);
    this takes it out when done.

    ``scratch``: the receive buffer, which every connection of a server may share (each
    receive is consumed before the next await); a buffer of its own when None."""
    peer = connection.peer
    debug = log.isEnabledFor(logging.DEBUG)
    if debug:
        log.debug("%s: %s connection opened (%d open)", peer, spec.name, len(connections))
    if scratch is None:
        scratch = bytearray(RECEIVE_SIZE)
    reason = "closed by the client"
    stream: trio.SSLStream[trio.abc.Stream] | None = None
    try:
        if tls is None:
            # A plain connection needs no trio stream: system calls on the socket itself.
            io: StreamIO = SocketIO(sock, scratch)
        else:
            plain = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            stream = trio.SSLStream(plain, tls, server_side=True)
            if not await _handshake(stream, connection, spec.name, limits, connections):
                reason = "TLS handshake failed"
                return
            io = StreamIO(stream, len(scratch))
        reason = await exchange(io, spec, connection, service, limits, connections, after_batch)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        reason = f"broken ({exc or type(exc).__name__})"
    except Exception:
        log.exception("%s: internal error serving a %s connection; closing it", peer, spec.name)
        reason = "internal error"
    finally:
        connections.discard(connection)
        if stream is None:
            close_socket(sock)
        else:
            with trio.CancelScope(shield=True) as closing:
                closing.deadline = trio.current_time() + CLOSE_TIMEOUT
                await stream.aclose()
        if debug:
            log.debug("%s: connection closed: %s (%d open)", peer, reason, len(connections))


async def _handshake(
    stream: trio.SSLStream[trio.abc.Stream],
    connection: Connection,
    protocol: str,
    limits: Limits,
    connections: ConnectionSet,
) -> bool:
    timeout = limits.request_timeout
    handshake = connection.scope
    connection.receiving = True  # shutdown may cut a handshake short, as it does a wait
    try:
        with handshake:
            handshake.deadline = connection.due = trio.current_time() + timeout
            await stream.do_handshake()
            return True
        if connections.closing:
            return False  # shutdown cut it short: not the peer's fault
        log.warning(
            "%s: %s TLS handshake not done within %gs; cut off", connection.peer, protocol, timeout
        )
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__ or exc
        log.warning("%s: %s TLS handshake failed: %s", connection.peer, protocol, cause)
    finally:
        connection.receiving = False
    return False
