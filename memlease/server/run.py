"""The trio server: ``serve(config)`` in a nursery, or ``run(config)`` from a command line.

One nursery holds the listeners (one per configured protocol and port), the expiry task and
the signal watcher; a second, outliving it, holds a task per connection so that on
SIGINT/SIGTERM the server stops accepting, lets requests in flight finish, and returns.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from memlease.core.errors import ConfigError
from memlease.core.service import Service
from memlease.protocol import ProtocolRegistry, ProtocolSpec, default_registry
from memlease.server.accept import CAPACITY_ERRNOS, accept_forever, close_socket, listening_socket
from memlease.server.config import Config, largest_lease
from memlease.server.config_values import Listener
from memlease.server.connection import Connection, Limits
from memlease.server.connection_set import ConnectionSet, OpenConnection
from memlease.server.connection_task import SCRATCH_SIZE, serve_connection
from memlease.server.expiry import ExpiryTask
from memlease.server.glibc_malloc import keep_large_blocks
from memlease.tls import server_context

log = logging.getLogger("memlease")

_ACCEPT_RETRY_AFTER = 0.1


@dataclass(frozen=True)
class BoundListener:
    """A listening socket of a running server: where a client of ``protocol`` connects."""

    protocol: str
    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True)
class _OpenListener:
    listener: socket.socket
    spec: ProtocolSpec
    bound: BoundListener
    tls: ssl.SSLContext | None


async def open_listener(
    host: str, listener: Listener, spec: ProtocolSpec, tls: ssl.SSLContext | None = None
) -> list[_OpenListener]:
    """The listening sockets for one configured listener; with ``tls``, each accepted
    connection does a TLS handshake (in its own task) before anything else. Raises OSError
    naming the listener."""
    try:
        sockets = await trio.open_tcp_listeners(listener.port, host=host)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot listen for {listener.protocol} on {host}:{listener.port}: "
            f"{exc.strerror or exc}",
        ) from exc
    opened = []
    for socket_listener in sockets:
        sock = listening_socket(socket_listener)
        address = sock.getsockname()
        bound = BoundListener(listener.protocol, str(address[0]), int(address[1]), tls is not None)
        opened.append(_OpenListener(sock, spec, bound, tls))
    return opened


def _specs_for(config: Config, registry: ProtocolRegistry) -> list[tuple[Listener, ProtocolSpec]]:
    specs = []
    for listener in config.listeners:
        try:
            specs.append((listener, registry.get(listener.protocol)))
        except KeyError as exc:
            raise ConfigError(
                f"listener {listener.protocol}={listener.port}: {exc.args[0]}"
            ) from None
    return specs


async def serve(
    config: Config,
    *,
    registry: ProtocolRegistry | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``config`` until cancelled or, with ``handle_signals``, until SIGINT or SIGTERM
    (then: stop accepting, finish requests in flight, return). ``task_status.started`` gets
    the bound listeners, so ``await nursery.start(serve, config)`` returns the ports.

    Raises OSError (naming the listener) if a port cannot be bound, ConfigError for a
    listener whose protocol is not installed.
    """
    registry = registry or default_registry()
    specs = _specs_for(config, registry)
    connections = ConnectionSet(config.max_connections)
    service = Service.create(
        config.arena_size,
        min_block=config.min_block,
        max_ttl_ms=config.max_ttl_ms,
        max_lease_size=largest_lease(config),
        connection_count=connections.__len__,
    )
    tls = None
    if config.tls_certificate is not None and config.tls_key is not None:
        tls = server_context(config.tls_certificate, config.tls_key, config.tls_client_ca)
    opened: list[_OpenListener] = []
    try:
        for listener, spec in specs:
            context = tls if config.uses_tls(listener) else None
            opened += await open_listener(config.host, listener, spec, context)
    except BaseException:
        for entry in opened:
            entry.listener.close()
        raise
    expiry = ExpiryTask(service, batch=config.expiry_batch)
    limits = Limits(
        max_message=config.max_message,
        request_timeout=config.request_timeout,
        idle_timeout=config.idle_timeout,
    )
    handler = partial(
        serve_connection,
        limits=limits,
        connections=connections,
        after_batch=expiry.deadline_may_have_moved,
        # One receive buffer for all connections: each receive is consumed before an await.
        scratch=bytearray(SCRATCH_SIZE),
    )
    stop = trio.Event()
    async with trio.open_nursery() as connection_nursery:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(expiry.run)
            if handle_signals:
                await nursery.start(_watch_signals, stop)
            for entry in opened:
                nursery.start_soon(
                    _accept, entry, service, limits, connections, handler, connection_nursery
                )
            _log_startup(config, service, opened)
            task_status.started([entry.bound for entry in opened])
            await stop.wait()
            nursery.cancel_scope.cancel()
        log.info("shutting down: %d connection(s) finishing", len(connections))
        connections.shut_down(config.shutdown_grace)
    log.info("stopped")


async def _accept(
    entry: _OpenListener,
    service: Service,
    limits: Limits,
    connections: ConnectionSet,
    handler: Callable[[socket.socket, OpenConnection, ssl.SSLContext | None], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    spec, tls = entry.spec, entry.tls
    make_codec, handle, max_message = spec.server_codec, service.handle, limits.max_message
    # trio would work the name out of the handler for every connection
    task_name = f"memlease connection ({spec.name})"

    def accepted(connection: socket.socket, peer: str) -> None:
        if connections.full() or connections.closing:
            why = "shutting down" if connections.closing else "the max_connections limit"
            log.warning(
                "%s: %s connection refused: %d open, %s", peer, spec.name, len(connections), why
            )
            connection.close()  # nobody waited on it yet: trio has nothing to be told
            return
        # Counted now, not when its task first runs: a batch of accepts must not pass the
        # limit check before any of them is counted.
        rules = Connection(
            make_codec(max_message),
            handle,
            limits,
            trio.current_time(),
            peer=peer,
            protocol=spec.name,
        )
        opened = OpenConnection(rules)
        connections.add(opened)
        try:
            nursery.start_soon(handler, connection, opened, tls, name=task_name)
        except BaseException:
            connections.discard(opened)
            connection.close()
            raise

    try:
        while True:
            try:
                await accept_forever(entry.listener, accepted)
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                log.error("cannot accept on %s: %s; retrying", entry.bound.port, exc.strerror)
                await trio.sleep(_ACCEPT_RETRY_AFTER)
    finally:
        close_socket(entry.listener)


async def _watch_signals(
    stop: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s received: stopping", signal.Signals(signum).name)
            stop.set()
            return


def _log_startup(config: Config, service: Service, opened: list[_OpenListener]) -> None:
    figures = service.stats(0.0)
    log.info(
        "arena: %d bytes (min block %d B, largest lease %d B, max ttl %d ms)",
        figures.arena_size,
        config.min_block,
        service.table.max_lease_size,
        config.max_ttl_ms,
    )
    for entry in opened:
        bound = entry.bound
        tls = " (TLS)" if bound.tls else ""
        log.info("listening: %s on %s:%d%s", bound.protocol, bound.host, bound.port, tls)
    plain = sorted({entry.bound.protocol for entry in opened if not entry.bound.tls})
    if plain and not config.is_loopback():
        log.warning(
            "host %s is reachable from the network and %s listener(s) have no TLS: lease ids "
            "and data cross it in clear, and whoever sees an id may use the lease; configure "
            "[tls] (and prefer the uuid protocol), or bind to 127.0.0.1",
            config.host,
            ", ".join(plain),
        )


def configure_logging(level: str) -> None:
    """Log the "memlease" logger to stderr at ``level`` (debug, info, warning, ...)."""
    logger = logging.getLogger("memlease")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s memlease %(levelname)s %(message)s"))
        logger.addHandler(handler)


def run(config: Config) -> int:
    """Serve ``config`` in the calling thread until SIGINT or SIGTERM; the exit status (0).

    Logs to stderr at the configured level. Raises OSError naming the listener when a port
    cannot be bound, ConfigError for a listener whose protocol is not installed.
    """
    configure_logging(config.log_level)
    # process-wide, so here and not in serve(), which may run inside another program
    keep_large_blocks(config.max_message)
    try:
        trio.run(partial(serve, config, handle_signals=True))
    except KeyboardInterrupt:
        # Interrupted while starting, before the signal watcher took over SIGINT.
        log.info("interrupted while starting: stopped")
    return 0
