"""The trio server: ``serve(config)`` in a nursery, or ``run(config)`` from a command line.

One nursery holds the listeners (one per configured protocol and port) and the expiry task;
a second, outliving it, holds a task per connection so that on SIGINT/SIGTERM the server
stops accepting, lets requests in flight finish, and returns. The signal watcher outlives
both: a second SIGINT/SIGTERM cuts the connections short, SIGHUP reloads what can change
without a restart, SIGUSR1/SIGUSR2 are logged and ignored.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import partial

import trio

from memlease import __version__
from memlease.build import build_kind
from memlease.core.errors import ConfigError
from memlease.core.service import Service
from memlease.core.sessions import Session
from memlease.protocol import ProtocolRegistry, ProtocolSpec, default_registry
from memlease.server.accept import (
    CAPACITY_ERRNOS,
    accept_forever,
    client_of,
    close_socket,
    ensure_open_files,
    listening_socket,
)
from memlease.server.budget import MemoryBudget
from memlease.server.config import (
    FILE_KEYS,
    Config,
    batch_limit,
    largest_lease,
    per_client_limit,
)
from memlease.server.config_values import METRICS, Listener, parse_metrics_address
from memlease.server.connection import Connection, Limits
from memlease.server.connection_set import (
    ConnectionSet,
    MissLedger,
    OpenConnection,
    Refusal,
)
from memlease.server.connection_task import SCRATCH_SIZE, serve_connection
from memlease.server.expiry import ExpiryTask
from memlease.server.glibc_malloc import keep_large_blocks
from memlease.server.logs import PEER, LogRate, ServerLog, left_out
from memlease.server.request_figures import RequestFigures
from memlease.server.signals import RELOADED, ignore_signals_while_starting, watch_signals
from memlease.tls import server_context

log = logging.getLogger("memlease")

_ACCEPT_RETRY_AFTER = 0.1

# One format per cause, so that a log filter limiting repeats keeps the causes apart.
_REFUSED = {
    Refusal.CLOSING: "%s: %s connection refused: %s; shutting down%s",
    Refusal.FULL: "%s: %s connection refused: %s; the max_connections limit%s",
    Refusal.CLIENT_FULL: "%s: %s connection refused: %s; the max_connections_per_client limit%s",
    Refusal.HANDSHAKES: "%s: %s connection refused: %s; the TLS handshakes' share of "
    "max_connections (a quarter)%s",
    Refusal.CLIENT_HANDSHAKES: "%s: %s connection refused: %s; one client's share of TLS "
    "handshakes (half of them)%s",
}


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


class _Server:
    """What the accept loops and the signal watcher share: the limits for new connections
    (a reload replaces them), the stop, and the scope a second stop signal cancels."""

    def __init__(
        self,
        config: Config,
        connections: ConnectionSet,
        expiry: ExpiryTask,
        reload: Callable[[], Config] | None,
    ) -> None:
        self.connections = connections
        self.reload = reload
        self.reloading = False
        self.stop = trio.Event()
        self.cut = trio.CancelScope()
        self.forced_by: signal.Signals | None = None
        self.log_rate = LogRate()
        self.misses = MissLedger(config.max_unknown_ids_per_second)
        self.budget = MemoryBudget(config.connection_memory, connections.room.unpark_all)
        self._after_batch = expiry.deadline_may_have_moved
        self.figures: dict[str, RequestFigures] = {}
        """With metrics: each protocol's requests as the metrics count them."""
        # One receive buffer for all connections: each receive is consumed before an await.
        self._scratch = bytearray(SCRATCH_SIZE)
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Open connections from now on with the limits of ``config``."""
        self.config = config
        self.limits = Limits(
            max_message=config.max_message,
            request_timeout=config.request_timeout,
            idle_timeout=config.idle_timeout,
            handshake_timeout=config.handshake_timeout,
            max_misses_per_second=config.max_unknown_ids_per_second,
        )
        self.handler = partial(
            serve_connection,
            limits=self.limits,
            connections=self.connections,
            after_batch=self._after_batch,
            scratch=self._scratch,
        )
        self.misses.limit = config.max_unknown_ids_per_second
        self.connections.max_connections = config.max_connections
        self.connections.max_per_client = per_client_limit(config)

    def reloaded(self, new: Config) -> None:
        """Apply what SIGHUP may change of ``new``, saying what changed and what did not."""
        old = self.config
        changed = [
            f"{FILE_KEYS[name]} = {_value(getattr(new, name))} (was {_value(getattr(old, name))})"
            for name in RELOADED
            if getattr(new, name) != getattr(old, name)
        ]
        logger = logging.getLogger("memlease")
        level = logging.getLevelName(new.log_level.upper())
        # Said at the more talkative of the two levels: before a quieter one, after a louder.
        if level < logger.getEffectiveLevel():
            logger.setLevel(level)
        log.info("SIGHUP: reloaded: %s", "; ".join(changed) or "no change to apply")
        logger.setLevel(level)
        self.apply(replace(old, **{name: getattr(new, name) for name in RELOADED}))
        kept = [
            FILE_KEYS[field.name]
            for field in fields(Config)
            if field.name not in RELOADED and getattr(new, field.name) != getattr(old, field.name)
        ]
        if kept:
            log.warning(
                "SIGHUP: %s changed, which takes a restart: still running on the value(s) "
                "it started with",
                ", ".join(kept),
            )

    def force(self, signum: signal.Signals) -> None:
        """A second stop signal: cut every connection short now."""
        log.warning(
            "%s received again: stopping now, cutting %d connection(s) short",
            signum.name,
            len(self.connections),
        )
        self.forced_by = signum
        self.cut.cancel()


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}s"
    if value is None:
        return "the default"
    return repr(value) if isinstance(value, str) else str(value)


async def serve(
    config: Config,
    *,
    registry: ProtocolRegistry | None = None,
    handle_signals: bool = True,
    reload: Callable[[], Config] | None = None,
    task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED,
) -> signal.Signals | None:
    """Serve ``config`` until cancelled or, with ``handle_signals``, until SIGINT or SIGTERM
    (then: stop accepting, finish requests in flight, return). ``task_status.started`` gets
    the bound listeners, so ``await nursery.start(serve, config)`` returns the ports.

    With ``handle_signals``, also: a second SIGINT or SIGTERM while stopping cuts the
    connections still open short and returns that signal (None otherwise); SIGHUP calls
    ``reload`` (in a thread) for the configuration and applies its :data:`RELOADED` fields
    (without ``reload``, or when it raises ConfigError or OSError, the server logs that and
    goes on as it was); SIGUSR1 and SIGUSR2 are logged and ignored.

    Raises OSError (naming the listener) if a port cannot be bound, ConfigError for a
    listener whose protocol is not installed.
    """
    registry = registry or default_registry()
    specs = _specs_for(config, registry)
    connections = ConnectionSet(config.max_connections, per_client_limit(config))
    service = Service.create(
        config.arena_size,
        min_block=config.min_block,
        max_ttl_ms=config.max_ttl_ms,
        max_lease_size=largest_lease(config),
        connections=connections,
        max_batch=batch_limit(config),
        max_watches=config.max_watches,
        started=trio.current_time(),
    )
    tls = None
    if config.tls_certificate is not None and config.tls_key is not None:
        tls = server_context(config.tls_certificate, config.tls_key, config.tls_client_ca)
    opened: list[_OpenListener] = []
    metrics: list[trio.SocketListener] = []
    try:
        for listener, spec in specs:
            context = tls if config.uses_tls(listener) else None
            opened += await open_listener(config.host, listener, spec, context)
        if config.metrics_listen is not None:
            metrics = await _open_metrics(config.metrics_listen)
    except BaseException:
        for entry in opened:
            entry.listener.close()
        for metrics_listener in metrics:
            metrics_listener.socket.close()
        raise
    bound = [entry.bound for entry in opened] + [_bound_metrics(m) for m in metrics]
    expiry = ExpiryTask(service, batch=config.expiry_batch)
    server = _Server(config, connections, expiry, reload)
    if metrics:
        server.figures = {spec.name: RequestFigures() for _, spec in specs}
    async with trio.open_nursery() as watching:
        if handle_signals:
            await watching.start(watch_signals, server, watching)
        with server.cut:
            async with trio.open_nursery() as connection_nursery:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(expiry.run)
                    for entry in opened:
                        nursery.start_soon(_accept, entry, service, server, connection_nursery)
                    if metrics:
                        # Loaded only when asked for: prometheus_client and h11 were a tenth
                        # of a server's start.
                        from memlease.server.metrics import MetricsEndpoint
                        from memlease.server.metrics_collector import server_registry

                        metric_registry = server_registry(service, connections, server.figures)
                        endpoint = MetricsEndpoint(metric_registry, config.request_timeout)
                        nursery.start_soon(endpoint.serve, metrics)
                    _log_startup(config, service, opened, bound)
                    task_status.started(bound)
                    await server.stop.wait()
                    nursery.cancel_scope.cancel()
                log.info("shutting down: %d connection(s) finishing", len(connections))
                connections.shut_down(server.config.shutdown_grace)
        watching.cancel_scope.cancel()
    log.info("stopped" if server.forced_by is None else "stopped, cut short")
    return server.forced_by


async def _open_metrics(listen: str) -> list[trio.SocketListener]:
    host, port = parse_metrics_address(listen)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot listen for metrics on {host}:{port}: {exc.strerror or exc}"
        ) from exc


def _bound_metrics(listener: trio.SocketListener) -> BoundListener:
    address = listener.socket.getsockname()
    return BoundListener(METRICS, str(address[0]), int(address[1]))


async def _accept(
    entry: _OpenListener, service: Service, server: _Server, nursery: trio.Nursery
) -> None:
    spec, tls = entry.spec, entry.tls
    make_codec = spec.server_codec

    def end_session(session: Session) -> None:
        service.end_session(session, trio.current_time())

    max_message = server.limits.max_message  # a reload never changes it
    connections, handshake = server.connections, tls is not None
    misses, budget = server.misses.missed, server.budget
    # trio would work the name out of the handler for every connection
    task_name = f"memlease connection ({spec.name})"

    def accepted(connection: socket.socket, peer: str) -> None:
        client = client_of(peer)
        refusal = connections.refusal(client, handshake)
        if refusal is not None:
            connection.close()  # nobody waited on it yet: trio has nothing to be told
            connections.closed["shutdown" if refusal is Refusal.CLOSING else "limit"] += 1
            _log_refusal(server, refusal, peer, client, spec.name)
            return
        # Counted now, not when its task first runs: a batch of accepts must not pass the
        # limit check before any of them is counted.
        session = Session()
        rules = Connection(
            make_codec(max_message),
            service,
            server.limits,
            trio.current_time(),
            peer=peer,
            protocol=spec.name,
            client_missed=partial(misses, client),
            budget=budget,
            session=session,
            end_session=end_session,
            notices_sent=service.table.notices_sent,
            figures=server.figures.get(spec.name),
        )
        opened = OpenConnection(rules, client, handshaking=handshake)
        session.notify = opened.push
        connections.add(opened)
        try:
            nursery.start_soon(server.handler, connection, opened, tls, name=task_name)
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
                left = server.log_rate.allow(("accept", exc.errno), trio.current_time())
                if left is not None:
                    log.error(
                        "cannot accept on %s: %s; retrying every %gs%s",
                        entry.bound.port,
                        exc.strerror,
                        _ACCEPT_RETRY_AFTER,
                        left_out(left),
                    )
                await trio.sleep(_ACCEPT_RETRY_AFTER)
    finally:
        close_socket(entry.listener)


def _log_refusal(server: _Server, why: Refusal, peer: str, client: str, protocol: str) -> None:
    """One warning per cause per second at most, with the count of those left out."""
    left = server.log_rate.allow(why, trio.current_time())
    if left is None:
        return
    connections = server.connections
    if why is Refusal.CLIENT_FULL:
        detail = f"{connections.from_client(client)} open from {client}"
    elif why is Refusal.HANDSHAKES:
        detail = f"{connections.handshakes} TLS handshakes under way"
    elif why is Refusal.CLIENT_HANDSHAKES:
        detail = f"{connections.handshakes_from(client)} TLS handshakes under way from {client}"
    else:
        detail = f"{len(connections)} open"
    log.warning(_REFUSED[why], peer, protocol, detail, left_out(left), extra={PEER: peer})


def _log_startup(
    config: Config, service: Service, opened: list[_OpenListener], listening: list[BoundListener]
) -> None:
    figures = service.stats(0.0)
    log.info("memlease %s (%s)", __version__, build_kind())
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
    for metrics in listening:
        if metrics.protocol == METRICS:
            host = f"[{metrics.host}]" if ":" in metrics.host else metrics.host
            log.info("metrics: http://%s:%d/metrics", host, metrics.port)
    plain = sorted({entry.bound.protocol for entry in opened if not entry.bound.tls})
    if plain and not config.is_loopback():
        log.warning(
            "host %s is reachable from the network and %s listener(s) have no TLS: lease ids "
            "and data cross it in clear, and whoever sees an id may use the lease; configure "
            "[tls] (and prefer the uuid protocol), or bind to 127.0.0.1",
            config.host,
            ", ".join(plain),
        )


class _Announce:
    """The task status :func:`serve` is given by :func:`run`: hands the bound listeners to
    ``started`` (a shard supervisor's child tells its parent where it listens)."""

    def __init__(self, started: Callable[[list[BoundListener]], None]) -> None:
        self._started = started

    def started(self, value: list[BoundListener] | None = None) -> None:
        self._started(value or [])


def run(
    config: Config,
    reload: Callable[[], Config] | None = None,
    started: Callable[[list[BoundListener]], None] | None = None,
) -> int:
    """Serve ``config`` in the calling thread until SIGINT or SIGTERM; the exit status: 0,
    or 128 + the signal's number (130 for SIGINT, 143 for SIGTERM) when a second one cut the
    shutdown short, as a shell reports a process that signal killed. SIGHUP calls ``reload``
    for the configuration (see :func:`serve`); ``started`` gets the bound listeners once
    the server accepts connections.

    Logs to stderr at the configured level. Raises OSError naming the listener when a port
    cannot be bound, ConfigError for a listener whose protocol is not installed.
    """
    # Process-wide, so here and not in serve(), which may run inside another program.
    server_log = ServerLog(config.log_level, log_format=config.log_format)
    try:
        keep_large_blocks(config.max_message)
        ensure_open_files(config.max_connections)
        ignore_signals_while_starting()
        try:
            status = trio.TASK_STATUS_IGNORED if started is None else _Announce(started)
            forced_by = trio.run(
                partial(serve, config, handle_signals=True, reload=reload, task_status=status)
            )
        except KeyboardInterrupt:
            # Interrupted while starting, before the signal watcher took over SIGINT.
            log.info("interrupted while starting: stopped")
            return 0
        return 0 if forced_by is None else 128 + int(forced_by)
    finally:
        server_log.stop()
