"""Codec throughput: decode + encode of a 64-byte set and a get, per installed protocol.

    .venv/bin/python benchmarks/codecs.py [--pairs 20000] [--rounds 5] [--chunk 65536]

For each protocol, on one core, best of ``--rounds``:

- round trip (the goal's figure): the client codec encodes every request, the server codec
  is fed those bytes in ``--chunk``-sized pieces (as a socket delivers them) and decodes
  them, encodes each reply (Done for the set, 64 bytes of Data for the get), and the client
  codec is fed and decodes the replies. Every message, request or reply, is encoded once
  and decoded once; messages per second = (requests + replies) / time.
- server path: decode the requests and encode the replies only (what one server core does).
- client path: encode the requests and decode the replies only.

The goal is 300k messages per second per protocol for the round trip. Times are the
process's CPU time (time.process_time), so other work on a shared machine inflates them less
than wall-clock time would; the best round of ``--rounds`` is reported.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from memlease.core.messages import Data, Done, GetRequest, IdKind, Op, Reply, Request, SetRequest
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


def _round_trip(
    spec: ProtocolSpec, requests: list[Request], replies: list[Reply], chunk: int
) -> Callable[[], int]:
    def run() -> int:
        client = spec.client_codec(DEFAULT_MAX_MESSAGE)
        server = spec.server_codec(DEFAULT_MAX_MESSAGE)
        answers = iter(replies)
        wire = b"".join([client.encode_request(r) for r in requests])
        out: list[bytes] = []
        for at in range(0, len(wire), chunk):
            server.feed(wire[at : at + chunk])
            while server.next_request() is not None:
                out.append(server.encode_reply(next(answers)))
        back = b"".join(out)
        count = 0
        for at in range(0, len(back), chunk):
            client.feed(back[at : at + chunk])
            while client.next_reply() is not None:
                count += 1
        return count + len(requests)

    return run


def _best_rate(run: Callable[[], int], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.process_time()
        count = run()
        best = max(best, count / (time.process_time() - started))
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
    print(
        f"{'protocol':10} {'round trip msg/s':>17} {'server path':>12} {'client path':>12}"
        f"  (goal: round trip >= {GOAL:,})"
    )
    below = False
    for name in names:
        spec = registry.get(name)
        requests, replies = _workload(spec, args.pairs)
        both = _best_rate(_round_trip(spec, requests, replies, args.chunk), args.rounds)
        server = _best_rate(_server_path(spec, requests, replies, args.chunk), args.rounds)
        client = _best_rate(_client_path(spec, requests, replies, args.chunk), args.rounds)
        mark = "" if both >= GOAL else "  below goal"
        below = below or bool(mark)
        print(f"{name:10} {both:>17,.0f} {server:>12,.0f} {client:>12,.0f}{mark}")
    return 1 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())
