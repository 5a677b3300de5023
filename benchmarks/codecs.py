"""Codec throughput: decode + encode of a 64-byte set and a get, per installed protocol.

    .venv/bin/python benchmarks/codecs.py [--pairs 20000] [--rounds 5] [--chunk 65536]

For each protocol, two paths on one core, best of ``--rounds``:

- server: feed the request bytes (in ``--chunk``-sized pieces, as a socket would deliver
  them), decode every request, encode its reply (Done for the set, 64 bytes of Data for the
  get);
- client: encode every request, feed the reply bytes, decode every reply.

A message is one request or one reply; the goal is 300k messages per second per protocol.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from memlease.messages import Data, Done, GetRequest, IdKind, Op, Reply, Request, SetRequest
from memlease.protocol import DEFAULT_MAX_MESSAGE, ProtocolSpec, load_protocols

GOAL = 300_000


def _workload(spec: ProtocolSpec, pairs: int) -> tuple[list[Request], list[Reply]]:
    lease_id: int | uuid.UUID = uuid.uuid4() if spec.id_kind is IdKind.UUID else 0x1DB38383
    data = bytes(range(64))
    requests: list[Request] = [SetRequest(lease_id, data), GetRequest(lease_id)] * pairs
    replies: list[Reply] = [Done(Op.SET, lease_id), Data(Op.GET, lease_id, data)] * pairs
    return requests, replies


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def _server_path(
    spec: ProtocolSpec, requests: list[Request], replies: list[Reply], chunk: int
) -> Callable[[], int]:
    client = spec.client_codec(DEFAULT_MAX_MESSAGE)
    wire = _chunks(b"".join(client.encode_request(r) for r in requests), chunk)
    answers = iter(replies)

    def run() -> int:
        nonlocal answers
        answers = iter(replies)
        codec = spec.server_codec(DEFAULT_MAX_MESSAGE)
        out: list[bytes] = []
        count = 0
        for piece in wire:
            codec.feed(piece)
            while codec.next_request() is not None:
                out.append(codec.encode_reply(next(answers)))
                count += 2
        return count

    return run


def _client_path(
    spec: ProtocolSpec, requests: list[Request], replies: list[Reply], chunk: int
) -> Callable[[], int]:
    server = spec.server_codec(DEFAULT_MAX_MESSAGE)
    wire = _chunks(b"".join(server.encode_reply(r) for r in replies), chunk)

    def run() -> int:
        codec = spec.client_codec(DEFAULT_MAX_MESSAGE)
        count = 0
        for request in requests:
            codec.encode_request(request)
            count += 1
        for piece in wire:
            codec.feed(piece)
            while codec.next_reply() is not None:
                count += 1
        return count

    return run


def _best_rate(run: Callable[[], int], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - started))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="set+get pairs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per feed()")
    parser.add_argument("--protocol", action="append", help="only these (repeatable)")
    args = parser.parse_args()
    registry = load_protocols()
    names = args.protocol or registry.names()
    print(f"{'protocol':10} {'server msg/s':>14} {'client msg/s':>14}  goal {GOAL:,}")
    below = False
    for name in names:
        spec = registry.get(name)
        requests, replies = _workload(spec, args.pairs)
        server = _best_rate(_server_path(spec, requests, replies, args.chunk), args.rounds)
        client = _best_rate(_client_path(spec, requests, replies, args.chunk), args.rounds)
        mark = "" if min(server, client) >= GOAL else "  below goal"
        below = below or bool(mark)
        print(f"{name:10} {server:>14,.0f} {client:>14,.0f}{mark}")
    return 1 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())
