"""The expiry storm: a million leases expire at one instant while other clients are measured.

The leases are granted first, over one pipelined connection, each batch with the ttl that
puts its deadline on the same millisecond; then the measured load runs from a couple of
seconds before that instant to a few after. Batches overlapping the window that starts at
the instant are measured apart (goal: p99 below 50 ms), and the server's live lease count is
sampled to see how long the expiry task took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from memlease.bench.cases import Case
from memlease.bench.runner import ProgressCallback, RunResult, run_load
from memlease.bench.workload import TargetSpec, Workload
from memlease.client.blocking import Client
from memlease.core.messages import Granted, IdKind, LeaseRequest, Request

STORM_LEASE_SIZE = 32
GRANT_BATCH = 2000


@dataclass(frozen=True)
class StormTiming:
    """Seconds: of measured load before the instant (``lead``) and after it (``after``); the
    span after the instant measured apart (``window``); allowed for starting the load."""

    lead: float = 2.0
    after: float = 8.0
    window: float = 2.0
    spawn: float = 2.0


def storm_case(leases: int, warmup: float) -> Case:
    load = Workload(connections=4, depth=1, duration=5.0, warmup=warmup)
    return Case(
        "expiry-storm",
        load,
        None,
        f"{leases:,} leases expire at one instant; 4 conns, one request in flight each",
    )


def _grant(client: Client, count: int, ttl_ms: int, kind: IdKind) -> int:
    requests: list[Request] = [LeaseRequest(STORM_LEASE_SIZE, ttl_ms, kind)] * count
    return sum(isinstance(r, Granted) for r in client.pipeline(requests))


def run_storm(
    spec: TargetSpec,
    case: Case,
    leases: int,
    *,
    workers: int,
    load_cpus: list[int] | None,
    on_progress: ProgressCallback | None = None,
    timing: StormTiming = StormTiming(),
) -> tuple[RunResult, RunResult, dict[str, Any]]:
    """(the whole run, the batches during the expiry window, notes for the report)."""
    lead, spawn = timing.lead, timing.spawn
    with Client((spec.host, spec.port), spec.protocol, timeout=60.0) as client:
        kind = client.protocol.id_kind
        started = time.monotonic()
        calibration = min(leases, 10_000)
        # Calibration leases expire at once, so that they are gone before the storm's count.
        for _ in range(calibration // GRANT_BATCH):
            _grant(client, GRANT_BATCH, 1, kind)
        rate = max(1.0, calibration / (time.monotonic() - started))
        instant = time.monotonic() + leases / (0.6 * rate) + spawn + lead
        granted = 0
        late = False
        grant_started = time.monotonic()
        while granted < leases:
            ttl_ms = round((instant - time.monotonic()) * 1000)
            if ttl_ms < 1000 * (spawn + lead) / 2:
                late = True  # granting was slower than calibrated; the rest would miss
                break
            count = min(GRANT_BATCH, leases - granted)
            granted += _grant(client, count, ttl_ms, kind)
        grant_seconds = time.monotonic() - grant_started
        time.sleep(0.1)  # the expiry task frees the calibration leases within a few ms
        before = client.stats()
        samples: list[tuple[float, int]] = []

        def watch(ops: int, into: float) -> None:
            now = time.monotonic()
            if now >= instant - 0.2 and (not samples or now - instant - samples[-1][0] > 0.1):
                samples.append((round(now - instant, 3), client.stats().live_leases))
            if on_progress is not None:
                on_progress(ops, into)

        left = instant - time.monotonic()
        workload = replace(
            case.workload,
            duration=max(1.0, left - case.workload.warmup - spawn / 2 + timing.after),
            window=(instant, instant + timing.window),
        )
        whole = run_load(spec, workload, workers=workers, load_cpus=load_cpus, on_progress=watch)
        after = client.stats()
    window = RunResult(
        f"{spec.label} during expiry",
        ops=whole.window_ops,
        elapsed=timing.window,
        histogram=whole.window_histogram,
    )
    threshold = max(1, granted // 100)
    drained = next((t for t, live in samples if t >= 0 and live < threshold), None)
    notes = {
        "leases_asked": leases,
        "leases_granted": granted,
        "granting_fell_behind": late,
        "grant_seconds": round(grant_seconds, 2),
        "live_leases_before": before.live_leases,
        "expired_during_run": after.expired - before.expired,
        "seconds_until_99pct_expired": drained,
        "p99_ms_during_expiry": round(window.latency_ms(99), 3),
        "goal_p99_ms": 50,
    }
    return whole, window, notes
