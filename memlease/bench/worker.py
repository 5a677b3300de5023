"""One load process: many non-blocking sockets in a selector loop, closed loop per socket.

Each connection sends a precomputed batch (``depth`` requests in one write), waits for all of
its replies, compares them byte for byte with the precomputed replies, records the batch's
latency (first byte sent to last reply received; with depth 1 that is the op's latency) and
sends the next batch. A wrong reply is counted as an error and the connection reopened.
"""

from __future__ import annotations

import errno
import math
import os
import random
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from memlease.bench.histogram import LatencyHistogram
from memlease.bench.targets import Expected, OpTemplate, Target, make_target
from memlease.bench.workload import TargetSpec, WorkerResult, Workload

RECV_SIZE = 1 << 18
HEADER_CHECK = 32
REPLY_TIMEOUT = 5.0
MAX_BATCH_BYTES = 4 << 20
PROGRESS_EVERY = 0.1


@dataclass(frozen=True)
class Batch:
    request: bytes
    ops: tuple[OpTemplate, ...]


def make_batches(templates: dict[str, OpTemplate], w: Workload, rng: random.Random) -> list[Batch]:
    """The cycle of batches a connection sends, ``depth`` requests each. Over the cycle the
    ops come exactly in the mix's proportions, shuffled: a few random draws (all that fit
    MAX_BATCH_BYTES with 512 KiB values) could otherwise make a 1:1 mix 4:3 or 5:2."""
    mix = [(name, weight) for name, weight in w.mix if weight > 0]
    total = sum(weight for _, weight in mix)
    one_round = total // math.gcd(*(weight for _, weight in mix))  # fewest slots: exact mix
    step = math.lcm(one_round, w.depth)
    mean_request = sum(len(templates[name].request) * weight for name, weight in mix) / total
    fit = min(64 * w.depth, int(MAX_BATCH_BYTES // max(mean_request, 1.0)))
    slots = max(step, fit // step * step)
    sequence = [name for name, weight in mix for _ in range(slots * weight // total)]
    rng.shuffle(sequence)
    batches = []
    for at in range(0, slots, w.depth):
        ops = tuple(templates[n] for n in sequence[at : at + w.depth])
        batches.append(Batch(b"".join(t.request for t in ops), ops))
    return batches


@dataclass
class Conn:
    batches: list[Batch]
    sock: socket.socket | None = None
    index: int = 0
    seg: int = 0
    rbuf: bytearray = field(default_factory=bytearray)
    rpos: int = 0
    out: memoryview | None = None
    started: int = 0
    connecting: bool = False

    @property
    def batch(self) -> Batch:
        return self.batches[self.index]


def _matches(buf: bytearray, pos: int, exp: Expected) -> bool:
    n = len(exp.reply)
    if exp.variable is None:
        # startswith compares in place; a slice would copy a 512 KiB reply first (2x slower)
        return buf.startswith(exp.reply, pos)
    a, b = exp.variable
    return (
        buf[pos : pos + a] == exp.reply[:a]
        and buf[pos + b : pos + n] == exp.reply[b:]
        and (exp.refused is None or buf[pos + a : pos + b] != exp.refused)
    )


def _prefix_ok(buf: bytearray, pos: int, exp: Expected) -> bool:
    """Whether the part of a reply received so far can still become the expected reply."""
    k = min(len(buf) - pos, HEADER_CHECK)
    if exp.variable is not None:
        k = min(k, exp.variable[0])
    return buf[pos : pos + k] == exp.reply[:k]


class LoadLoop:
    def __init__(self, target: Target, spec: TargetSpec, w: Workload, progress: Any, slot: int):
        self.target = target
        self.spec = spec
        self.w = w
        self.progress = progress
        self.slot = slot
        self.sel = selectors.DefaultSelector()
        # recv(n) allocates n bytes per call (an mmap for large n): 2x slower at small replies.
        self.rview = memoryview(bytearray(RECV_SIZE))
        self.hist = LatencyHistogram()
        self.window_hist = LatencyHistogram()
        self.window: tuple[int, int] | None = None
        if w.window is not None:
            # perf_counter_ns is the clock of a batch; the window comes in monotonic seconds.
            offset = time.monotonic_ns() - time.perf_counter_ns()
            self.window = (int(w.window[0] * 1e9) - offset, int(w.window[1] * 1e9) - offset)
        self.result = WorkerResult()
        self.measuring = False

    def _open(self, conn: Conn) -> None:
        family = socket.AF_INET6 if ":" in self.spec.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn.sock = sock
        conn.started = time.perf_counter_ns()
        code = sock.connect_ex((self.spec.host, self.spec.port))
        if code not in (0, errno.EINPROGRESS):
            # Retried by _check_stalled, not at once, so a server that is down costs no spin.
            self._count(f"connect: {os.strerror(code)}")
            sock.close()
            conn.sock = None
            return
        conn.connecting = code != 0
        if conn.connecting:
            self.sel.register(sock, selectors.EVENT_WRITE, conn)
        else:
            self.sel.register(sock, selectors.EVENT_READ, conn)
            self._send_batch(conn, fresh=False)

    def _close(self, conn: Conn) -> None:
        if conn.sock is not None:
            self.sel.unregister(conn.sock)
            conn.sock.close()
            conn.sock = None

    def _count(self, kind: str) -> None:
        if self.measuring:
            self.result.errors[kind] = self.result.errors.get(kind, 0) + 1

    def _fail(self, conn: Conn, kind: str) -> None:
        self._count(kind)
        self._close(conn)
        conn.index = (conn.index + 1) % len(conn.batches)
        self._open(conn)

    def _send_batch(self, conn: Conn, fresh: bool = True) -> None:
        assert conn.sock is not None
        if fresh:
            conn.started = time.perf_counter_ns()
        conn.seg = 0
        conn.rbuf.clear()
        conn.rpos = 0
        data = conn.batch.request
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(conn, f"send: {exc.strerror or exc}")
            return
        self.result.bytes_sent += sent
        if sent < len(data):
            conn.out = memoryview(data)[sent:]
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _writable(self, conn: Conn) -> None:
        assert conn.sock is not None
        if conn.connecting:
            code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._fail(conn, f"connect: {os.strerror(code)}")
                return
            conn.connecting = False
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
            self._send_batch(conn, fresh=False)
            return
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(conn, f"send: {exc.strerror or exc}")
            return
        self.result.bytes_sent += sent
        conn.out = conn.out[sent:]
        if not conn.out:
            conn.out = None
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: Conn) -> None:
        assert conn.sock is not None
        try:
            size = conn.sock.recv_into(self.rview)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(conn, f"recv: {exc.strerror or exc}")
            return
        if not size:
            self._fail(conn, "connection closed by the server")
            return
        self.result.bytes_received += size
        buf = conn.rbuf
        buf += self.rview[:size]
        ops = conn.batch.ops
        while conn.seg < len(ops):
            exp = ops[conn.seg].expected
            if len(buf) - conn.rpos < len(exp.reply):
                if not _prefix_ok(buf, conn.rpos, exp):
                    self._wrong(conn)
                return
            if not _matches(buf, conn.rpos, exp):
                self._wrong(conn)
                return
            conn.rpos += len(exp.reply)
            conn.seg += 1
        self._batch_done(conn)

    def _wrong(self, conn: Conn) -> None:
        assert conn.sock is not None
        conn.sock.settimeout(0.2)
        received = bytes(conn.rbuf)
        try:
            while True:
                chunk = conn.sock.recv(RECV_SIZE)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
        self._fail(conn, self.target.explain(list(conn.batch.ops), received, conn.seg))

    def _batch_done(self, conn: Conn) -> None:
        if self.measuring:
            now = time.perf_counter_ns()
            self.hist.record(now - conn.started)
            ops = conn.batch.ops
            if self.window is not None and conn.started < self.window[1] and now > self.window[0]:
                self.window_hist.record(now - conn.started)
                self.result.window_ops += len(ops)
            self.result.ops += len(ops)
            counts = self.result.op_counts
            for t in ops:
                counts[t.op] = counts.get(t.op, 0) + 1
        conn.index = (conn.index + 1) % len(conn.batches)
        if self.w.conn_per_request:
            self._close(conn)
            self._open(conn)
        else:
            self._send_batch(conn)

    def run(self, conns: list[Conn], start: float) -> None:
        measure_at = start + self.w.warmup
        end = measure_at + self.w.duration
        for conn in conns:
            self._open(conn)
        next_progress = time.monotonic() + PROGRESS_EVERY
        next_check = next_progress
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if not self.measuring and now >= measure_at:
                self.measuring = True
                self.result = WorkerResult()
            if now >= next_progress:
                self.progress[self.slot] = self.result.ops
                next_progress = now + PROGRESS_EVERY
            events = self.sel.select(0.05)
            if now >= next_check:
                self._check_stalled(conns)
                next_check = now + 0.05
            for key, mask in events:
                conn = key.data
                if mask & selectors.EVENT_WRITE and conn.sock is not None:
                    self._writable(conn)
                if mask & selectors.EVENT_READ and conn.sock is not None:
                    self._readable(conn)
        self.result.elapsed = time.monotonic() - measure_at if self.measuring else 0.0
        self.progress[self.slot] = self.result.ops
        for conn in conns:
            self._close(conn)
        self.result.histogram = self.hist.counts
        self.result.window_histogram = self.window_hist.counts

    def _check_stalled(self, conns: list[Conn]) -> None:
        now = time.perf_counter_ns()
        for conn in conns:
            if conn.sock is None:
                self._open(conn)
            elif now - conn.started > REPLY_TIMEOUT * 1e9:
                self._fail(conn, f"{conn.batch.ops[conn.seg].op}: no reply in {REPLY_TIMEOUT}s")


def worker_main(
    slot: int,
    spec: TargetSpec,
    w: Workload,
    conn_ids: list[int],
    cpus: list[int] | None,
    go: Any,
    progress: Any,
    messages: Any,
) -> None:
    """Entry point of a load process: prepare connections, wait for the others, run."""
    # Started with SIGINT and SIGTERM held (runner._signals_held): Ctrl-C is the parent's
    # to handle, and it stops this process; SIGTERM may end it as usual.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if cpus:
        os.sched_setaffinity(0, cpus)
    target: Target | None = None
    try:
        target = make_target(spec, w)
        conns = []
        for conn_id in conn_ids:
            with target.connect() as sock:
                templates = target.prepare(sock, f"{os.getpid()}.{conn_id}")
            rng = random.Random(w.seed * 1000003 + conn_id)
            conns.append(Conn(make_batches(templates, w, rng)))
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
        leased = [] if target is None else target.leased
        messages.put(("ready", slot, WorkerResult(failure=failure, leases=leased)))
        return
    messages.put(("ready", slot, WorkerResult(leases=target.leased)))
    go.wait()
    loop = LoadLoop(target, spec, w, progress, slot)
    loop.run(conns, time.monotonic())
    messages.put(("done", slot, loop.result))
