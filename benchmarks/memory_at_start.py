"""The resident memory of a real ``memlease serve``: at start, per lease, per idle connection.

The figures behind the worst case that ``memlease serve`` checks at start
(memlease/server/worst_case.py, ``worst_case_memory``) and docs/security.md gives:

1. **At start**: a server on loopback (one listener, port 0) with each ``--arena`` size; its
   VmRSS (/proc/PID/status) once it logs that it listens. Less the arena and the arena's own
   per-block columns (``ARENA_BYTES_PER_BLOCK``), that is the interpreter's baseline.
2. **Per lease**: a server with ``--fill-arenas`` (64 MiB) is filled with leases of
   ``min_block`` bytes (32 B) until the arena is full (2M leases), pipelined in batches over
   one connection, for int ids (``network``) and for UUIDs (``uuid``); the growth of its
   VmRSS, divided by the leases granted.
3. **Per idle connection**: ``--connections`` (500) connections opened to a server, each
   having made one request; the growth of its VmRSS, divided by their number.

Run ``python -m benchmarks.memory_at_start [--arenas 64MiB,512MiB,2GiB] [--fill-arenas 64MiB]
[--connections 500] [--json]`` (a few minutes; the 2 GiB arena needs about 2.5 GiB free).
Linux only (/proc). An arena whose worst case is more than the machine's memory is refused
at start (with 32 B blocks, 2 GiB on a 24 GiB machine): that line is reported instead.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from memlease import Client
from memlease.core.messages import ErrorReply, IdKind, LeaseRequest
from memlease.units import format_size, parse_size

MIN_BLOCK = 32
BATCH = 10_000
TTL_MS = 3_600_000


@dataclass(frozen=True)
class StartFigure:
    arena: int
    rss_at_start: int | None
    refused: str | None = None
    """The server's one line when it refused the configuration at start."""


@dataclass(frozen=True)
class FillFigure:
    protocol: str
    arena: int
    leases: int
    rss_empty: int
    rss_full: int

    @property
    def bytes_per_lease(self) -> float:
        return (self.rss_full - self.rss_empty) / self.leases


@dataclass(frozen=True)
class ConnectionFigure:
    connections: int
    rss_before: int
    rss_after: int

    @property
    def bytes_per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / self.connections


def rss(pid: int) -> int:
    """The process's resident set (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def server(protocol: str, arena: int, *flags: str) -> Iterator[tuple[int, int]]:
    """A ``memlease serve`` subprocess serving ``protocol`` on a free loopback port:
    (its pid, the port). Stopped with SIGINT on the way out."""
    command = [
        sys.executable,
        "-m",
        "memlease.cli.main",
        "serve",
        "--listen",
        f"{protocol}=0",
        "--arena",
        str(arena),
        "--max-connections",
        "4096",
        # room for 4096 connections' receive buffers beside one largest message
        "--connection-memory",
        "512MiB",
        *flags,
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE, bufsize=0) as proc:
        try:
            yield proc.pid, _wait_for_port(proc, protocol)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            proc.kill()


def _wait_for_port(proc: subprocess.Popen[bytes], protocol: str) -> int:
    assert proc.stderr is not None
    last = ""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while selector.select(timeout=120):
            line = proc.stderr.readline().decode()
            if f"listening: {protocol} on" in line:
                return int(line.rsplit(":", 1)[1])
            if not line:
                raise ServerExited(last.strip())
            last = line
    raise RuntimeError("the server did not listen within 120 s")


def _settled_rss(pid: int) -> int:
    time.sleep(0.5)  # let the server finish what the last reply started
    return rss(pid)


def at_start(arena: int) -> StartFigure:
    try:
        with server("network", arena) as (pid, _port):
            return StartFigure(arena, _settled_rss(pid))
    except ServerExited as exc:
        return StartFigure(arena, None, str(exc))


class ServerExited(RuntimeError):
    """The server exited before it listened; the message is its last line."""


def fill(protocol: str, arena: int) -> FillFigure:
    """Lease every block of a ``min_block`` arena, ``BATCH`` requests a write."""
    kind = IdKind.UUID if protocol == "uuid" else IdKind.INT
    leases = arena // MIN_BLOCK
    with server(protocol, arena) as (pid, port), Client(("127.0.0.1", port), protocol) as client:
        client.stats()
        empty = _settled_rss(pid)
        granted = 0
        while granted < leases:
            batch = [LeaseRequest(MIN_BLOCK, TTL_MS, kind)] * min(BATCH, leases - granted)
            replies = client.pipeline(batch)
            refused = [r for r in replies if isinstance(r, ErrorReply)]
            if refused:
                raise RuntimeError(f"a lease was refused at {granted}: {refused[0]}")
            granted += len(replies)
        full = _settled_rss(pid)
    return FillFigure(protocol, arena, granted, empty, full)


def idle_connections(count: int) -> ConnectionFigure:
    with server("network", 1 << 20) as (pid, port), Client(("127.0.0.1", port), "network") as first:
        first.stats()
        before = _settled_rss(pid)
        clients = [Client(("127.0.0.1", port), "network") for _ in range(count)]
        try:
            for client in clients:
                client.stats()
            after = _settled_rss(pid)
        finally:
            for client in clients:
                client.close()
    return ConnectionFigure(count, before, after)


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_at_start", description=__doc__
    )
    parser.add_argument("--arenas", default="64MiB,512MiB,2GiB", help="sizes, comma-separated")
    parser.add_argument(
        "--fill-arenas", default="64MiB", help="the arenas filled with leases, comma-separated"
    )
    parser.add_argument("--connections", type=int, default=500, help="idle connections opened")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    socket.setdefaulttimeout(60)
    starts = [at_start(parse_size(size)) for size in args.arenas.split(",")]
    fills = [
        fill(protocol, parse_size(size))
        for size in args.fill_arenas.split(",")
        for protocol in ("network", "uuid")
    ]
    connections = idle_connections(args.connections)
    if args.json:
        figures = {
            "at_start": [asdict(s) for s in starts],
            "fill": [asdict(f) | {"bytes_per_lease": f.bytes_per_lease} for f in fills],
            "connections": asdict(connections)
            | {"bytes_per_connection": connections.bytes_per_connection},
        }
        print(json.dumps(figures, indent=2))
        return 0
    for s in starts:
        if s.rss_at_start is None:
            print(f"arena {format_size(s.arena)}: refused at start: {s.refused}")
        else:
            print(f"arena {format_size(s.arena)}: {_mib(s.rss_at_start)} resident at start")
    for f in fills:
        print(
            f"{f.protocol}: {f.leases:,} leases of {MIN_BLOCK} B in a {format_size(f.arena)} "
            f"arena: {_mib(f.rss_empty)} -> {_mib(f.rss_full)}, {f.bytes_per_lease:.0f} B a lease"
        )
    c = connections
    print(
        f"{c.connections} idle connections: {_mib(c.rss_before)} -> {_mib(c.rss_after)}, "
        f"{c.bytes_per_connection / 1024:.1f} KiB a connection"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
