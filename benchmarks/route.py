"""The one route, sans-IO, per message: a pipelined batch of requests fed to a connection's
rules (``Connection``: codec -> service -> codec), as the server does for each receive.

    python -m benchmarks.route [--protocol native] [--depth 32] [--value-size 64] [--metrics]

Prints the CPU time per message (``time.process_time_ns``; the median of several rounds),
for a get:set 1:1 mix on one lease, as ``memlease bench --case pipelined`` sends it.
``--metrics``: as a server with metrics on (requests noted and counted after each send).
"""

from __future__ import annotations

import argparse
import statistics
import time

from memlease.core.messages import GetRequest, Granted, IdKind, LeaseRequest, Request, SetRequest
from memlease.core.service import Service
from memlease.protocol import DEFAULT_MAX_MESSAGE, load_protocols
from memlease.server.connection import Connection, Limits
from memlease.server.request_figures import RequestFigures


def per_message_ns(
    protocol: str, depth: int, value_size: int, batches: int = 20_000, metrics: bool = False
) -> float:
    spec = load_protocols(warn=False).get(protocol)
    service = Service.create(64 << 20)
    kind = IdKind.UUID if spec.id_kind is IdKind.UUID else IdKind.INT
    granted = service.handle(LeaseRequest(value_size, 3_600_000, kind), 0.0)
    assert isinstance(granted, Granted)
    lease_id = granted.lease_id
    requests: list[Request] = []
    for i in range(depth):
        value = bytes([i % 251]) * value_size
        requests.append(GetRequest(lease_id) if i % 2 else SetRequest(lease_id, value))
    client = spec.client_codec(DEFAULT_MAX_MESSAGE)
    wire = b"".join(client.encode_request(r) for r in requests)
    limits = Limits(DEFAULT_MAX_MESSAGE, request_timeout=10.0, idle_timeout=300.0)
    codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
    figures = RequestFigures() if metrics else None
    connection = Connection(
        codec, service, limits, 0.0, peer="bench", protocol=protocol, figures=figures
    )
    received, next_output, batch_done = (
        connection.received,
        connection.next_output,
        connection.batch_done,
    )
    handed = connection.replies_handed
    view = memoryview(bytearray(wire))  # as the server's shared receive buffer gives it
    start = time.process_time_ns()
    for _ in range(batches):
        received(view)
        while next_output(1.0):
            if metrics:
                handed(1.0, 1.000_02)  # as the server's task does after each send
        batch_done(1.0)
    return (time.process_time_ns() - start) / (batches * depth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="native")
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--metrics", action="store_true", help="as with metrics on")
    args = parser.parse_args()
    runs = [
        per_message_ns(args.protocol, args.depth, args.value_size, metrics=args.metrics)
        for _ in range(args.rounds)
    ]
    print(
        f"{args.protocol}, depth {args.depth}, {args.value_size} B values, get:set 1:1"
        f"{', metrics on' if args.metrics else ''}: "
        f"{statistics.median(runs) / 1000:.3f} µs per message (median of {args.rounds})"
    )


if __name__ == "__main__":
    main()
