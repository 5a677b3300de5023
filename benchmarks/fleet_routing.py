"""What routing by handle costs: gets of one lease on one server, through the direct client
and through a fleet of that one server, in alternating rounds of the same run.

    python -m benchmarks.fleet_routing [--rounds 7] [--ops 5000] [--value-size 64]

For an instruction count, which the machine's other load does not change, run one side
alone under callgrind, with a server started apart, at two counts of gets:

    memlease serve --listen uuid=7499 &
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \
        python -m benchmarks.fleet_routing --server 127.0.0.1:7499 --only fleet --ops 2000
    (the same with --only direct, and each with --ops 0: the difference over 2000 is the
    instructions per get)

Otherwise it prints, for the blocking and the trio clients, the median over the rounds of each one's
throughput (one request in flight, so the round trip dominates) and of the client's own CPU
time per get (``time.process_time``: this process only, so the server's share is left out),
and the fleet's figures as a ratio of the direct client's. The server runs in a child process
(memlease.bench.serverproc) on loopback.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

import memlease
from memlease.bench.servers import start_memlease

Round = Callable[[int], None]
AsyncRound = Callable[[int], Awaitable[None]]


def _measure(run: Round, ops: int) -> tuple[float, float]:
    """(ops per second, client CPU microseconds per op) of ``run(ops)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(ops)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return ops / wall, cpu / ops * 1e6


def _compare(name: str, direct: Round, fleet: Round, rounds: int, ops: int) -> None:
    figures: dict[str, list[tuple[float, float]]] = {"direct": [], "fleet": []}
    direct(ops // 10)  # warm up both
    fleet(ops // 10)
    for turn in range(rounds):
        order = [("direct", direct), ("fleet", fleet)]
        for label, run in order if turn % 2 == 0 else order[::-1]:
            figures[label].append(_measure(run, ops))
    _report(name, figures)


async def _compare_async(
    name: str, direct: AsyncRound, fleet: AsyncRound, rounds: int, ops: int
) -> None:
    figures: dict[str, list[tuple[float, float]]] = {"direct": [], "fleet": []}
    await direct(ops // 10)
    await fleet(ops // 10)
    for turn in range(rounds):
        order = [("direct", direct), ("fleet", fleet)]
        for label, run in order if turn % 2 == 0 else order[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            await run(ops)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            figures[label].append((ops / wall, cpu / ops * 1e6))
    _report(name, figures)


def _report(name: str, figures: dict[str, list[tuple[float, float]]]) -> None:
    rate = {k: statistics.median(r for r, _ in v) for k, v in figures.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in figures.items()}
    print(
        f"{name:<8} direct {rate['direct']:>9,.0f} gets/s {cpu['direct']:6.1f} us CPU/get | "
        f"fleet {rate['fleet']:>9,.0f} gets/s {cpu['fleet']:6.1f} us CPU/get | "
        f"fleet/direct: throughput {rate['fleet'] / rate['direct']:.3f}, "
        f"client CPU {cpu['fleet'] / cpu['direct']:.3f}"
    )


def blocking(address: str, rounds: int, ops: int, size: int) -> None:
    with memlease.Client(address, "uuid") as client, memlease.Fleet([address]) as fleet:
        lease_id = client.lease(size, 3_600_000).lease_id
        handle = fleet.lease(size, 3_600_000)

        def direct(n: int) -> None:
            get = client.get
            for _ in range(n):
                get(lease_id)

        def routed(n: int) -> None:
            get = fleet.get
            for _ in range(n):
                get(handle)

        _compare("blocking", direct, routed, rounds, ops)


def trio_clients(address: str, rounds: int, ops: int, size: int) -> None:
    async def main() -> None:
        async with await memlease.connect(address, "uuid") as client, await memlease.open_fleet(
            [address]
        ) as fleet:
            lease_id = (await client.lease(size, 3_600_000)).lease_id
            handle = await fleet.lease(size, 3_600_000)

            async def direct(n: int) -> None:
                for _ in range(n):
                    await client.get(lease_id)

            async def routed(n: int) -> None:
                for _ in range(n):
                    await fleet.get(handle)

            await _compare_async("trio", direct, routed, rounds, ops)

    trio.run(main)


def only(address: str, side: str, ops: int, size: int) -> None:
    """``ops`` gets through one side alone (the blocking client), for callgrind."""
    with memlease.Client(address, "uuid") as client, memlease.Fleet([address]) as fleet:
        lease_id = client.lease(size, 3_600_000).lease_id
        handle = fleet.lease(size, 3_600_000)
        client.get(lease_id)
        fleet.get(handle)
        if side == "direct":
            for _ in range(ops):
                client.get(lease_id)
        else:
            for _ in range(ops):
                fleet.get(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--server", help="a running uuid server (default: start one)")
    parser.add_argument("--only", choices=("direct", "fleet"), help="one side, untimed")
    args = parser.parse_args()
    if args.server and args.only:
        only(args.server, args.only, args.ops, args.value_size)
        return
    server = start_memlease(["uuid"], arena=None, config=None, cpus=None)
    try:
        address = f"{server.host}:{server.ports['uuid']}"
        blocking(address, args.rounds, args.ops, args.value_size)
        trio_clients(address, args.rounds, args.ops, args.value_size)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
