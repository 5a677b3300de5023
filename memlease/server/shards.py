"""``memlease serve --shards N``: a supervisor running N server processes, one per core.

One trio loop is one core; a machine with more cores runs more servers, as Redis runs one
per core, and clients spread leases over them (memlease.Fleet). Each shard is a whole server
(memlease.server.run) in its own process with its own arena, the configured size split
evenly; shard i listens on each listener's port + i (and serves its metrics on the metrics
port + i), and is pinned to its own core where the machine has a core for each. The
supervisor prints the fleet's addresses (and each shard's metrics address), restarts a shard
that dies (its leases are gone with it) on the ports it had, forwards SIGHUP, and on SIGINT
or SIGTERM asks every shard to stop (each drains as a single server does) and exits 0 once
they have.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from memlease.client.handle import format_server
from memlease.core.errors import ConfigError
from memlease.server.config import Config
from memlease.server.config_values import METRICS, Listener
from memlease.server.logs import log_formatter
from memlease.server.sharding import BoundPorts, cores_for, shard_configs

log = logging.getLogger("memlease")

START_TIMEOUT = 30.0
"""Seconds a shard may take to listen before the supervisor gives up on starting."""
RESTART_AFTER = 1.0
"""Seconds before restarting a shard that died within STEADY of its start, so a shard that
cannot run does not spin."""
STEADY = 10.0
STOP_MARGIN = 5.0
"""Seconds, beyond limits.shutdown_grace, the shards have to stop before they are killed."""

_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------- a shard, in its process


def _shard_main(
    index: int,
    config: Config,
    cores: set[int] | None,
    reload: Callable[[], Config] | None,
    report: multiprocessing.connection.Connection,
) -> None:
    # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which stops
    # each shard once (a second signal would cut a shard's drain short).
    os.setpgid(0, 0)
    _die_with_parent()
    if cores is not None:
        try:
            os.sched_setaffinity(0, cores)
        except OSError as exc:
            log.warning("shard %d: cannot pin to core %s: %s", index, cores, exc.strerror)
    from memlease.server.run import run

    def started(bound: list[Any]) -> None:
        report.send(("listening", [(b.protocol, b.host, b.port, b.tls) for b in bound]))

    try:
        status = run(config, reload, started)
    except (OSError, ConfigError, BaseExceptionGroup) as exc:
        report.send(("failed", _reason(exc)))
        sys.exit(2)
    sys.exit(status)


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _die_with_parent() -> None:
    """Linux: SIGTERM this shard if the supervisor dies, so none outlives it unsupervised."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _reload_shard(
    reload: Callable[[], Config], index: int, rebound: tuple[Config, BoundPorts] | None
) -> Config:
    config = reload()
    if config.shards <= index:
        raise ConfigError(f"shards = {config.shards}: a change of shards takes a restart")
    fresh = shard_configs(config)[index]
    if rebound is None:
        return fresh
    # A restarted shard runs on the ports it took again (where the configuration says 0,
    # ports the kernel chose): the same configuration read again means those, not a change
    # that takes a restart.
    planned, bound = rebound
    kept = BoundPorts(
        bound.listeners if fresh.listeners == planned.listeners else fresh.listeners,
        bound.metrics if fresh.metrics_listen == planned.metrics_listen else None,
    )
    return shard_configs(config, {index: kept})[index]


# ---------------------------------------------------------------- the supervisor


@dataclass
class _Shard:
    index: int
    cores: set[int] | None
    process: BaseProcess | None = None
    report: multiprocessing.connection.Connection | None = None
    listening: list[tuple[str, str, int, bool]] | None = None
    started_at: float = 0.0
    restart_at: float | None = None


class ShardStartFailed(Exception):
    """A shard could not start: the message says which and why."""


class Supervisor:
    """Runs ``config.shards`` servers; :meth:`run` until SIGINT or SIGTERM."""

    def __init__(self, config: Config, reload: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.reload = reload
        self.shards = [_Shard(i, cores) for i, cores in enumerate(cores_for(config.shards))]
        self._context = multiprocessing.get_context("spawn")
        self._stop: signal.Signals | None = None
        self._stopped_twice = False
        self._hangup = False
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    # -------------------------------------------------------- starting

    def _start(self, shard: _Shard) -> None:
        rebound = None
        if shard.listening is not None:  # a restart takes the ports it had
            rebound = (shard_configs(self.config)[shard.index], _bound_ports(shard.listening))
            config = shard_configs(self.config, {shard.index: rebound[1]})[shard.index]
        else:
            config = shard_configs(self.config)[shard.index]
        reload = None
        if self.reload is not None:
            reload = _ShardReload(self.reload, shard.index, rebound)
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_shard_main,
            args=(shard.index, config, shard.cores, reload, send),
            name=f"memlease shard {shard.index}",
        )
        process.start()
        send.close()
        shard.process, shard.report, shard.started_at = process, receive, time.monotonic()
        shard.restart_at = None

    def _await_listening(self, shard: _Shard, deadline: float) -> None:
        assert shard.report is not None and shard.process is not None
        while time.monotonic() < deadline and self._stop is None:
            if shard.report.poll(0.1):
                try:
                    kind, value = shard.report.recv()
                except EOFError:
                    break
                if kind == "failed":
                    raise ShardStartFailed(f"shard {shard.index}: {value}")
                shard.listening = value
                pinned = f"core {min(shard.cores)}" if shard.cores else "no core (too few)"
                log.info(
                    "shard %d (pid %s) listening on %s, pinned to %s",
                    shard.index,
                    shard.process.pid,
                    ", ".join(f"{p} {format_server(h, port)}" for p, h, port, _ in value),
                    pinned,
                )
                return
            if not shard.process.is_alive():
                break
        if self._stop is not None:
            return
        raise ShardStartFailed(
            f"shard {shard.index} did not start listening "
            f"(exit status {shard.process.exitcode}); see its log above"
        )

    def addresses(self) -> dict[str, list[str]]:
        """Each protocol's servers, shard by shard: a fleet's address list; and under
        ``metrics``, each shard's metrics endpoint (a scrape target each)."""
        fleet: dict[str, list[str]] = {}
        for shard in self.shards:
            for protocol, host, port, _ in shard.listening or []:
                fleet.setdefault(protocol, []).append(format_server(host, port))
        return fleet

    # -------------------------------------------------------- running

    def run(self) -> int:
        """Start every shard, print the fleet, keep it running; the exit status."""
        previous = self._catch_signals()
        try:
            try:
                for shard in self.shards:
                    self._start(shard)
                for shard in self.shards:
                    self._await_listening(shard, time.monotonic() + START_TIMEOUT)
            except ShardStartFailed as exc:
                print(f"memlease serve: {exc}", file=sys.stderr)
                self._stop_all()
                return 2
            if self._stop is None:
                for protocol, servers in self.addresses().items():
                    print(f"{protocol}={','.join(servers)}", flush=True)
                log.info(
                    "fleet of %d shards, %d B of arena each",
                    len(self.shards),
                    shard_configs(self.config)[0].arena_size,
                )
                self._watch()
            return self._stop_all()
        finally:
            self._restore_signals(previous)

    def _watch(self) -> None:
        while self._stop is None:
            waits: list[Any] = [self._wake_read]
            waits += [s.process.sentinel for s in self.shards if s.process is not None]
            pending = [s.restart_at for s in self.shards if s.restart_at is not None]
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            multiprocessing.connection.wait(waits, timeout)
            self._drain_wakeups()
            if self._hangup:
                self._hangup = False
                self._signal_all(signal.SIGHUP)
            for shard in self.shards:
                self._tend(shard)

    def _tend(self, shard: _Shard) -> None:
        now = time.monotonic()
        process = shard.process
        if process is not None and not process.is_alive() and self._stop is None:
            process.join()
            log.error(
                "shard %d (pid %s) exited with status %s: its leases are gone; restarting it",
                shard.index,
                process.pid,
                process.exitcode,
            )
            shard.process = None
            steady = now - shard.started_at >= STEADY
            shard.restart_at = now if steady else now + RESTART_AFTER
        if shard.process is None and shard.restart_at is not None and now >= shard.restart_at:
            self._start(shard)
            try:
                self._await_listening(shard, time.monotonic() + START_TIMEOUT)
            except ShardStartFailed as exc:
                log.error("%s; trying again in %g s", exc, RESTART_AFTER)
                if shard.process is not None and shard.process.is_alive():
                    shard.process.kill()
                shard.process = None
                shard.restart_at = time.monotonic() + RESTART_AFTER

    # -------------------------------------------------------- stopping

    def _stop_all(self) -> int:
        """SIGTERM every shard, once; each drains. Killed past the grace. The exit status."""
        live = [s.process for s in self.shards if s.process is not None and s.process.is_alive()]
        if live:
            log.info("stopping %d shard(s)", len(live))
        forwarded = self._stopped_twice
        for process in live:
            _send(process, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_grace + STOP_MARGIN
        for process in live:
            while process.is_alive() and time.monotonic() < deadline:
                process.join(0.1)
                self._drain_wakeups()
                if self._stopped_twice and not forwarded:
                    forwarded = True  # a second signal: cut the shards' drains short
                    for other in live:
                        _send(other, signal.SIGTERM)
            if process.is_alive():
                log.warning("shard (pid %s) still running after the grace: killed", process.pid)
                process.kill()
                process.join(5)
        log.info("stopped")
        if self._stopped_twice and self._stop is not None:
            return 128 + int(self._stop)
        return 0

    def _signal_all(self, signum: signal.Signals) -> None:
        for shard in self.shards:
            if shard.process is not None and shard.process.is_alive():
                _send(shard.process, signum)

    # -------------------------------------------------------- signals

    def _catch_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, self._on_signal)
        previous[-1] = signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        self._wake_read.close()
        self._wake_write.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if sig is signal.SIGHUP:
            self._hangup = True
        elif self._stop is None:
            log.info("%s received: stopping the shards", sig.name)
            self._stop = sig
        else:
            self._stopped_twice = True

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_read.recv(256):
                pass


@dataclass(frozen=True)
class _ShardReload:
    """Pickled into a shard: SIGHUP there reads the configuration again and takes its own
    share of it."""

    reload: Callable[[], Config]
    index: int
    rebound: tuple[Config, BoundPorts] | None = None
    """After a restart: the shard's configuration as planned, and the ports it took again."""

    def __call__(self) -> Config:
        return _reload_shard(self.reload, self.index, self.rebound)


def _bound_ports(listening: list[tuple[str, str, int, bool]]) -> BoundPorts:
    listeners = [Listener(p, port, tls) for p, _, port, tls in listening if p != METRICS]
    metrics = next((port for p, _, port, _ in listening if p == METRICS), None)
    return BoundPorts(tuple(listeners), metrics)


def _send(process: BaseProcess, signum: signal.Signals) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def supervise(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """``memlease serve`` with ``shards`` above 1: run the supervisor; the exit status."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        log_formatter(
            config.log_format, "%(asctime)s memlease supervisor %(levelname)s %(message)s"
        )
    )
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler])
    return Supervisor(config, reload).run()
