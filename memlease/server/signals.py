"""The server's signals: SIGINT and SIGTERM stop it (a second one cuts the shutdown short),
SIGHUP reloads what can change without a restart, SIGUSR1 and SIGUSR2 are logged and
ignored; none of them may end the process before the watcher runs."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Protocol

import trio

from memlease.core.errors import ConfigError
from memlease.server.config import Config

log = logging.getLogger("memlease")

RELOADED = (
    "log_level",
    "max_connections",
    "max_connections_per_client",
    "request_timeout",
    "idle_timeout",
    "handshake_timeout",
    "max_unknown_ids_per_second",
    "shutdown_grace",
)
"""The Config fields SIGHUP reloads; connections opened from then on get the new limits.
The others (host, listeners, arena, max_message, max_ttl, expiry_batch, max_batch,
max_watches, TLS files, log_format) take a restart."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
OTHER_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGHUP", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


class Signalled(Protocol):
    """What the watcher needs of a running server."""

    stop: trio.Event
    reload: Callable[[], Config] | None
    reloading: bool

    def reloaded(self, new: Config) -> None: ...

    def force(self, signum: signal.Signals) -> None: ...


async def watch_signals(
    server: Signalled,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS, *OTHER_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum in STOP_SIGNALS:
                if server.stop.is_set():
                    server.force(signal.Signals(signum))
                else:
                    log.info("%s received: stopping", name)
                    server.stop.set()
            elif name != "SIGHUP":
                log.info(
                    "%s received: ignored (SIGHUP reloads the configuration, SIGINT or "
                    "SIGTERM stops the server)",
                    name,
                )
            elif server.stop.is_set():
                log.info("SIGHUP received while stopping: ignored")
            elif server.reload is None:
                log.info("SIGHUP received: no configuration file to reload; ignored")
            elif server.reloading:
                log.info("SIGHUP received: a reload is under way; ignored")
            else:
                nursery.start_soon(_reload, server, server.reload)


async def _reload(server: Signalled, reload: Callable[[], Config]) -> None:
    server.reloading = True
    log.info("SIGHUP received: reloading the configuration")
    try:
        # A thread: reading the file, the TLS files and resolving the host may block.
        new = await trio.to_thread.run_sync(reload, abandon_on_cancel=True)
    except (ConfigError, OSError) as exc:
        log.error("SIGHUP: configuration not reloaded, the running one kept: %s", exc)
        return
    finally:
        server.reloading = False
    server.reloaded(new)


def ignore_signals_while_starting() -> None:
    # Until the signal watcher runs (a large arena takes seconds to allocate), SIGHUP and
    # SIGUSR1/2 would end the process: their default action.
    for signum in OTHER_SIGNALS:
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:  # not the main thread
            return
