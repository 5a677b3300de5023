"""`memlease bench`: its arguments, and running the cases it names against each target."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from memlease.bench.cases import CASE_NAMES, Case, suite_cases
from memlease.bench.report import CaseResult, print_table, to_json, write_report
from memlease.bench.runner import BenchError, run_load
from memlease.bench.servers import PEERS, RunningServer, peer_installed, start_memlease, start_peer
from memlease.bench.storm import run_storm, storm_case
from memlease.bench.workload import TargetSpec, Workload, parse_mix
from memlease.client.connecting import parse_address
from memlease.core.errors import MemleaseError
from memlease.units import parse_duration, parse_size

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``memlease bench`` (also ``python -m memlease.bench``)."""
    what = parser.add_argument_group("what to run")
    what.add_argument("--suite", action="store_true", help="the four judged cases")
    what.add_argument("--case", choices=CASE_NAMES, help="one named case")
    what.add_argument("--compare", default="", help="peers to run too: memcached,redis")
    what.add_argument("--repeat", type=int, default=1, help="runs per case and target; median")
    what.add_argument(
        "--storm-leases", type=int, default=1_000_000, help="leases of --case expiry-storm"
    )
    load = parser.add_argument_group("the load (ignored by --suite and --case)")
    load.add_argument("--connections", "-c", type=int, default=4)
    load.add_argument("--depth", "-d", type=int, default=1, help="requests in flight per conn")
    load.add_argument("--value-size", default="64", help="bytes per value, e.g. 64 or 512KiB")
    load.add_argument("--mix", default="get=1,set=1", help="op weights: get,set,read,write,lease")
    load.add_argument("--conn-per-request", action="store_true", help="as the original client")
    load.add_argument("--lease-ttl", default="1s", help="ttl of the leases `lease` ops take")
    load.add_argument("--duration", default="5s", help="measured time per run")
    load.add_argument("--warmup", default="500ms", help="unmeasured time before each run")
    load.add_argument("--workers", type=int, default=0, help="load processes (0: one per core)")
    server = parser.add_argument_group("the server")
    server.add_argument("--server", metavar="HOST:PORT", help="a running server (default: start)")
    server.add_argument(
        "--servers",
        metavar="A,B,...",
        help="a fleet (e.g. serve --shards N): one more target, connections spread over them",
    )
    server.add_argument("--protocol", default="native", help="memlease protocol to speak")
    server.add_argument("--peer-threads", type=int, default=1, help="memcached's -t")
    server.add_argument("--config", help="config of the server bench starts (ports ignored)")
    server.add_argument("--arena", help="arena size of the server bench starts")
    server.add_argument("--pin", action="store_true", help="servers on core 0, load on the rest")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the results as JSON")
    out.add_argument("--report", type=Path, metavar="PATH", help="write a markdown report")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--tamper-expected", action="store_true", help=argparse.SUPPRESS)


def _cases(args: argparse.Namespace) -> list[Case]:
    duration = parse_duration(args.duration)
    warmup = parse_duration(args.warmup)
    if args.suite:
        return suite_cases(duration, warmup)
    if args.case == "expiry-storm":
        return [storm_case(args.storm_leases, warmup)]
    if args.case:
        return [c for c in suite_cases(duration, warmup) if c.name == args.case]
    workload = Workload(
        connections=args.connections,
        depth=args.depth,
        value_size=parse_size(args.value_size),
        mix=parse_mix(args.mix),
        duration=duration,
        warmup=warmup,
        conn_per_request=args.conn_per_request,
        lease_ttl_ms=max(1, round(parse_duration(args.lease_ttl) * 1000)),
    )
    return [Case("custom", workload)]


def _cpus(pin: bool, console: Console) -> tuple[list[int] | None, list[int] | None]:
    """(server cpus, load cpus) for --pin; (None, None) when not pinning."""
    if not pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        console.print("[yellow]--pin needs two cores; running unpinned[/yellow]")
        return None, None
    return cpus[:1], cpus[1:]


def _peers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in PEERS:
            raise BenchError(f"unknown peer {name!r} for --compare (known: {', '.join(PEERS)})")
    return names


def run(args: argparse.Namespace) -> int:
    """Run ``memlease bench``; the exit status is 1 when a run reported errors."""
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console = Console(stderr=args.json, width=120)
    try:
        results = _run(args, console)
    except (MemleaseError, OSError) as exc:
        print(f"memlease bench: {exc}", file=sys.stderr)
        return 1
    settings = {
        "repeat": args.repeat,
        "pin": args.pin,
        "protocol": args.protocol,
        "server": args.server or "started by bench",
    }
    if args.json:
        print(json.dumps(to_json(results, settings), indent=2))
    else:
        print_table(results, console)
    if args.report:
        image = write_report(args.report, results, settings)
        console.print(f"report: {args.report}" + (f" and {image}" if image else ""))
    failed = any(run.error_count for r in results for runs in r.runs.values() for run in runs)
    return 1 if failed else 0


def _run(args: argparse.Namespace, console: Console) -> list[CaseResult]:
    cases = _cases(args)
    peers = _peers(args.compare)
    if args.repeat < 1:
        raise BenchError("--repeat must be at least 1")
    server_cpus, load_cpus = _cpus(args.pin, console)
    workers = args.workers or len(load_cpus or os.sched_getaffinity(0))
    subject = f"memlease/{args.protocol}"
    results = [CaseResult(case, subject=subject) for case in cases]
    with ExitStack() as stack:
        targets: dict[str, TargetSpec] = {}
        if args.server:
            host, port = parse_address(args.server)
            targets[subject] = TargetSpec("memlease", host, port, args.protocol)
        else:
            arena = args.arena or _arena_for(cases)
            server = start_memlease(
                [args.protocol], config=args.config, arena=arena, cpus=server_cpus
            )
            stack.callback(server.stop)
            targets[subject] = _spec(server, "memlease", args.protocol)
        if args.servers:
            fleet = tuple(parse_address(a.strip()) for a in args.servers.split(",") if a.strip())
            spec = TargetSpec("memlease", *fleet[0], args.protocol, fleet=fleet)
            targets[spec.label] = spec
        for peer in peers:
            if peer_installed(peer) is None:
                for result in results:
                    result.unavailable[peer] = "not installed"
                continue
            running = start_peer(peer, cpus=server_cpus, threads=args.peer_threads)
            stack.callback(running.stop)
            targets[peer] = _spec(running, peer, peer)
        if args.tamper_expected:
            targets = {k: _tampered(v) for k, v in targets.items()}
        progress = _progress(args, console)
        with progress:
            runs = len(results) * args.repeat * len(targets)
            overall = progress.add_task(f"{runs} runs", total=runs, rate="")
            for result in results:
                for repeat in range(args.repeat):
                    for label, spec in rotated(list(targets.items()), repeat):
                        _one(
                            progress,
                            result,
                            label,
                            spec,
                            workers,
                            load_cpus,
                            repeat,
                            args.storm_leases,
                        )
                        progress.advance(overall)
    return results


def rotated(items: list[T], turn: int) -> list[T]:
    """``items`` starting at ``turn`` (mod their number): each repeat starts with the next
    target, so that none always runs after the same one (a connection per request leaves
    thousands of client sockets in TIME_WAIT for the next run's connects to step round)."""
    if not items:
        return items
    start = turn % len(items)
    return items[start:] + items[:start]


def _arena_for(cases: list[Case]) -> str | None:
    """An arena that holds every connection's value with room to spare, if the default
    (64 MiB) would not."""
    need = max(c.workload.connections * c.workload.value_size for c in cases) * 4
    return f"{need}" if need > 64 * 1024 * 1024 else None


def _spec(server: RunningServer, kind: str, protocol: str) -> TargetSpec:
    return TargetSpec(kind, server.host, server.ports[protocol], protocol)


def _tampered(spec: TargetSpec) -> TargetSpec:
    return replace(spec, tamper_expected=True)


def _progress(args: argparse.Namespace, console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        disable=args.no_progress or args.json,
        transient=True,
    )


def _one(
    progress: Progress,
    result: CaseResult,
    label: str,
    spec: TargetSpec,
    workers: int,
    load_cpus: list[int] | None,
    repeat: int,
    storm_leases: int,
) -> None:
    w = result.case.workload
    task = progress.add_task(f"{result.case.name} {label} #{repeat + 1}", total=w.duration, rate="")

    def update(ops: int, into: float) -> None:
        rate = f"{ops / into:,.0f} ops/s" if into > 0 else "warming up"
        progress.update(task, completed=min(into, w.duration), rate=rate)

    if result.case.name == "expiry-storm":
        if spec.kind != "memlease":
            progress.remove_task(task)
            result.unavailable[label] = "no lease expiry to storm"
            return
        whole, window, notes = run_storm(
            spec,
            result.case,
            storm_leases,
            workers=workers,
            load_cpus=load_cpus,
            on_progress=update,
        )
        result.runs.setdefault(label, []).append(whole)
        result.runs.setdefault(window.target, []).append(window)
        result.notes.update(notes)
    else:
        run = run_load(spec, w, workers=workers, load_cpus=load_cpus, on_progress=update)
        result.runs.setdefault(label, []).append(run)
    progress.remove_task(task)
