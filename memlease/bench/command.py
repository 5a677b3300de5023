"""`memlease bench`: its arguments, and running the cases it names against each target."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from memlease.bench.cases import CASE_NAMES, Case, suite_cases
from memlease.bench.report import CaseResult, print_table, to_json, write_report
from memlease.bench.runner import run_load
from memlease.bench.servers import PEERS, RunningServer, peer_installed, start_memlease, start_peer
from memlease.bench.storm import run_storm, storm_case
from memlease.bench.workload import TargetSpec, Workload, parse_mix
from memlease.client.connecting import parse_address
from memlease.core.errors import ConfigError, MemleaseError
from memlease.protocol import load_protocols
from memlease.server.config import load_config
from memlease.units import parse_duration, parse_size

T = TypeVar("T")


def _duration(least: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        if seconds < least or (least == 0 and seconds < 0):
            raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0s")
        return seconds

    return convert


def _ttl_ms(text: str) -> int:
    ms = round(_duration(0)(text) * 1000)
    if ms < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a ttl is at least 1ms")
    return ms


def _value_size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a value is at least 1 B")
    return size


def _whole(least: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {least}")
        return value

    return convert


def _mix(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_mix(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peer_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in PEERS:
            raise argparse.ArgumentTypeError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    return names


class _DefaultsShown(argparse.HelpFormatter):
    """Help with each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if unset or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``memlease bench`` (also ``python -m memlease.bench``)."""
    parser.formatter_class = _DefaultsShown
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--suite",
        action="store_true",
        help="the four standard cases: pipelined, one-in-flight, large-values, conn-per-request",
    )
    what.add_argument("--case", choices=CASE_NAMES, help="one named case")
    what.add_argument(
        "--compare", type=_peer_names, default=[], metavar="PEERS", help="memcached, redis or both"
    )
    what.add_argument(
        "--repeat",
        type=_whole(1),
        metavar="N",
        default=1,
        help="runs per case and target; the median counts",
    )
    what.add_argument(
        "--storm-leases",
        type=_whole(1),
        metavar="N",
        default=1_000_000,
        help="leases of --case expiry-storm",
    )
    load = parser.add_argument_group("the load (ignored by --suite and --case)")
    load.add_argument(
        "--connections", "-c", type=_whole(1), metavar="N", default=4, help="connections"
    )
    load.add_argument(
        "--depth",
        "-d",
        type=_whole(1),
        metavar="N",
        default=1,
        help="requests in flight per connection",
    )
    load.add_argument(
        "--value-size", type=_value_size, default="64", metavar="SIZE", help="bytes per value"
    )
    load.add_argument(
        "--mix",
        type=_mix,
        default="get=1,set=1",
        metavar="OP=WEIGHT,...",
        help="op weights, of get, set, read, write, lease",
    )
    load.add_argument(
        "--conn-per-request",
        action="store_true",
        help="a connection per request, as the original C++ client",
    )
    load.add_argument(
        "--lease-ttl",
        type=_ttl_ms,
        default="1s",
        metavar="DURATION",
        help="ttl of the leases that `lease` ops take",
    )
    load.add_argument(
        "--duration",
        type=_duration(0.001),
        default="5s",
        metavar="DURATION",
        help="measured time per run",
    )
    load.add_argument(
        "--warmup",
        type=_duration(0),
        default="500ms",
        metavar="DURATION",
        help="unmeasured time before each run",
    )
    load.add_argument(
        "--workers", type=_whole(0), metavar="N", default=0, help="load processes (0: one per core)"
    )
    server = parser.add_argument_group("the server")
    server.add_argument(
        "--server", metavar="HOST:PORT", help="a running server (default: bench starts one)"
    )
    server.add_argument(
        "--servers",
        metavar="A,B,...",
        help="a fleet (e.g. serve --shards N): one more target, connections spread over them",
    )
    server.add_argument("--protocol", default="native", help="memlease protocol to speak")
    server.add_argument(
        "--peer-threads", type=_whole(1), metavar="N", default=1, help="memcached's -t"
    )
    server.add_argument(
        "--config", metavar="PATH", help="config of the server bench starts (ports ignored)"
    )
    server.add_argument(
        "--arena",
        metavar="SIZE",
        help="arena size of the server bench starts (default: the config's, 64MiB "
        "unless it is set; 4 times the values of all connections when that is more)",
    )
    server.add_argument("--pin", action="store_true", help="servers on core 0, load on the rest")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the results as JSON")
    out.add_argument("--report", type=Path, metavar="PATH", help="write a markdown report")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--tamper-expected", action="store_true", help=argparse.SUPPRESS)


def check_arguments(args: argparse.Namespace) -> None:
    """What the parser cannot check alone, before anything starts: the protocol, the address,
    and the config and arena of the server bench would start. ConfigError says what."""
    registry = load_protocols(warn=False)
    if args.protocol not in registry.protocols:
        known = ", ".join(registry.names()) or "none"
        raise ConfigError(f"--protocol {args.protocol!r}: unknown protocol (known: {known})")
    if args.server:
        parse_address(args.server)
        if args.config or args.arena:
            raise ConfigError("--config and --arena are for the server bench starts, not --server")
        return
    overrides = {"arena_size": args.arena} if args.arena else {}
    load_config(args.config, overrides, registry=registry)


def _cases(args: argparse.Namespace) -> list[Case]:
    duration, warmup = args.duration, args.warmup
    if args.suite:
        return suite_cases(duration, warmup)
    if args.case == "expiry-storm":
        return [storm_case(args.storm_leases, warmup)]
    if args.case:
        return [c for c in suite_cases(duration, warmup) if c.name == args.case]
    workload = Workload(
        connections=args.connections,
        depth=args.depth,
        value_size=args.value_size,
        mix=args.mix,
        duration=duration,
        warmup=warmup,
        conn_per_request=args.conn_per_request,
        lease_ttl_ms=args.lease_ttl,
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


class Terminated(BaseException):
    """SIGTERM arrived: raised where the bench was, so that every cleanup on the way out runs
    (the servers' groups stopped, the load processes killed, the leases released)."""


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Run ``memlease bench``; the exit status is 1 when a run reported errors."""
    try:
        check_arguments(args)
        cases = _cases(args)
    except ConfigError as exc:
        print(f"memlease bench: {exc}", file=sys.stderr)
        return 2
    console = Console(stderr=args.json)
    if not console.is_terminal:
        # Into a pipe or file, 120 columns unless COLUMNS says otherwise (rich reads it).
        console = Console(stderr=args.json, width=None if "COLUMNS" in os.environ else 120)
    try:
        with _terminate_as_exception():
            results = _run(args, cases, console)
    except (MemleaseError, OSError) as exc:
        print(f"memlease bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memlease bench: interrupted; servers and load stopped", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print("memlease bench: terminated; servers and load stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
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


def _run(args: argparse.Namespace, cases: list[Case], console: Console) -> list[CaseResult]:
    peers = args.compare
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
