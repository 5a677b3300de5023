"""Service.handle: every request type, every refusal as an ErrorReply, and the stats."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import pytest

import memlease
from memlease.core.arena import BuddyArena
from memlease.core.errors import ErrorCode
from memlease.core.leases import LeaseTable
from memlease.core.messages import (
    OPS,
    Data,
    Done,
    EndReason,
    ErrorReply,
    GetRequest,
    GetsRequest,
    Granted,
    IdKind,
    LeaseInfo,
    LeaseRequest,
    Notice,
    Op,
    ReadRequest,
    ReleaseRequest,
    RenewRequest,
    Request,
    ServerStats,
    SetRequest,
    StatRequest,
    StatsRequest,
    WriteRequest,
)
from memlease.core.service import SESSION_BATCH, Service
from memlease.core.sessions import Session

MISSING = 424242


def service(**kwargs: int) -> Service:
    return Service.create(4096, max_ttl_ms=10_000, **kwargs)


def granted_id(svc: Service, size: int = 16, ttl_ms: int = 1000, now: float = 0.0) -> int:
    reply = svc.handle(LeaseRequest(size, ttl_ms), now)
    assert isinstance(reply, Granted)
    assert isinstance(reply.lease_id, int)
    return reply.lease_id


ONE_EACH = {"lease", "get", "set", "read", "write", "renew", "release"}


def test_every_request_type_round_trip() -> None:
    svc = service()
    reply = svc.handle(LeaseRequest(16, 1000), 0.0)
    assert isinstance(reply, Granted) and (reply.size, reply.ttl_ms) == (16, 1000)
    lease = reply.lease_id
    assert svc.handle(SetRequest(lease, b"hello"), 0.1) == Done(Op.SET, lease, 2)
    assert svc.handle(WriteRequest(lease, 10, b"world"), 0.1) == Done(Op.WRITE, lease, 3)
    assert svc.handle(GetRequest(lease), 0.2) == Data(
        Op.GET, lease, b"hello\x00\x00\x00\x00\x00world\x00"
    )
    assert svc.handle(ReadRequest(lease, 1, 4), 0.2) == Data(Op.READ, lease, b"ello")
    assert svc.handle(StatRequest(lease), 0.25) == LeaseInfo(lease, 16, 750, 3)
    assert svc.handle(RenewRequest(lease, 2000), 0.5) == Done(Op.RENEW, lease)
    assert svc.handle(StatRequest(lease), 0.5) == LeaseInfo(lease, 16, 2000, 3)
    stats = svc.handle(StatsRequest(), 0.5)
    assert isinstance(stats, ServerStats) and stats.live_leases == 1
    assert svc.handle(ReleaseRequest(lease), 0.6) == Done(Op.RELEASE, lease)
    assert svc.handle(StatsRequest(), 0.6) == ServerStats(
        arena_size=4096,
        used=0,
        free=4096,
        largest_free=4096,
        internal_fragmentation=0,
        external_fragmentation=0.0,
        live_leases=0,
        granted=1,
        expired=0,
        released=1,
        refused=0,
        connections=0,
        uptime_ms=600,
        version=memlease.__version__,
        hits=4,
        misses=0,
        requests=tuple(
            {Op.STAT: 2, Op.STATS: 2}.get(op, 1 if op.value in ONE_EACH else 0) for op in OPS
        ),
    )


def test_stats_tell_the_expiry_lag_and_how_far_expiry_is_behind() -> None:
    svc = Service.create(4096, max_ttl_ms=10_000, started=100.0)
    granted_id(svc, ttl_ms=10, now=100.0)  # deadline 100.01
    granted_id(svc, ttl_ms=30, now=100.0)  # deadline 100.03
    stats = svc.stats(100.05)
    assert stats.expiry_lag_us == 0
    assert stats.expiry_behind_us == pytest.approx(40_000, abs=1)  # the first, 40 ms ago
    assert svc.expire(100.05, 1) == 1
    stats = svc.stats(100.05)
    assert (stats.expired, stats.expiry_lag_us) == (1, pytest.approx(40_000, abs=1))
    assert stats.expiry_behind_us == pytest.approx(20_000, abs=1)
    svc.expire(100.06, 10)
    stats = svc.stats(100.06)
    assert stats.expiry_lag_us == pytest.approx(40_000 + 30_000, abs=2)
    assert stats.expiry_behind_us == 0


def test_stats_count_requests_per_op_and_reads_as_hits_or_misses() -> None:
    svc = Service.create(4096, max_ttl_ms=10_000, started=100.0)
    live = granted_id(svc, ttl_ms=5000, now=100.0)
    gone = granted_id(svc, ttl_ms=10, now=100.0)  # past its deadline from 100.01
    unknown = 12345 if 12345 not in (live, gone) else 54321
    svc.handle(GetRequest(live), 101.0)  # hit
    svc.handle(GetsRequest(live), 101.0)  # hit
    svc.handle(ReadRequest(live, 0, 4), 101.0)  # hit
    svc.handle(ReadRequest(live, 10, 100), 101.0)  # refused for its range, yet a hit
    svc.handle(StatRequest(live), 101.0)  # hit
    svc.handle(GetRequest(gone), 101.0)  # miss: expired, not yet freed
    svc.handle(GetsRequest(unknown), 101.0)  # miss
    svc.handle(ReadRequest(unknown, 0, 1), 101.0)  # miss
    svc.handle(StatRequest(gone), 101.0)  # miss
    svc.handle(SetRequest(unknown, b"x"), 101.0)  # not a read: neither
    svc.handle(RenewRequest(unknown, 10), 101.0)  # not a read: neither
    stats = svc.handle(StatsRequest(), 102.5)
    assert isinstance(stats, ServerStats)
    assert (stats.hits, stats.misses) == (5, 4)
    assert stats.uptime_ms == 2500
    assert stats.version == memlease.__version__
    assert {op: n for op, n in stats.requests_by_op().items() if n} == {
        "lease": 2, "get": 2, "gets": 2, "read": 3, "stat": 2, "set": 1, "renew": 1,
        "stats": 1,
    }  # fmt: skip
    assert len(stats.requests) == len(Op)


def test_uuid_leases_through_the_service() -> None:
    svc = service()
    reply = svc.handle(LeaseRequest(8, 1000, IdKind.UUID), 0.0)
    assert isinstance(reply, Granted) and isinstance(reply.lease_id, uuid.UUID)
    assert svc.handle(SetRequest(reply.lease_id, b"u"), 0.0) == Done(Op.SET, reply.lease_id, 2)
    assert svc.handle(GetRequest(reply.lease_id), 0.0) == Data(
        Op.GET, reply.lease_id, b"u" + bytes(7)
    )


@pytest.mark.parametrize(
    ("make_request", "code", "fragment"),
    [
        (lambda lease: GetRequest(MISSING), ErrorCode.NOT_FOUND, f"lease {MISSING} not found"),
        (lambda lease: SetRequest(MISSING, b"x"), ErrorCode.NOT_FOUND, "not found"),
        (lambda lease: ReadRequest(MISSING, 0, 1), ErrorCode.NOT_FOUND, "not found"),
        (lambda lease: WriteRequest(MISSING, 0, b"x"), ErrorCode.NOT_FOUND, "not found"),
        (lambda lease: RenewRequest(MISSING, 10), ErrorCode.NOT_FOUND, "not found"),
        (lambda lease: ReleaseRequest(MISSING), ErrorCode.NOT_FOUND, "not found"),
        (lambda lease: StatRequest(MISSING), ErrorCode.NOT_FOUND, "not found"),
        (
            lambda lease: GetRequest(uuid.UUID(int=MISSING)),
            ErrorCode.NOT_FOUND,
            "not found",
        ),
        (lambda lease: SetRequest(lease, bytes(17)), ErrorCode.OUT_OF_RANGE, "nothing was"),
        (lambda lease: WriteRequest(lease, 15, b"ab"), ErrorCode.OUT_OF_RANGE, "holds 16 B"),
        (lambda lease: ReadRequest(lease, 8, 9), ErrorCode.OUT_OF_RANGE, "holds 16 B"),
        (lambda lease: RenewRequest(lease, 0), ErrorCode.BAD_TTL, "ask for 1 to 10000 ms"),
        (lambda lease: RenewRequest(lease, 10_001), ErrorCode.BAD_TTL, "10000 ms"),
    ],
)
def test_refusals_on_a_lease_are_error_replies(
    make_request: object, code: ErrorCode, fragment: str
) -> None:
    svc = service()
    lease = granted_id(svc)
    request: Request = make_request(lease)  # type: ignore[operator]
    reply = svc.handle(request, 0.0)
    assert isinstance(reply, ErrorReply)
    assert reply.code is code
    assert reply.op is request.op
    assert reply.lease_id == request.lease_id  # type: ignore[union-attr]
    assert fragment in reply.message
    assert svc.refused_requests == 1
    assert svc.table.refused == 0  # only refused lease requests count there
    assert svc.handle(GetRequest(lease), 0.0).op is Op.GET  # the lease is untouched


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (LeaseRequest(0, 100), ErrorCode.BAD_SIZE, "ask for 1 B to 4 KiB"),
        (LeaseRequest(4097, 100), ErrorCode.BAD_SIZE, "4096 B"),
        (LeaseRequest(-5, 100), ErrorCode.BAD_SIZE, "-5 B"),
        (LeaseRequest(16, 0), ErrorCode.BAD_TTL, "ttl 0 ms refused"),
        (LeaseRequest(16, 10_001), ErrorCode.BAD_TTL, "ask for 1 to 10000 ms"),
        (LeaseRequest(4096, 100), ErrorCode.NO_ROOM, "try a smaller lease or later"),
    ],
)
def test_refused_leases(request_: LeaseRequest, code: ErrorCode, fragment: str) -> None:
    svc = service()
    granted_id(svc, size=1)
    reply = svc.handle(request_, 0.0)
    assert reply == ErrorReply(code, reply.message, op=Op.LEASE, lease_id=None)  # type: ignore[union-attr]
    assert fragment in reply.message  # type: ignore[union-attr]
    stats = svc.stats(0.0)
    assert (stats.granted, stats.refused, stats.live_leases) == (1, 1, 1)


def test_max_lease_size_is_applied() -> None:
    svc = service(max_lease_size=100)
    reply = svc.handle(LeaseRequest(101, 100), 0.0)
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.BAD_SIZE


def test_an_expired_lease_is_refused_before_expire_runs_then_counted() -> None:
    svc = service()
    lease = granted_id(svc, ttl_ms=100)
    assert isinstance(svc.handle(GetRequest(lease), 0.099), Data)
    reply = svc.handle(GetRequest(lease), 0.1)
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.NOT_FOUND
    assert svc.next_deadline() == 0.1
    assert svc.expire(0.1) == 1
    assert svc.next_deadline() is None
    stats = svc.stats(0.1)
    assert (stats.live_leases, stats.expired, stats.used) == (0, 1, 0)


def test_unknown_request_type_is_unsupported_not_an_exception() -> None:
    @dataclass(frozen=True)
    class FutureRequest:
        lease_id: int
        op = Op.RENEW

    svc = service()
    reply = svc.handle(FutureRequest(3), 0.0)  # type: ignore[arg-type]
    assert reply == ErrorReply(ErrorCode.UNSUPPORTED, reply.message, op=Op.RENEW, lease_id=3)  # type: ignore[union-attr]


def test_stats_figures() -> None:
    class Connections:
        closed_for_guessing = 2

        def __len__(self) -> int:
            return 3

    svc = Service.create(4096, max_ttl_ms=10_000, connections=Connections())
    granted_id(svc, size=100)  # a 128-byte block
    granted_id(svc, size=1)
    stats = svc.stats(0.0)
    assert stats.arena_size == 4096
    assert stats.used == 128 + 32
    assert stats.free == 4096 - 160
    assert stats.internal_fragmentation == 28 + 31
    assert stats.largest_free == 2048
    assert stats.external_fragmentation == pytest.approx(1 - 2048 / (4096 - 160))
    assert stats.connections == 3 and stats.live_leases == 2 and stats.granted == 2


def test_service_over_a_given_table() -> None:
    table = LeaseTable(BuddyArena(1024), max_ttl_ms=50, int_ids=lambda: 77)
    svc = Service(table)
    assert svc.table is table
    assert svc.handle(LeaseRequest(1, 50), 0.0) == Granted(77, 1, 50)
    reply = svc.handle(LeaseRequest(1, 50), 0.0)
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.INTERNAL


def test_a_closed_connections_many_bound_leases_end_in_batches_between_other_work() -> None:
    svc = Service.create(1 << 20, max_ttl_ms=10_000)
    owner, watcher = Session(), Session()
    ids = svc.table.grant_many(2500, 32, 10_000, 0.0, owner=owner)
    svc.table.watch(ids[-1:], watcher, 0.0)
    heard: list[Notice] = []
    watcher.notify = heard.append
    svc.end_session(owner, 0.1)
    assert len(svc.table) == 2500 - SESSION_BATCH  # the first batch at once, no more
    assert svc.next_deadline() == -math.inf  # the rest is due now
    assert svc.expire(0.1, 1000) == 1000
    assert svc.expire(0.1, 1000) == 500
    assert len(svc.table) == 0 and svc.next_deadline() is None
    assert heard == [Notice(ids[-1], EndReason.CLOSED)]
    assert svc.table.closed == 2500
