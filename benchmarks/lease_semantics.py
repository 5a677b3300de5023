"""What versions, bound leases and watches cost, and how soon notices come, measured.

1. **Memory** (tracemalloc, in-process, like ``benchmarks.core``): bytes a bound lease adds
   beyond a plain one, and bytes one watch adds, at ``--leases`` leases.
2. **Notice lag** over the wire: a ``memlease serve`` subprocess on loopback; one client
   leases ``--watched`` leases that all end at one instant, watches them on one connection,
   and records, for each notice, how long after the deadline it came (wall clock of the
   client; server and client share the machine's clock). Also the lag of one lone notice,
   repeated ``--lone`` times.
3. **Bound release**: a client holds a bound lease, another polls it; the time from the
   owner's close to the first "not found", repeated ``--closes`` times.

Run ``python -m benchmarks.lease_semantics [--json]``. The figures depend on the machine and
its load: compare them within one run, and say what else ran.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from dataclasses import asdict, dataclass

from benchmarks.memory_at_start import server
from memlease import Client, LeaseNotFound
from memlease.core.arena import BuddyArena
from memlease.core.leases import LeaseTable
from memlease.core.sessions import Session


@dataclass(frozen=True)
class Figures:
    leases: int
    bound_extra_bytes: float
    """What binding a lease to a session adds, per lease."""
    watch_bytes: float
    """What one watch adds (one session watching one more lease)."""
    watched: int
    notice_lag_p50_ms: float
    notice_lag_p99_ms: float
    notice_lag_max_ms: float
    """From the deadline to each notice's arrival, over ``watched`` leases ending at once."""
    lone_notice_lag_max_ms: float
    bound_release_max_ms: float
    """From the owner's close to its bound lease being gone, the worst of the repeats."""


def _traced(build: object) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        kept = build()  # type: ignore[operator]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def memory(leases: int) -> tuple[float, float]:
    """(extra bytes per bound lease, bytes per watch) at ``leases`` leases."""

    def plain() -> LeaseTable:
        table = LeaseTable(BuddyArena(leases * 32), max_ttl_ms=3_600_000)
        for _ in range(leases):
            table.grant(32, 3_600_000, 0.0)
        return table

    def bound() -> tuple[LeaseTable, Session]:
        table = LeaseTable(BuddyArena(leases * 32), max_ttl_ms=3_600_000)
        session = Session()
        for _ in range(leases):
            table.grant(32, 3_600_000, 0.0, owner=session)
        return table, session

    plain_bytes = _traced(plain)
    bound_bytes = _traced(bound)

    def watched() -> Session:
        watcher = Session()
        table.watch(all_ids, watcher, 0.0)
        return watcher

    table = LeaseTable(BuddyArena(leases * 32), max_ttl_ms=3_600_000)
    all_ids = [table.grant(32, 3_600_000, 0.0) for _ in range(leases)]
    watch_bytes = _traced(watched)
    return (bound_bytes - plain_bytes) / leases, watch_bytes / leases


def notice_lag(watched: int, lone: int) -> tuple[list[float], list[float]]:
    """(lags of ``watched`` notices of leases ending together, lags of lone notices), ms."""
    with (
        server("network", 64 * 1024 * 1024) as (_, port),
        Client(("127.0.0.1", port), "network") as client,
    ):
        ttl_ms = 2000
        ids = []
        # Each lease's deadline as the client knows it: when its batch was sent, plus the
        # ttl. The server's is a little later, so the lags are upper bounds.
        deadline_of = {}
        for start in range(0, watched, 10_000):
            count = min(10_000, watched - start)
            sent = time.monotonic()
            batch = [g.lease_id for g in client.lease_many(count, 32, ttl_ms)]
            deadline_of.update(dict.fromkeys(batch, sent + ttl_ms / 1000))
            ids += batch
        for start in range(0, watched, 10_000):
            client.watch(ids[start : start + 10_000])
        lags = []
        while len(lags) < watched:
            notice = client.next_notice(timeout=10)
            if notice is None:
                raise RuntimeError(f"only {len(lags)} of {watched} notices came")
            lags.append((time.monotonic() - deadline_of[notice.lease_id]) * 1000)
        lone_lags = []
        for _ in range(lone):
            began = time.monotonic()
            lease_id = client.lease(32, 100).lease_id
            client.watch(lease_id)
            if client.next_notice(timeout=5) is None:
                raise RuntimeError("a lone notice did not come")
            lone_lags.append((time.monotonic() - began - 0.1) * 1000)
    return lags, lone_lags


def bound_release(closes: int) -> list[float]:
    """Milliseconds from a bound lease's owner closing to the lease being gone."""
    times = []
    with (
        server("network", 8 * 1024 * 1024) as (_, port),
        Client(("127.0.0.1", port), "network") as poller,
    ):
        for _ in range(closes):
            owner = Client(("127.0.0.1", port), "network")
            lease_id = owner.lease(32, 60_000, bound=True).lease_id
            owner.close()
            closed = time.monotonic()
            while True:
                try:
                    poller.stat(lease_id)
                except LeaseNotFound:
                    break
            times.append((time.monotonic() - closed) * 1000)
    return times


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=200_000)
    parser.add_argument("--watched", type=int, default=20_000)
    parser.add_argument("--lone", type=int, default=20)
    parser.add_argument("--closes", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bound_extra, watch_bytes = memory(args.leases)
    lags, lone = notice_lag(args.watched, args.lone)
    releases = bound_release(args.closes)
    figures = Figures(
        leases=args.leases,
        bound_extra_bytes=round(bound_extra, 1),
        watch_bytes=round(watch_bytes, 1),
        watched=args.watched,
        notice_lag_p50_ms=round(statistics.median(lags), 1),
        notice_lag_p99_ms=round(_percentile(lags, 0.99), 1),
        notice_lag_max_ms=round(max(lags), 1),
        lone_notice_lag_max_ms=round(max(lone), 1),
        bound_release_max_ms=round(max(releases), 2),
    )
    if args.json:
        print(json.dumps(asdict(figures)))
        return
    print(f"a bound lease costs {figures.bound_extra_bytes} B more than a plain one")
    print(f"a watch costs {figures.watch_bytes} B ({args.leases} leases watched by one connection)")
    print(
        f"{args.watched} watched leases ending at once: notices {figures.notice_lag_p50_ms} ms "
        f"after the deadline at the median, {figures.notice_lag_p99_ms} ms at p99, "
        f"{figures.notice_lag_max_ms} ms for the last"
    )
    print(f"a lone notice: at most {figures.lone_notice_lag_max_ms} ms after its deadline")
    print(
        f"a bound lease gone at most {figures.bound_release_max_ms} ms after its owner closed "
        f"({args.closes} tries)"
    )


if __name__ == "__main__":
    main()
