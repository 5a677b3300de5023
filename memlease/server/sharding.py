"""How ``serve --shards N`` divides one configuration: each shard's arena (an even share),
its ports (each listener's port + i, and the metrics port + i) and its core, and the checks
that the division works. The supervisor that runs the shards is memlease.server.shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from memlease.client.handle import format_server
from memlease.core.errors import ConfigError
from memlease.protocol import ProtocolRegistry
from memlease.server.config import Config
from memlease.server.config_values import Listener, parse_metrics_address

MAX_SHARDS = 256


@dataclass(frozen=True)
class BoundPorts:
    """The ports a shard bound, which its restart takes again: where the configuration
    says port 0 the kernel chose them, and the fleet's clients and scrapers know them now."""

    listeners: tuple[Listener, ...]
    metrics: int | None = None


def shard_configs(config: Config, bound: dict[int, BoundPorts] | None = None) -> list[Config]:
    """Each shard's configuration: a 1/N share of the arena, each listener's port + i and the
    metrics port + i (port 0 stays 0: any free port), or the ports in ``bound`` for the
    shards named there (the ports a shard bound before, for its restart)."""
    count = config.shards
    arena = config.arena_size // count // config.min_block * config.min_block
    configs = []
    for index in range(count):
        listeners = tuple(
            replace(listener, port=listener.port + index if listener.port else 0)
            for listener in config.listeners
        )
        metrics = None
        if bound and index in bound:
            listeners, metrics = bound[index].listeners, bound[index].metrics
        configs.append(
            replace(
                config,
                shards=1,
                arena_size=arena,
                listeners=listeners,
                metrics_listen=_shard_metrics(config.metrics_listen, index, metrics),
            )
        )
    return configs


def _shard_metrics(listen: str | None, index: int, bound: int | None) -> str | None:
    """Shard ``index``'s ``metrics.listen``: the port + index (0 stays 0), or ``bound``."""
    if listen is None:
        return None
    host, port = parse_metrics_address(listen)
    if bound is not None:
        port = bound
    elif port:
        port += index
    return format_server(host, port)


def validate_shards(
    config: Config,
    label: Callable[[str], str],
    fail: Callable[[str, object, str], ConfigError],
    registry: ProtocolRegistry | None,
) -> None:
    """Refuse a ``shards`` value the configuration cannot be split into: ConfigError."""
    from memlease.server.config import validate
    from memlease.server.worst_case import _physical_memory, worst_case_memory

    count = config.shards
    if not 1 <= count <= MAX_SHARDS:
        raise fail("shards", count, f"use 1 to {MAX_SHARDS} server processes")
    share = config.arena_size // count // config.min_block * config.min_block
    if share < config.min_block:
        raise fail(
            "shards",
            count,
            f"{label('arena_size')} = {config.arena_size} B split {count} ways leaves no "
            f"block of {config.min_block} B for a shard",
        )
    taken: dict[int, Listener] = {}
    for listener in config.listeners:
        if not listener.port:
            continue
        last = listener.port + count - 1
        if last > 65535:
            raise fail("shards", count, f"{listener.protocol}'s shards would need port {last}")
        for port in range(listener.port, last + 1):
            if port in taken:
                raise fail(
                    "shards",
                    count,
                    f"shard {port - listener.port} of {listener.protocol} would take port "
                    f"{port}, {taken[port].protocol}'s: space the listeners' ports at least "
                    f"{count} apart (e.g. --listen uuid=7413 alone)",
                )
            taken[port] = listener
    _check_metrics_ports(config, taken, label, fail)
    shards = shard_configs(config)
    try:
        validate(shards[0], registry=registry)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (each of the {count} shards has {share} B of arena)") from None
    memory = _physical_memory()
    worst = sum(worst_case_memory(shard).total for shard in shards)
    if memory is not None and worst > memory:
        raise fail(
            "shards",
            count,
            f"the worst case of {count} shards together, {worst >> 20} MiB (each with its "
            f"own {label('connection_memory')} and connections), is more than this "
            f"machine's memory ({memory >> 20} MiB): lower {label('shards')}, "
            f"{label('connection_memory')} or {label('max_connections')}",
        )


def _check_metrics_ports(
    config: Config,
    taken: dict[int, Listener],
    label: Callable[[str], str],
    fail: Callable[[str, object, str], ConfigError],
) -> None:
    """Refuse a metrics port whose shards' range (port + 0..N-1) passes 65535 or meets a
    lease listener's range (``taken``: port -> the listener whose shard takes it)."""
    if config.metrics_listen is None:
        return
    first = parse_metrics_address(config.metrics_listen)[1]
    if not first:
        return
    count = config.shards
    last = first + count - 1
    if last > 65535:
        raise fail(
            "metrics_listen",
            config.metrics_listen,
            f"shard {count - 1}'s metrics would need port {last}, past 65535: give a port "
            f"at most {65536 - count}, or 0 (any free port)",
        )
    for port in range(first, last + 1):
        if port in taken:
            listener = taken[port]
            raise fail(
                "metrics_listen",
                config.metrics_listen,
                f"shard {port - first}'s metrics would take port {port}, {listener.protocol} "
                f"shard {port - listener.port}'s: shard i takes {label('metrics_listen')}'s "
                f"port + i as it takes each listener's port + i, so space them at least "
                f"{count} apart",
            )


def cores_for(count: int) -> list[set[int] | None]:
    """The core each shard is pinned to: its own, where this process may run on at least
    ``count`` cores; else none (the scheduler places them)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return [None] * count
    if len(cores) < count:
        return [None] * count
    return [{cores[index]} for index in range(count)]
