"""Micro-benchmarks of the sans-IO core: the arena, the lease table, memory per lease.

Times are CPU time of this process (``time.process_time_ns``), so that other work on a
shared machine does not inflate them; on an idle machine they match wall time.

Run ``python -m benchmarks.core`` (``--quick`` for a smaller run). Each figure also has a
function returning it, for ``memlease bench``.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from memlease.core.arena import BuddyArena
from memlease.core.leases import LeaseTable

GOAL_ALLOC_FREE_US = 5.0
GOAL_GRANT_EXPIRE_US = 15.0
GOAL_BYTES_PER_LEASE = 200.0


@dataclass(frozen=True)
class CoreFigures:
    """What one run measured."""

    alloc_free_pair_median_us: float
    live_blocks: int
    grant_expire_per_lease_us: float
    leases_timed: int
    bytes_per_lease: float
    """Every byte traced beyond the leased bytes (fixed bookkeeping included), per lease."""
    bytes_per_lease_growth: float
    """Bytes traced while granting, per lease: what one more lease costs."""
    leases_measured: int


def alloc_free_pair_median_us(
    live: int = 100_000, pairs: int = 200_000, batch: int = 1000, seed: int = 1
) -> float:
    """Median CPU time of one alloc + free, in microseconds, with ``live`` blocks allocated.

    Sizes are random from 1 to 256 bytes; each pair frees a random live block, so the live
    count and the fragmentation stay steady.
    """
    rng = random.Random(seed)
    arena = BuddyArena(live * 512, min_block=32)
    sizes = [rng.randint(1, 256) for _ in range(pairs + live)]
    blocks = [arena.alloc(sizes[i]) for i in range(live)]
    victims = [rng.randrange(live) for _ in range(pairs)]
    per_pair: list[float] = []
    alloc = arena.alloc
    free = arena.free
    clock = time.process_time_ns
    gc.disable()
    try:
        for start in range(0, pairs, batch):
            began = clock()
            for i in range(start, start + batch):
                victim = victims[i]
                free(blocks[victim])
                blocks[victim] = alloc(sizes[live + i])
            per_pair.append((clock() - began) / batch / 1000)
    finally:
        gc.enable()
    return statistics.median(per_pair)


def grant_expire_per_lease_us(leases: int = 200_000, seed: int = 2) -> float:
    """CPU time to grant ``leases`` leases (random ttls) and expire them all, per lease, in us."""
    rng = random.Random(seed)
    table = LeaseTable(BuddyArena(leases * 64), max_ttl_ms=60_000)
    ttls = [rng.randint(1, 60_000) for _ in range(leases)]
    grant = table.grant
    gc.disable()
    try:
        began = time.process_time_ns()
        for i in range(leases):
            grant(32, ttls[i], i / 1_000_000)
        while table.expire(100.0, 1000):
            pass
        elapsed = time.process_time_ns() - began
    finally:
        gc.enable()
    assert len(table) == 0 and table.expired == leases
    return elapsed / leases / 1000


def memory_per_lease_bytes(leases: int = 1_000_000, seed: int = 3) -> tuple[float, float]:
    """(all bytes traced beyond the leased bytes, bytes traced while granting), per lease.

    The arena is sized for ``leases`` leases of 32 bytes with 32-byte blocks, so its per-block
    bookkeeping counts in full; ttls are random so the expiry heap is a real heap.
    """
    rng = random.Random(seed)
    ttls = [rng.randint(1, 3_600_000) for _ in range(leases)]
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        table = LeaseTable(BuddyArena(leases * 32), max_ttl_ms=3_600_000)
        empty, _ = tracemalloc.get_traced_memory()
        for i in range(leases):
            table.grant(32, ttls[i], 0.0)
        full, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == leases
    leased = leases * 32
    return (full - base - leased) / leases, (full - empty) / leases


def measure(*, quick: bool = False) -> CoreFigures:
    """Every core figure; ``quick`` scales the runs down tenfold."""
    scale = 10 if quick else 1
    live = 100_000 // scale
    timed = 200_000 // scale
    measured = 1_000_000 // scale
    pair = alloc_free_pair_median_us(live=live, pairs=200_000 // scale)
    grant = grant_expire_per_lease_us(timed)
    total, growth = memory_per_lease_bytes(measured)
    return CoreFigures(pair, live, grant, timed, total, growth, measured)


def report(figures: CoreFigures) -> str:
    """The figures as lines of text, each against its goal."""

    def verdict(value: float, goal: float) -> str:
        return "ok" if value <= goal else "OVER GOAL"

    f = figures
    return "\n".join(
        [
            f"alloc+free pair, median at {f.live_blocks} live blocks: "
            f"{f.alloc_free_pair_median_us:.2f} us (goal <= {GOAL_ALLOC_FREE_US}) "
            f"{verdict(f.alloc_free_pair_median_us, GOAL_ALLOC_FREE_US)}",
            f"grant + expire per lease over {f.leases_timed} leases: "
            f"{f.grant_expire_per_lease_us:.2f} us (goal <= {GOAL_GRANT_EXPIRE_US}) "
            f"{verdict(f.grant_expire_per_lease_us, GOAL_GRANT_EXPIRE_US)}",
            f"memory per live lease at {f.leases_measured} leases, beyond the leased bytes: "
            f"{f.bytes_per_lease:.0f} B all told, {f.bytes_per_lease_growth:.0f} B per added "
            f"lease (goal <= {GOAL_BYTES_PER_LEASE:.0f}) "
            f"{verdict(f.bytes_per_lease, GOAL_BYTES_PER_LEASE)}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the core benchmarks and print the figures; 0, or 1 with --check and a goal missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.core", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="runs ten times smaller")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    figures = measure(quick=args.quick)
    if args.json:
        import json

        print(json.dumps(asdict(figures), indent=2))
    else:
        print(report(figures))
    missed = (
        figures.alloc_free_pair_median_us > GOAL_ALLOC_FREE_US
        or figures.grant_expire_per_lease_us > GOAL_GRANT_EXPIRE_US
        or figures.bytes_per_lease > GOAL_BYTES_PER_LEASE
    )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
