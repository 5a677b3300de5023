"""How ``serve --shards N`` divides one configuration: each shard's arena (an even share),
its ports (each listener's port + i) and its core, and the checks that the division works.
The supervisor that runs the shards is memlease.server.shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from memlease.core.errors import ConfigError
from memlease.protocol import ProtocolRegistry
from memlease.server.config import Config
from memlease.server.config_values import Listener

MAX_SHARDS = 256


def shard_configs(config: Config, ports: dict[int, list[Listener]] | None = None) -> list[Config]:
    """Each shard's configuration: a 1/N share of the arena, each listener's port + i (port 0
    stays 0: any free port), or the listeners in ``ports`` for the shards named there (the
    ports a shard bound before, for its restart)."""
    count = config.shards
    arena = config.arena_size // count // config.min_block * config.min_block
    configs = []
    for index in range(count):
        listeners = tuple(
            replace(listener, port=listener.port + index if listener.port else 0)
            for listener in config.listeners
        )
        if ports and index in ports:
            listeners = tuple(ports[index])
        configs.append(replace(config, shards=1, arena_size=arena, listeners=listeners))
    return configs


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
    if config.metrics_listen is not None:
        # Each shard would need a metrics port of its own: not built yet.
        raise fail(
            "metrics_listen",
            config.metrics_listen,
            f"not available with {label('shards')} = {count} yet: run one process, or leave "
            "metrics off",
        )
    share = config.arena_size // count // config.min_block * config.min_block
    if share < config.min_block:
        raise fail(
            "shards",
            count,
            f"{label('arena_size')} = {config.arena_size} B split {count} ways leaves no "
            f"block of {config.min_block} B for a shard",
        )
    taken: dict[int, str] = {}
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
                    f"{port}, {taken[port]}'s: space the listeners' ports at least {count} "
                    f"apart (e.g. --listen uuid=7413 alone)",
                )
            taken[port] = listener.protocol
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
