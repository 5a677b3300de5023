"""Run one workload against one target with several load processes; aggregate their results."""

from __future__ import annotations

import multiprocessing
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from memlease.bench.histogram import LatencyHistogram
from memlease.bench.worker import worker_main
from memlease.bench.workload import RUN_SLACK, SETUP_LIMIT, TargetSpec, WorkerResult, Workload
from memlease.client.blocking import Client
from memlease.core.errors import MemleaseError
from memlease.core.messages import LeaseId, ReleaseRequest

RELEASE_BATCH = 1000
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}
ProgressCallback = Callable[[int, float], None]
"""Called about ten times a second with (ops so far, seconds into the measured window)."""


class BenchError(MemleaseError):
    """A benchmark could not run (a server did not start, a load process failed to set up)."""


@dataclass
class RunResult:
    """One measured run of one case against one target."""

    target: str
    ops: int = 0
    elapsed: float = 0.0
    op_counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    bytes_sent: int = 0
    bytes_received: int = 0
    window_ops: int = 0
    window_histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def latency_ms(self, pct: float) -> float:
        return self.histogram.percentile(pct) / 1e6


def split_connections(connections: int, workers: int) -> list[list[int]]:
    """Connection ids dealt round-robin to ``workers`` processes (no process without one)."""
    workers = max(1, min(workers, connections))
    return [list(range(i, connections, workers)) for i in range(workers)]


def run_load(
    spec: TargetSpec,
    workload: Workload,
    *,
    workers: int,
    load_cpus: list[int] | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunResult:
    """Start the load processes, let them run the workload, and merge what they measured."""
    ctx = multiprocessing.get_context("spawn")
    servers = [replace(spec, host=h, port=p) for h, p in spec.fleet] or [spec]
    if workload.connections < len(servers):
        raise BenchError(f"{spec.label}: give at least one connection per server")
    # A whole number of load processes per server of a fleet.
    workers = -(-max(workers, len(servers)) // len(servers)) * len(servers)
    shares = split_connections(workload.connections, workers)
    go = ctx.Event()
    progress = ctx.Array("q", len(shares), lock=False)
    messages = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker_main,
            args=(
                slot,
                servers[slot % len(servers)],
                workload,
                share,
                load_cpus,
                go,
                progress,
                messages,
            ),
            daemon=True,
        )
        for slot, share in enumerate(shares)
    ]
    ready: dict[int, WorkerResult] = {}
    try:
        with _signals_held():
            for proc in procs:
                proc.start()
        ready.update(_gather(messages, procs, "ready", SETUP_LIMIT))
        failures = sorted({r.failure for r in ready.values() if r.failure})
        if len(ready) < len(procs) or failures:
            reason = "; ".join(failures) or "a load process died or timed out during setup"
            raise BenchError(f"{spec.label}: load setup failed: {reason}")
        go.set()
        started = time.monotonic()
        limit = workload.warmup + workload.duration + RUN_SLACK
        done: dict[int, WorkerResult] = {}

        def report_progress() -> None:
            if on_progress is not None:
                into = time.monotonic() - started - workload.warmup
                on_progress(sum(progress), max(0.0, into))

        while len(done) < len(procs):
            done.update(_gather(messages, procs, "done", 0.1, want=len(procs) - len(done)))
            report_progress()
            if time.monotonic() - started > limit or not any(p.is_alive() for p in procs):
                if len(done) < len(procs):
                    done.update(_gather(messages, procs, "done", 1.0))
                break
        if len(done) < len(procs):
            raise BenchError(f"{spec.label}: a load process died or hung during the run")
    except BaseException:
        # Interrupted, terminated or failed: the load stops now, not at the end of its run.
        # Setup reports still on their way name leases to release; they are read while the
        # processes live (a process killed mid-message would leave a reader waiting forever).
        if len(ready) < len(procs) and any(p.is_alive() for p in procs if p.pid is not None):
            ready.update(_gather(messages, procs, "ready", 1.0, want=len(procs) - len(ready)))
        # Set before any kill, never after: Event.set waits for every process asleep in
        # go.wait() to wake, and one killed there never would (the bench hung on SIGTERM).
        if not go.is_set():
            go.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        raise
    finally:
        for proc in procs:
            if proc.pid is not None:
                proc.join(timeout=5.0)
                if proc.is_alive():
                    proc.kill()
        if spec.kind == "memlease":
            release_leases(spec, [lease for r in ready.values() for lease in r.leases])
    return merge(spec.label, list(done.values()))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait (pending, not lost) while the load processes start: one that
    came in the middle of a start would leave a process half made. The processes inherit the
    mask, so they cannot be interrupted while they import either; worker_main then ignores
    SIGINT (Ctrl-C reaches this process, which stops them, instead of each printing a
    traceback) and lets SIGTERM in."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def release_leases(spec: TargetSpec, leases: list[LeaseId]) -> None:
    """Release the load's value leases, pipelined over one connection. One that is gone
    already is fine; a failure is reported on stderr (the leases' ttl ends them soon)."""
    if not leases:
        return
    try:
        with Client((spec.host, spec.port), spec.protocol, timeout=10.0) as client:
            for at in range(0, len(leases), RELEASE_BATCH):
                client.pipeline([ReleaseRequest(i) for i in leases[at : at + RELEASE_BATCH]])
    except MemleaseError as exc:
        print(
            f"memlease bench: could not release {len(leases)} value leases ({exc}); "
            "their ttl ends them within seconds of the run's end",
            file=sys.stderr,
        )


def _gather(
    messages: Any,
    procs: list[Any],
    kind: str,
    timeout: float,
    want: int | None = None,
) -> dict[int, WorkerResult]:
    """Messages of ``kind`` from the load processes, until ``want`` came, all processes
    ended, or ``timeout`` passed."""
    want = len(procs) if want is None else want
    got: dict[int, WorkerResult] = {}
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            msg_kind, slot, result = messages.get(timeout=min(left, 0.1))
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                break
            continue
        if msg_kind == kind or result.failure:
            got[slot] = result
    return got


def merge(label: str, parts: list[WorkerResult]) -> RunResult:
    failures = [p.failure for p in parts if p.failure]
    if failures:
        raise BenchError(f"{label}: {failures[0]}")
    run = RunResult(label)
    for part in parts:
        run.ops += part.ops
        run.elapsed = max(run.elapsed, part.elapsed)
        run.bytes_sent += part.bytes_sent
        run.bytes_received += part.bytes_received
        for name, count in part.op_counts.items():
            run.op_counts[name] = run.op_counts.get(name, 0) + count
        for name, count in part.errors.items():
            run.errors[name] = run.errors.get(name, 0) + count
        run.histogram.merge(LatencyHistogram(part.histogram))
        run.window_ops += part.window_ops
        if part.window_histogram:
            run.window_histogram.merge(LatencyHistogram(part.window_histogram))
    return run
