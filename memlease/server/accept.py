"""Accepting TCP connections with the listening socket's own ``accept``.

``trio.SocketListener.accept`` costs a scheduler pass per connection, wraps each in a trio
socket and a ``SocketStream`` (two ``setsockopt`` calls among other things) and drops the
peer's address, which then takes a ``getpeername``. When each connection carries one
request, as the original C++ client works, that was a fifth of the server's time. Here every
connection waiting in the backlog is taken per wakeup, as a plain non-blocking socket with
its peer's address; the TCP options trio would set are set once on the listening socket,
which Linux copies to each accepted one.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio
from trio.lowlevel import checkpoint, notify_closing, wait_readable

log = logging.getLogger("memlease")

Accepted = Callable[[socket.socket, str], None]

ACCEPT_BATCH = 64
"""Connections taken from the backlog in one go before the scheduler runs the others: a flood
of connections must not starve the connections already open."""

CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""accept() fails with these when the process or system is out of sockets or memory: a
reason to wait and try again, not to stop serving."""

# What trio.SocketListener ignores too: a connection that died in the backlog, or that a
# firewall refused, is nobody's problem but its own.
_IGNORED_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)

# Linux copies TCP_NODELAY and TCP_NOTSENT_LOWAT from the listening socket to the accepted
# one; elsewhere each connection gets them itself.
_INHERITS_TCP_OPTIONS = sys.platform == "linux"

# What trio.SocketStream sets: replies go out at once; a socket reports writable only when
# little is left unsent, so a slow reader does not wake its sender for every few bytes.
_TCP_OPTIONS: tuple[tuple[int, int], ...] = tuple(
    (getattr(socket, name), value)
    for name, value in (("TCP_NODELAY", 1), ("TCP_NOTSENT_LOWAT", 1 << 14))
    if hasattr(socket, name)
)


def listening_socket(listener: trio.SocketListener) -> socket.socket:
    """Take the socket of a trio listener (which is left closed) as a plain non-blocking
    socket, with the TCP options its connections should have."""
    trio_socket = listener.socket
    family, kind, proto = trio_socket.family, trio_socket.type, trio_socket.proto
    sock = socket.socket(family, kind, proto, fileno=trio_socket.detach())
    sock.setblocking(False)
    _set_tcp_options(sock)
    return sock


def _set_tcp_options(sock: socket.socket) -> None:
    for option, value in _TCP_OPTIONS:
        # not a TCP socket (a Unix socket), or an option this kernel lacks
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def client_of(peer: str) -> str:
    """The client a peer (``host:port``, as :func:`peer_name` gives it) counts as for
    per-client limits: its IPv4 address, or the /64 network of its IPv6 address, which one
    host may hold whole (an IPv4-mapped address is its IPv4 address). "" when unknown."""
    host = peer.rpartition(":")[0]
    if host[:1] != "[":
        return host
    try:
        address = ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.is_loopback:
        return str(address)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def peer_name(address: object) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of an address as accept() returns it."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "unknown peer"


async def accept_forever(sock: socket.socket, accepted: Accepted) -> None:
    """Call ``accepted(connection, peer)`` for every connection ``sock`` accepts, each
    connection a non-blocking socket that ``accepted`` now owns, until cancelled.

    Raises OSError when accept() fails for want of sockets or memory (CAPACITY_ERRNOS: the
    caller may wait and call again) or for a reason that is not the peer's doing. Does not
    close ``sock``."""
    accept = _accept_function(sock)
    while True:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, address = accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _IGNORED_ERRNOS:
                    continue
                raise
            connection.setblocking(False)
            if not _INHERITS_TCP_OPTIONS:
                _set_tcp_options(connection)
            accepted(connection, peer_name(address))
        else:
            await checkpoint()
            continue
        await wait_readable(sock)


def _accept_function(sock: socket.socket) -> Callable[[], tuple[socket.socket, Any]]:
    """``sock.accept`` without its per-call costs: it converts the listener's family and
    type to enums and asks for the default timeout on every call (half of its time)."""
    raw_accept = getattr(sock, "_accept", None)  # what socket.accept calls (CPython)
    if not callable(raw_accept):
        return sock.accept
    family, kind, proto = int(sock.family), int(sock.type), sock.proto
    new_socket = socket.socket

    def accept() -> tuple[socket.socket, Any]:
        fd, address = raw_accept()
        return new_socket(family, kind, proto, fd), address

    return accept


def close_socket(sock: socket.socket) -> None:
    """Close ``sock``, waking (with ClosedResourceError) any task waiting on it, as trio
    requires of a socket that may have been waited on. Does not block, and is no
    cancellation point."""
    if sock.fileno() != -1:
        notify_closing(sock)
        sock.close()


FILES_BESIDES_CONNECTIONS = 64
"""Open files a server needs beside one per connection: listeners, the event loop's own, the
standard streams, log files, a TLS certificate being read."""


def raise_open_file_limit(needed: int) -> tuple[int, int]:
    """Raise the soft open-file limit (RLIMIT_NOFILE) to the hard one when it is below
    ``needed``, as memcached and redis-server do; or as far as the system lets. The soft and
    hard limits after; (-1, -1) where there are no such limits."""
    try:
        import resource
    except ImportError:  # not a Unix
        return -1, -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, hard
    # An unlimited hard limit is more than the kernel grants (Linux: fs.nr_open): then ask
    # for what is needed.
    for target in (hard, needed) if hard != resource.RLIM_INFINITY else (needed,):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return target, hard
    return soft, hard


def ensure_open_files(max_connections: int) -> None:
    """Raise the soft open-file limit if it is below what ``max_connections`` needs; warn,
    once, if it stays below. Process-wide: for a command line's server."""
    needed = max_connections + FILES_BESIDES_CONNECTIONS
    soft, hard = raise_open_file_limit(needed)
    if 0 <= soft < needed:
        log.warning(
            "open files: the limit is %d (hard limit %d), below limits.max_connections (%d) "
            "+ %d for listeners and files: accepting will fail with some %d connections open; "
            "raise it (ulimit -n, LimitNOFILE=) or lower limits.max_connections",
            soft,
            hard,
            max_connections,
            FILES_BESIDES_CONNECTIONS,
            max(0, soft - FILES_BESIDES_CONNECTIONS),
        )
    else:
        log.debug("open files: limit %d (hard limit %d)", soft, hard)
