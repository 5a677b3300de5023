"""The arena map with many live leases: how long one map holds the event loop, and its size.

Each case fills an arena, leaves ``--leases`` (1,000,000) blocks live, then times
``Service.handle(ArenaMapRequest())`` (the whole server-side work: the map, then the reply
object) ``--repeat`` times, in thread CPU time (``time.thread_time``), so other work on a
shared machine inflates it less; and encodes the reply in each protocol for its size.

- small-32B: 1,000,000 live 32-byte leases with scattered holes (every sixth of 1.2 M freed)
  in a 64 MiB arena: one block order, cells of 16 KiB.
- mixed: 1,000,000 live leases of 32 B to 1 KiB and 80 of 1 KiB to 128 KiB (every one of the
  13 orders below a 256 KiB cell present, a sixth of all freed at random) in a 1 GiB arena:
  the case that took 130 ms when the map was made by scanning the unit column per order;
  with the per-cell counts the arena keeps, every case is O(cells).
- whole: one lease of the whole 64 MiB arena: the cheap end.

Run ``python -m benchmarks.arena_map`` (``--leases N`` for fewer; about 1.5 GB of memory for
the mixed case). The machine's 2 cores may be shared: repeat, and read the median.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from memlease_native import NATIVE
from memlease_network import NETWORK
from memlease_uuid import UUID

from memlease.core.arena import MAP_CELLS
from memlease.core.messages import ArenaMapReply, ArenaMapRequest
from memlease.core.service import Service


def small(leases: int) -> Service:
    service = Service.create(64 << 20, min_block=32)
    arena = service.table.arena
    extra = leases // 5
    offsets = [arena.alloc(32) for _ in range(leases + extra)]
    arena.free_many(offsets[:: (leases + extra) // extra])
    return service


def mixed(leases: int) -> Service:
    service = Service.create(1 << 30, min_block=32)
    arena = service.table.arena
    rng = random.Random(14)
    # Every order below a cell (32 B to 128 KiB): 10 blocks each of 1 KiB and up.
    sizes = [32 << rng.randrange(6) for _ in range(leases * 6 // 5 - 80)]
    sizes += [1024 << order for order in range(8) for _ in range(10)]
    offsets = [arena.alloc(n) for n in sizes]
    rng.shuffle(offsets)
    arena.free_many(offsets[: len(offsets) - leases])
    return service


def whole(leases: int) -> Service:
    service = Service.create(64 << 20, min_block=32)
    service.table.arena.alloc(64 << 20)
    return service


CASES: dict[str, Callable[[int], Service]] = {"small-32B": small, "mixed": mixed, "whole": whole}


def measure(name: str, leases: int, repeat: int) -> None:
    service = CASES[name](leases)
    arena = service.table.arena
    times = []
    reply = None
    for _ in range(repeat):
        start = time.thread_time()
        reply = service.handle(ArenaMapRequest(), 0.0)
        times.append(time.thread_time() - start)
    assert isinstance(reply, ArenaMapReply)
    sizes = {
        spec.name: len(spec.server_codec(1 << 20).encode_reply(reply))
        for spec in (NATIVE, NETWORK, UUID)
    }
    print(
        f"{name:<10} arena {arena.size >> 20:>5} MiB, {arena.live_blocks:>9,} live: "
        f"{len(reply.cells)} cells of {reply.cell_bytes} B; map "
        f"median {statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms "
        f"({repeat} runs); reply bytes {sizes}"
    )
    assert len(reply.cells) <= MAP_CELLS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", default=",".join(CASES), help="cases, comma-separated")
    args = parser.parse_args()
    for name in args.only.split(","):
        measure(name, args.leases, args.repeat)


if __name__ == "__main__":
    main()
