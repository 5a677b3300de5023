"""The most memory a server of a configuration can hold resident, part by part, and the
check at start that it fits in the machine: the arena, the bookkeeping of a lease on each of
its smallest blocks, the connections' memory budget, the connections themselves and the
interpreter (docs/security.md, "Worst-case memory")."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from memlease.core.errors import ConfigError
from memlease.server.config import Config, largest_block
from memlease.units import format_size

# What `memlease serve` holds resident beyond the arena and limits.connection_memory, as
# measured by `python -m benchmarks.memory_at_start` (CPython 3.11, Linux x86-64, glibc;
# the figures measured, then rounded up), for the worst case checked at start.
BASELINE_BYTES = 40 * 1024 * 1024
"""The interpreter, trio, the protocols and the log thread: 34 MiB resident with a 1 MiB
arena and one connection."""
LEASE_BYTES = 400
"""What one more live lease adds to the resident set, at most: its entries in the id maps,
the slot columns and the deadline order. Filling arenas of 16 to 96 MiB with 0.5M to 3M
leases of 32 B measured 322-354 B with UUID ids and 198-231 B with int ids (the id maps'
dicts are fuller or emptier between two resizes); 400 B leaves a margin."""
WATCH_BYTES = 300
"""One watch (limits.max_watches counts them): 182-222 B measured by
``python -m benchmarks.lease_semantics``; 300 B leaves a margin."""
BOUND_BYTES = 150
"""What binding a lease to its connection adds: 94-135 B measured by
``python -m benchmarks.lease_semantics``. Every lease may be bound."""
CONNECTION_BYTES = 8 * 1024
"""An idle connection, beyond the budget's buffers: 6.0-7.4 KiB measured with 100 to 1000
open."""


@dataclass(frozen=True)
class WorstCaseMemory:
    """The most memory a server of a configuration can hold resident, in bytes, by part."""

    arena: int
    blocks: int
    """The arena's smallest blocks: the most leases it can hold at once."""
    bytes_per_block: int
    """The arena's own columns for a block plus the bookkeeping of a lease on it."""
    connection_memory: int
    connections: int
    watches: int
    baseline: int

    @property
    def bookkeeping(self) -> int:
        return self.blocks * self.bytes_per_block

    @property
    def total(self) -> int:
        parts = (
            self.arena,
            self.bookkeeping,
            self.connection_memory,
            self.connections,
            self.watches,
        )
        return sum(parts) + self.baseline


def worst_case_memory(config: Config) -> WorstCaseMemory:
    """The worst case of ``config``: the arena; one lease on each of its smallest blocks
    (more leases than free blocks cost: a full table is the most bookkeeping); every
    connection open; all of limits.connection_memory in use; the interpreter."""
    blocks = config.arena_size // config.min_block
    # memlease.core.arena.BuddyArena: a byte of order and the bytes asked, 4 or 8, per block.
    arena_columns = 1 + (4 if largest_block(config) < 2**32 else 8)
    return WorstCaseMemory(
        arena=config.arena_size,
        blocks=blocks,
        bytes_per_block=arena_columns + LEASE_BYTES + BOUND_BYTES,
        connection_memory=config.connection_memory,
        connections=config.max_connections * CONNECTION_BYTES,
        watches=config.max_watches * WATCH_BYTES,
        baseline=BASELINE_BYTES,
    )


def check_memory(
    config: Config,
    label: Callable[[str], str],
    fail: Callable[[str, object, str], ConfigError],
) -> None:
    """Refuse ``config`` (a ConfigError from ``fail``, named after the largest part) when its
    worst case is more than this machine's memory."""
    memory = _physical_memory()
    worst = worst_case_memory(config)
    if memory is None or worst.total <= memory:
        return
    # Named after the largest part, with what would shrink it.
    parts = {
        "arena_size": (worst.arena, f"lower {label('arena_size')}"),
        "min_block": (
            worst.bookkeeping,
            f"raise {label('min_block')} (fewer, larger blocks: fewer leases) or lower "
            f"{label('arena_size')}",
        ),
        "connection_memory": (worst.connection_memory, f"lower {label('connection_memory')}"),
        "max_connections": (worst.connections, f"lower {label('max_connections')}"),
        "max_watches": (worst.watches, f"lower {label('max_watches')}"),
    }
    name = max(parts, key=lambda key: parts[key][0])
    raise fail(
        name,
        getattr(config, name),
        f"the worst case, {_about(worst.total)} (arena {_about(worst.arena)} + leases' "
        f"bookkeeping {_about(worst.bookkeeping)}, {worst.bytes_per_block} B for each of "
        f"{worst.blocks} blocks of {config.min_block} B + {label('connection_memory')} "
        f"{_about(worst.connection_memory)} + {config.max_connections} connections at "
        f"{CONNECTION_BYTES // 1024} KiB + {label('max_watches')} {_about(worst.watches)} + "
        f"{_about(worst.baseline)} for the interpreter), is "
        f"more than this machine's memory ({_about(memory)}): {parts[name][1]}",
    )


def _about(n: int) -> str:
    """``n`` bytes in the largest binary unit it reaches, to a tenth: "23.9 GiB"."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return format_size(n) if n % factor == 0 else f"{n / factor:.1f} {unit}"
    return f"{n} B"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
