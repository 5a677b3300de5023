"""Memory back from the deadline, over the wire: how soon expired leases' room can be granted
again, how fast a mass expiry is reclaimed, and what the other clients see meanwhile.

Each run starts its own server (``python -m memlease.bench.serverproc``, loopback, a free
port, the ``network`` protocol) from a source tree given with ``--tree NAME=PATH`` (default:
this checkout), so two trees (say main before a change, extracted with ``git archive``, and
the change) are measured side by side in one invocation, interleaved, ``--repeat`` times.

- fill: ``--fill-leases`` (15,000) leases of 4 KiB fill an arena of exactly that size, all
  with their deadline on one instant. At ``--probe-ms`` after it (0, 10, 50 ms), half the
  arena is asked for in one pipeline (7,500 leases of 4 KiB): how many are granted, and how
  long the pipeline took (goal: all of them at 50 ms).
- storm: ``--storm-leases`` (500,000) leases of 32 B in a 64 MiB arena, all with their
  deadline on one instant, while ``--clients`` (4) other processes each run a blocking
  client, one ``get`` in flight, timing every request. Reported: seconds from the instant
  until every lease was expired (the server's ``expired`` count, polled every 10 ms from its
  own connection) and the rate; the server's CPU seconds in that span (/proc utime+stime);
  the other clients' p50/p99/max latency over requests sent in that span (goal p99 < 50 ms).
- burst: as storm, and at ``--burst-after`` seconds (2.0, and 0.1) after the instant, 60
  leases of 1 MiB are asked for in one pipeline: the issue's report (49 of 60 granted two
  seconds after 500,000 leases expired). Also how long the pipeline took, and the other
  clients' worst latency in the second around it.
- core-stall (no server; in a child process that imports the tree's core): the worst stall
  reclaim on demand can cause the server's one event loop: ``--stall-leases`` (2,097,152)
  leases of 32 B fill a 64 MiB arena and all expire, then one grant asks for its largest
  block (the whole arena at the default: all of them must be freed first), and one for 32 B
  (one is freed). Thread CPU time of each grant call.

The machine's cores may be shared with other work: repeat, and compare trees within one run.

Run ``python -m benchmarks.expiry_reclaim [--tree NAME=PATH]... [--repeat N]
[--storm-leases N] [--only fill,storm,burst,core-stall]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memlease.client.blocking import Client
from memlease.core.arena import BuddyArena
from memlease.core.errors import LeaseError
from memlease.core.leases import LeaseTable
from memlease.core.messages import Granted, IdKind, LeaseRequest, ReleaseRequest, Request

PROTOCOL = "network"
FILL_SIZE = 4096
STORM_SIZE = 32
STORM_ARENA = 64 * 1024 * 1024
BURST = (60, 1024 * 1024)
GRANT_BATCH = 5000
POLL = 0.01
HERE = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: tuple[str, int]

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(tree: Path, arena: int) -> Iterator[Server]:
    """A server from the source tree ``tree``, on a free loopback port."""
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'plugins'}")
    process = subprocess.Popen(
        [sys.executable, "-m", "memlease.bench.serverproc", "--arena", str(arena), PROTOCOL],
        stdout=subprocess.PIPE,
        env=env,
        cwd="/",
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"server from {tree} did not start")
        announced = json.loads(line)
        yield Server(process, (announced["host"], announced["ports"][PROTOCOL]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def grant_on_one_instant(client: Client, count: int, size: int, lead: float) -> tuple[int, float]:
    """Grant ``count`` leases of ``size`` bytes whose deadlines all fall on one instant, in
    pipelines of GRANT_BATCH; (how many were granted, the instant in time.monotonic()).

    The instant is ``lead`` seconds after the time granting is expected to take (from a
    first timed batch)."""
    started = time.monotonic()
    probe: list[Request] = [LeaseRequest(size, 1, IdKind.INT)] * min(count, GRANT_BATCH)
    client.pipeline(probe)  # 1 ms leases, freed during the sleep below
    rate = len(probe) / max(time.monotonic() - started, 1e-3)
    time.sleep(0.1)
    instant = time.monotonic() + count / rate * 1.5 + lead
    granted = 0
    while granted < count:
        ttl_ms = round((instant - time.monotonic()) * 1000)
        if ttl_ms < 200:
            break  # granting fell behind: report fewer leases than asked
        batch = [LeaseRequest(size, ttl_ms, IdKind.INT)] * min(GRANT_BATCH, count - granted)
        granted += sum(isinstance(r, Granted) for r in client.pipeline(batch))
    return granted, instant


def ask(client: Client, count: int, size: int) -> tuple[list[int], float]:
    """One pipeline of ``count`` leases of ``size``: (granted ids, seconds it took)."""
    began = time.monotonic()
    replies = client.pipeline([LeaseRequest(size, 60_000, IdKind.INT)] * count)
    took = time.monotonic() - began
    return [int(r.lease_id) for r in replies if isinstance(r, Granted)], took


# ---------------------------------------------------------------------- fill


def run_fill(tree: Path, leases: int, probe_ms: int) -> dict[str, Any]:
    with server(tree, leases * FILL_SIZE) as srv, Client(srv.address, PROTOCOL, timeout=60) as c:
        granted, instant = grant_on_one_instant(c, leases, FILL_SIZE, 0.3)
        time.sleep(max(0.0, instant + probe_ms / 1000 - time.monotonic()))
        asked = leases // 2
        ids, took = ask(c, asked, FILL_SIZE)
        return {
            "filled": granted,
            "probe_ms": probe_ms,
            "asked": asked,
            "granted": len(ids),
            "pipeline_ms": round(took * 1000, 1),
        }


# ---------------------------------------------------------------------- storm / burst


def _client_loop(address: tuple[str, int], start: float, stop: float, out: Any) -> None:
    """One other client: a get in flight from ``start`` to ``stop``; (sent at, seconds)."""
    with Client(address, PROTOCOL, timeout=60) as client:
        lease = client.lease(64, 600_000).lease_id
        client.set(lease, b"x" * 64)
        time.sleep(max(0.0, start - time.monotonic()))
        times: list[tuple[float, float]] = []
        while (sent := time.monotonic()) < stop:
            client.get(lease)
            times.append((sent, time.monotonic() - sent))
    out.put(times)


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def run_storm(
    tree: Path, leases: int, clients: int, burst_after: float | None = None
) -> dict[str, Any]:
    with server(tree, STORM_ARENA) as srv, Client(srv.address, PROTOCOL, timeout=60) as c:
        granted, instant = grant_on_one_instant(c, leases, STORM_SIZE, 2.5)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        stop = instant + 5.0
        procs = [
            ctx.Process(target=_client_loop, args=(srv.address, instant - 1.0, stop, out))
            for _ in range(clients)
        ]
        for proc in procs:
            proc.start()
        burst: dict[str, Any] = {}
        if burst_after is not None:

            def do_burst() -> None:
                with Client(srv.address, PROTOCOL, timeout=60) as b:
                    time.sleep(max(0.0, instant + burst_after - time.monotonic()))
                    burst["sent_at"] = time.monotonic() - instant
                    ids, took = ask(b, *BURST)
                    burst.update(granted=len(ids), pipeline_ms=round(took * 1000, 1))
                    b.pipeline([ReleaseRequest(i) for i in ids])

            burster = threading.Thread(target=do_burst)
            burster.start()
        expired_before = c.stats().expired
        time.sleep(max(0.0, instant - 0.02 - time.monotonic()))
        cpu_at_instant = srv.cpu_seconds()
        drained_at = ninety_nine_at = None
        while time.monotonic() < stop:
            expired = c.stats().expired - expired_before
            at = time.monotonic() - instant
            if ninety_nine_at is None and expired >= 0.99 * granted:
                ninety_nine_at = at
            if expired >= granted:
                drained_at = at
                break
            time.sleep(POLL)
        cpu = srv.cpu_seconds() - cpu_at_instant
        if burst_after is not None:
            burster.join()
        samples: list[tuple[float, float]] = []
        for _ in procs:
            samples.extend(out.get(timeout=30))
        for proc in procs:
            proc.join()
    end = instant + (drained_at if drained_at is not None else stop - instant)
    during = [s for sent, s in samples if instant <= sent <= end]
    figures: dict[str, Any] = {
        "leases": granted,
        "drained_s": None if drained_at is None else round(drained_at, 3),
        "99pct_s": None if ninety_nine_at is None else round(ninety_nine_at, 3),
        "rate_per_s": None if not drained_at else round(granted / drained_at),
        "server_cpu_s": round(cpu, 2),
        "requests_during": len(during),
        "p50_ms": round(_percentile(during, 50) * 1000, 2),
        "p99_ms": round(_percentile(during, 99) * 1000, 2),
        "max_ms": round(max(during, default=float("nan")) * 1000, 2),
    }
    if burst:
        sent = instant + burst["sent_at"]
        near = [s for t, s in samples if sent - 0.5 <= t <= sent + 0.5]
        figures["burst"] = {
            "after_s": burst_after,
            "granted": f"{burst['granted']} of {BURST[0]} x 1 MiB",
            "pipeline_ms": burst["pipeline_ms"],
            "others_max_ms_within_0.5s": round(max(near, default=float("nan")) * 1000, 2),
        }
    return figures


def core_stall(leases: int) -> dict[str, Any]:
    """Thread CPU time of a grant that must free every one of ``leases`` expired leases,
    and of one that must free one, in this process."""
    figures: dict[str, Any] = {"expired_leases": leases}
    for label in ("largest_block", "one_block"):
        table = LeaseTable(BuddyArena(leases * STORM_SIZE), max_ttl_ms=60_000)
        for _ in range(leases):
            table.grant(STORM_SIZE, 1000, 0.0)
        size = table.arena.max_block if label == "largest_block" else STORM_SIZE
        began = time.thread_time()
        try:
            table.grant(size, 1000, 2.0)
            outcome = "granted"
        except LeaseError as exc:
            outcome = type(exc).__name__
        took = time.thread_time() - began
        figures[label] = {
            "outcome": outcome,
            "freed": table.expired,
            "grant_ms": round(took * 1000, 1),
        }
        if table.expired > 1000:
            figures[label]["us_per_freed"] = round(took * 1e6 / table.expired, 3)
    return figures


def run_core_stall(tree: Path, leases: int) -> dict[str, Any]:
    """:func:`core_stall` in a child process that imports the core from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    child = subprocess.run(
        [sys.executable, __file__, "--core-stall-child", str(leases)],
        env=env,
        cwd="/",
        capture_output=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(child.stdout)
    return figures


def run_cases(tree: Path, args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each case's name and figures, for the server from ``tree``, as they are measured."""
    only = set(args.only.split(","))
    if "fill" in only:
        for probe in (int(p) for p in args.probe_ms.split(",")):
            yield "fill", run_fill(tree, args.fill_leases, probe)
    if "storm" in only:
        yield "storm", run_storm(tree, args.storm_leases, args.clients)
    if "burst" in only:
        for after in (float(a) for a in args.burst_after.split(",")):
            yield "burst", run_storm(tree, args.storm_leases, args.clients, after)
    if "core-stall" in only:
        yield "core-stall", run_core_stall(tree, args.stall_leases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.expiry_reclaim", description=__doc__
    )
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a source tree")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--fill-leases", type=int, default=15_000)
    parser.add_argument("--probe-ms", default="0,10,50")
    parser.add_argument("--storm-leases", type=int, default=500_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--burst-after", default="2.0,0.1")
    parser.add_argument("--stall-leases", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--only", default="fill,storm,burst")
    parser.add_argument("--core-stall-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.core_stall_child:
        print(json.dumps(core_stall(args.core_stall_child)))
        return 0
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this", str(HERE))]
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} load average {os.getloadavg()}", flush=True)
    for repeat in range(args.repeat):
        order = trees if repeat % 2 == 0 else trees[::-1]
        for name, path in order:
            for case, figures in run_cases(Path(path), args):
                line = {"tree": name, "repeat": repeat, "case": case, **figures}
                print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
