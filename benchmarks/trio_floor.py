"""What trio's own steps cost on this machine: the floor under a connection's time in any trio
server, whatever it does per message.

    python -m benchmarks.trio_floor

A connection per request pays at least one task start, one cancel scope with a deadline (its
time limits), one wait for readable (for the peer's next request or close) and one
notify_closing + close; a request on an open connection pays a wait for readable.
"""

from __future__ import annotations

import socket
import time

import trio

ROUNDS = 20_000


async def _nothing() -> None:
    pass


async def _scope_with_deadline() -> None:
    with trio.CancelScope(deadline=trio.current_time() + 300.0):
        pass


def _report(what: str, started: float, count: int) -> None:
    print(f"{what:<42} {(time.perf_counter() - started) / count * 1e6:6.2f} us")


async def main() -> None:
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(ROUNDS):
            nursery.start_soon(_nothing)
    _report("task start, run, exit", started, ROUNDS)

    started = time.perf_counter()
    for _ in range(ROUNDS):
        await _scope_with_deadline()
    _report("cancel scope with a deadline, in and out", started, ROUNDS)

    ours, peer = socket.socketpair()
    with ours, peer:
        ours.setblocking(False)
        peer.send(b"x")
        started = time.perf_counter()
        for _ in range(ROUNDS):
            await trio.lowlevel.wait_readable(ours)
        _report("wait_readable on a readable socket", started, ROUNDS)

    started = time.perf_counter()
    for _ in range(ROUNDS):
        await trio.lowlevel.checkpoint()
    _report("checkpoint (one scheduler pass)", started, ROUNDS)

    sockets = [socket.socket() for _ in range(2_000)]
    started = time.perf_counter()
    for sock in sockets:
        trio.lowlevel.notify_closing(sock)
        sock.close()
    _report("notify_closing + close", started, len(sockets))


if __name__ == "__main__":
    trio.run(main)
