"""LeaseTable: millisecond boundaries, every operation and refusal, ids, batched expiry, and
a stateful hypothesis test against a dict model."""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from test_deadline_order import check_order, held

from memlease.core.arena import BuddyArena
from memlease.core.deadline_order import DeadlineOrder
from memlease.core.errors import (
    BadSize,
    BadTtl,
    InternalError,
    LeaseNotFound,
    LeaseTooSmall,
    NoRoom,
)
from memlease.core.leases import MAX_INT_ID, LeaseTable
from memlease.core.messages import EndReason, IdKind, LeaseId, Notice
from memlease.core.seconds_histogram import EXPIRY_LAG_BOUNDS, SecondsHistogram
from memlease.core.sessions import Session


def make_table(
    size: int = 4096,
    *,
    max_ttl_ms: int = 60_000,
    max_lease_size: int | None = None,
    int_ids: Callable[[], int] | None = None,
    uuid_ids: Callable[[], uuid.UUID] | None = None,
) -> LeaseTable:
    return LeaseTable(
        BuddyArena(size),
        max_ttl_ms=max_ttl_ms,
        max_lease_size=max_lease_size,
        int_ids=int_ids,
        uuid_ids=uuid_ids,
    )


@pytest.mark.parametrize("start", [0.0, 0.1, 12_345.678, 199_999.9995])
@pytest.mark.parametrize("ttl_ms", [1, 7, 300, 60_000])
def test_valid_one_ms_before_the_deadline_gone_at_it(start: float, ttl_ms: int) -> None:
    table = make_table()
    lease = table.grant(10, ttl_ms, start)
    deadline = start + ttl_ms / 1000
    assert table.deadline(lease, start) == deadline
    assert table.get(lease, deadline - 0.001) == bytes(10)
    assert table.stat(lease, deadline - 0.001).ttl_ms == 1
    for op in (
        lambda: table.get(lease, deadline),
        lambda: table.set(lease, b"x", deadline),
        lambda: table.renew(lease, 10, deadline),
        lambda: table.release(lease, deadline),
        lambda: table.stat(lease, deadline + 5),
    ):
        with pytest.raises(LeaseNotFound, match=rf"lease {lease} not found \(expired"):
            op()
    # Refused before expire() ran; expire() then returns the block.
    assert len(table) == 1
    assert table.expire(deadline, 100) == 1
    assert len(table) == 0
    assert table.arena.used == 0


def test_get_read_write_set() -> None:
    table = make_table()
    lease = table.grant(10, 1000, 0.0)
    table.set(lease, b"hello", 0.0)
    assert table.get(lease, 0.0) == b"hello" + bytes(5)
    table.write(lease, 7, b"abc", 0.0)
    assert table.get(lease, 0.0) == b"hello\x00\x00abc"
    table.set(lease, b"J", 0.0)
    assert table.get(lease, 0.0) == b"Jello\x00\x00abc"
    assert table.read(lease, 1, 4, 0.0) == b"ello"
    assert table.read(lease, 10, 0, 0.0) == b""
    view = table.view(lease, 0.0)
    assert len(view) == 10
    view[0:1] = b"Y"
    assert table.get(lease, 0.0)[:1] == b"Y"


@pytest.mark.parametrize(
    ("offset", "data"), [(0, b"x" * 11), (8, b"abc"), (10, b"a"), (-1, b"a"), (11, b"")]
)
def test_write_past_the_end_writes_nothing(offset: int, data: bytes) -> None:
    table = make_table()
    lease = table.grant(10, 1000, 0.0)
    table.set(lease, b"0123456789", 0.0)
    with pytest.raises(LeaseTooSmall, match="nothing was written"):
        table.write(lease, offset, data, 0.0)
    assert table.get(lease, 0.0) == b"0123456789"


def test_set_longer_than_the_lease_is_refused_even_if_the_block_is_larger() -> None:
    table = make_table()
    lease = table.grant(33, 1000, 0.0)  # a 64-byte block
    with pytest.raises(LeaseTooSmall):
        table.set(lease, bytes(34), 0.0)


@pytest.mark.parametrize(("offset", "length"), [(0, 11), (10, 1), (-1, 2), (3, -1)])
def test_read_past_the_end_is_refused(offset: int, length: int) -> None:
    table = make_table()
    lease = table.grant(10, 1000, 0.0)
    with pytest.raises(LeaseTooSmall, match="holds 10 B"):
        table.read(lease, offset, length, 0.0)


def test_memory_is_zeroed_for_the_next_tenant() -> None:
    table = make_table(64)
    first = table.grant(64, 1000, 0.0)
    table.set(first, b"\xff" * 64, 0.0)
    table.release(first, 0.0)
    second = table.grant(64, 1000, 0.0)
    assert table.get(second, 0.0) == bytes(64)


def test_renew_sets_a_new_deadline_from_now() -> None:
    table = make_table()
    lease = table.grant(10, 100, 0.0)
    table.renew(lease, 500, 0.05)
    assert table.get(lease, 0.549) == bytes(10)
    assert table.expire(0.2, 10) == 0
    assert table.next_deadline() == 0.05 + 0.5
    with pytest.raises(LeaseNotFound):
        table.get(lease, 0.55)
    # Shorter is allowed too: a new deadline from now, not an extension.
    other = table.grant(10, 1000, 0.0)
    table.renew(other, 10, 0.0)
    assert table.next_deadline() == 0.01
    assert table.expire(0.01, 10) == 1
    assert table.expire(0.55, 10) == 1
    assert table.expire(5.0, 10) == 0
    assert table.next_deadline() is None
    assert table.expired == 2


def test_release_frees_at_once() -> None:
    table = make_table(64)
    lease = table.grant(64, 1000, 0.0)
    with pytest.raises(NoRoom):
        table.grant(1, 1000, 0.0)
    table.release(lease, 0.0)
    assert len(table) == 0 and table.released == 1 and table.arena.used == 0
    with pytest.raises(LeaseNotFound):
        table.release(lease, 0.0)
    assert table.next_deadline() is None
    assert table.expire(10.0, 10) == 0


def test_expiry_in_bounded_batches_earliest_first() -> None:
    table = make_table(64 * 1024)
    leases = [table.grant(1, 1000 + i, 0.0) for i in range(250)]
    assert table.next_deadline() == 1.0
    assert table.expire(0.999, 100) == 0
    assert table.expire(100.0, 100) == 100
    assert table.expire(100.0, 100) == 100
    assert table.next_deadline() == 0.0 + 1200 / 1000
    assert table.get(leases[200], 1.1) == bytes(1)  # the latest survive a partial batch
    assert table.expire(100.0, 100) == 50
    assert table.expire(100.0, 100) == 0
    assert table.expired == 250 and len(table) == 0 and table.arena.used == 0


def test_a_grant_without_room_frees_the_earliest_expired_leases_it_needs() -> None:
    table = make_table(4096)
    first, second, third, fourth = (table.grant(1024, ttl, 0.0) for ttl in (10, 20, 30, 40))
    # 0.01, 0.02 and 0.03 are past, but the expiry task has not run.
    new = table.grant(1024, 1000, 0.035)
    assert (table.expired, len(table), table.refused) == (1, 4, 0)
    with pytest.raises(LeaseNotFound):
        table.get(first, 0.035)
    for lease in (second, third):  # past their deadlines too, though their blocks are held
        with pytest.raises(LeaseNotFound):
            table.get(lease, 0.035)
    assert table.get(new, 0.035) == bytes(1024)
    # The whole arena: both expired leases are freed, yet the live ones still hold it.
    with pytest.raises(NoRoom, match="arena full: 2 KiB of 4 KiB free"):
        table.grant(4096, 1000, 0.035)
    assert (table.expired, len(table), table.refused) == (3, 2, 1)
    assert table.get(fourth, 0.035) == bytes(1024)
    assert table.next_deadline() == 0.04
    table.grant(2048, 1000, 0.04)  # fourth is due at 0.04: freed for it
    assert (table.expired, len(table), table.arena.used) == (4, 2, 3072)
    assert table.expire(1.0, 10) == 0


def test_a_grant_frees_fewer_than_twice_the_expired_leases_it_needs() -> None:
    def filled() -> LeaseTable:
        ids = itertools.count(1)
        table = make_table(32 * 1024, int_ids=lambda: next(ids))
        for n in range(1024):
            table.grant(32, 1000 + n, 0.0)
        return table

    table, twin = filled(), filled()
    table.grant(32, 60_000, 5.0)  # one lease's room: one lease freed
    assert table.expired == 1
    table.grant(4096, 60_000, 5.0)
    # The fewest leases that, freed earliest first, leave a 4 KiB block: counted on the twin.
    twin.grant(32, 60_000, 5.0)
    while not twin.arena.has_free_block(twin.arena.order_for(4096)):
        assert twin.expire(5.0, 1) == 1
    needed = twin.expired - 1
    assert needed > 64  # a scenario that needs many
    freed = table.expired - 1
    assert needed <= freed < 2 * needed
    # Earliest first: the leases left have the latest deadlines.
    assert table.next_deadline() == pytest.approx(1.0 + table.expired / 1000)
    assert len(table) == 1024 - table.expired + 2


def test_a_grant_with_room_frees_nothing_even_with_expired_leases() -> None:
    table = make_table(4096)
    table.grant(32, 10, 0.0)
    table.grant(32, 1000, 1.0)
    assert table.expired == 0 and len(table) == 2


def test_expire_stops_at_the_first_lease_not_due() -> None:
    table = make_table()
    due = table.grant(1, 10, 0.0)
    table.grant(1, 20, 0.0)
    assert table.expire(0.015, 10) == 1
    with pytest.raises(LeaseNotFound):
        table.get(due, 0.0)
    assert len(table) == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 20_000), min_size=1, max_size=60),
    st.lists(st.tuples(st.integers(0, 30_000), st.integers(1, 40)), min_size=1, max_size=8),
)
def test_expiry_lag_counts_each_expired_lease_from_its_deadline_to_its_free(
    ttls_ms: list[int], expiries: list[tuple[int, int]]
) -> None:
    """The lag histogram, counted per chunk by binary search, against each lease's own lag:
    the microseconds from its deadline to the expire call that freed it."""
    table = make_table(64 * 1024)
    start = 0.25
    deadline_of = {table.grant(16, ttl, start): start + ttl / 1000 for ttl in ttls_ms}
    model = SecondsHistogram(EXPIRY_LAG_BOUNDS)
    now = start
    for step_ms, limit in expiries:
        now += step_ms / 1000
        due = sorted((d, lease) for lease, d in deadline_of.items() if d <= now)
        table.expire(now, limit)
        for deadline, lease in due:
            if not held(table, lease):
                lag_us = int(now * 1_000_000) - int(deadline * 1_000_000)
                # Bounds in whole microseconds (exact for these), from the constant itself.
                bounds_us = [round(bound * 1_000_000) for bound in EXPIRY_LAG_BOUNDS]
                model.counts[bisect.bisect_left(bounds_us, lag_us)] += 1
                model.total += lag_us / 1_000_000
                del deadline_of[lease]
    assert table.expiry_lag.counts == model.counts
    assert table.expiry_lag.count == table.expired
    assert table.expiry_lag.total == pytest.approx(model.total, abs=1e-6)


def test_a_bound_lease_past_its_deadline_at_its_session_end_counts_as_expired_with_its_lag() -> (
    None
):
    table = make_table()
    session = Session()
    table.grant(16, 10, 0.0, owner=session)
    table.end_session(session, 0.5)
    assert table.expired == table.expiry_lag.count == 1
    assert table.expiry_lag.total == pytest.approx(0.49)
    assert table.expiry_lag.cumulative()[-1] == (float("inf"), 1)


def test_many_renewals_keep_the_heap_bounded() -> None:
    table = make_table()
    lease = table.grant(1, 1000, 0.0)
    for step in range(5000):
        table.renew(lease, 1000, step / 1000)
    assert table.expiry_entries == len(table) == 1
    assert table.next_deadline() == pytest.approx(4.999 + 1.0)


def test_refusals_and_their_messages() -> None:
    table = make_table(4096, max_ttl_ms=1000, max_lease_size=1000)
    with pytest.raises(BadSize, match=r"ask for 1 B to 1000 B"):
        table.grant(1001, 10, 0.0)
    with pytest.raises(BadSize):
        table.grant(0, 10, 0.0)
    with pytest.raises(BadTtl, match=r"ask for 1 to 1000 ms"):
        table.grant(1, 1001, 0.0)
    with pytest.raises(BadTtl):
        table.grant(1, 0, 0.0)
    for _ in range(4):
        table.grant(1000, 1000, 0.0)
    with pytest.raises(
        NoRoom, match=r"arena full: 0 B of 4 KiB free.*try a smaller lease or later"
    ):
        table.grant(1, 1000, 0.0)
    assert table.refused == 5 and table.granted == 4
    with pytest.raises(BadTtl):
        table.renew(12345, 0, 0.0)
    with pytest.raises(LeaseNotFound, match="lease 12345 not found"):
        table.renew(12345, 10, 0.0)


def test_max_lease_size_defaults_to_the_largest_block() -> None:
    table = make_table(96 * 1024)
    assert table.max_lease_size == 64 * 1024
    capped = make_table(96 * 1024, max_lease_size=10**9)
    assert capped.max_lease_size == 64 * 1024


def test_int_ids_are_positive_31_bit_and_unique_among_live_leases() -> None:
    repeats: Iterator[int] = iter([7, 7, 7, 9])
    table = make_table(int_ids=lambda: next(repeats))
    assert table.grant(1, 1000, 0.0) == 7
    assert table.grant(1, 1000, 0.0) == 9  # 7 is live: drawn again
    table.release(7, 0.0)
    again = iter([7])
    table._int_ids = lambda: next(again)
    assert table.grant(1, 1000, 0.0) == 7  # 7 is free again


def test_default_ids_are_random_positive_31_bit() -> None:
    table = make_table(64 * 1024)
    ids = [table.grant(1, 1000, 0.0) for _ in range(500)]
    assert all(type(i) is int and 1 <= i <= MAX_INT_ID for i in ids)
    assert len(set(ids)) == 500
    assert max(ids) > 2**30  # not a counter (fails with chance 2**-500)


def test_a_stuck_or_bad_id_source_is_an_internal_error_and_costs_no_memory() -> None:
    table = make_table(int_ids=lambda: 5)
    table.grant(1, 1000, 0.0)
    used = table.arena.used
    with pytest.raises(InternalError, match="repeated"):
        table.grant(1, 1000, 0.0)
    assert table.arena.used == used
    bad = make_table(int_ids=lambda: 2**31)
    with pytest.raises(InternalError, match="outside"):
        bad.grant(1, 1000, 0.0)
    assert bad.arena.used == 0


def test_uuid_ids_are_version_4_and_a_separate_id_space() -> None:
    table = make_table()
    u = table.grant(8, 1000, 0.0, IdKind.UUID)
    assert isinstance(u, uuid.UUID) and u.version == 4
    fixed = uuid.UUID(int=5, version=4)
    shared = make_table(int_ids=lambda: fixed.int, uuid_ids=lambda: fixed)
    with pytest.raises(InternalError):  # fixed.int is far above 31 bits
        shared.grant(1, 1000, 0.0)
    same = make_table(int_ids=lambda: 5, uuid_ids=lambda: uuid.UUID(int=5))
    by_int = same.grant(4, 1000, 0.0)
    by_uuid = same.grant(8, 1000, 0.0, IdKind.UUID)
    assert by_int == 5 and by_uuid == uuid.UUID(int=5)
    same.set(by_uuid, b"uuid", 0.0)
    assert same.get(5, 0.0) == bytes(4)  # the int id never reaches the UUID lease
    assert same.stat(by_uuid, 0.0).size == 8
    with pytest.raises(LeaseNotFound):
        same.get(uuid.UUID(int=6), 0.0)
    same.release(5, 0.0)
    with pytest.raises(LeaseNotFound):
        same.get(5, 0.0)
    assert same.get(by_uuid, 0.0) == b"uuid" + bytes(4)
    assert same.expire(1.0, 10) == 1
    with pytest.raises(LeaseNotFound):
        same.get(by_uuid, 0.5)


def test_stat_rounds_the_remaining_ttl_up() -> None:
    table = make_table()
    lease = table.grant(20, 1000, 0.0)
    assert table.stat(lease, 0.0) == (20, 1000, 1)
    assert table.stat(lease, 0.0004).ttl_ms == 1000
    assert table.stat(lease, 0.001) == (20, 999, 1)
    assert table.stat(lease, 0.9995).ttl_ms == 1


class LeaseModel(RuleBasedStateMachine):
    """The table against a dict of id -> (bytearray, deadline), with time moving forward.

    The table's expiry order has chunks of 2 to 4 entries, so that a few dozen leases split
    and merge them as 2M leases split and merge chunks of 512.
    """

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        counter = itertools.count(1)
        self.table = LeaseTable(
            BuddyArena(1024, min_block=16),
            max_ttl_ms=100,
            int_ids=lambda: next(counter) % 50 + 1,  # small, so that ids get reused
        )
        self.table._order = DeadlineOrder(load=2)
        self.model: dict[LeaseId, tuple[bytearray, float]] = {}
        self.now = 0.0

    def _live(self, lease: LeaseId) -> bool:
        return lease in self.model and self.now < self.model[lease][1]

    @rule(
        target=leases,
        size=st.integers(1, 300),
        ttl=st.integers(1, 100),
        kind=st.sampled_from(IdKind),
    )
    def grant(self, size: int, ttl: int, kind: IdKind) -> LeaseId:
        """A grant without room frees expired leases, earliest first, before it refuses: a
        refusal leaves no expired lease holding memory, and with no lease live it never
        comes. A grant with room frees nothing."""
        table = self.table
        had_room = table.arena.has_free_block(table.arena.order_for(size))
        expired = table.expired
        try:
            lease = table.grant(size, ttl, self.now, kind)
        except NoRoom:
            lease = -1
        gone = self._forget_freed()
        assert table.expired - expired == len(gone)
        if had_room:
            assert not gone and lease != -1
        if lease == -1:
            assert not any(d <= self.now for _, d in self.model.values()), "refused, yet due"
            assert any(d > self.now for _, d in self.model.values()), "refused, none live"
            return lease
        assert not self._live(lease)
        self.model[lease] = (bytearray(size), self.now + ttl / 1000)
        return lease

    def _forget_freed(self) -> dict[LeaseId, float]:
        """The model's leases the table no longer holds (each was due), earliest first,
        taken out of the model."""
        gone = {lease: d for lease, (_, d) in self.model.items() if not self._held(lease)}
        assert all(d <= self.now for d in gone.values()), "a live lease was freed"
        # Earliest first: no lease left behind was due before one freed. To the microsecond,
        # as expire promises: 0.172 and 0.17200000000000001 are the same instant to it.
        left_due = [
            int(d * 1_000_000)
            for lease, (_, d) in self.model.items()
            if d <= self.now and lease not in gone
        ]
        freed_at = [int(d * 1_000_000) for d in gone.values()]
        assert not freed_at or not left_due or max(freed_at) <= min(left_due)
        for lease in gone:
            del self.model[lease]
        return gone

    @rule(lease=leases, offset=st.integers(0, 300), data=st.binary(max_size=40))
    def write(self, lease: LeaseId, offset: int, data: bytes) -> None:
        if not self._live(lease):
            with pytest.raises(LeaseNotFound):
                self.table.write(lease, offset, data, self.now)
            return
        region = self.model[lease][0]
        if offset + len(data) > len(region):
            with pytest.raises(LeaseTooSmall):
                self.table.write(lease, offset, data, self.now)
        else:
            self.table.write(lease, offset, data, self.now)
            region[offset : offset + len(data)] = data

    @rule(lease=leases)
    def get(self, lease: LeaseId) -> None:
        if self._live(lease):
            assert self.table.get(lease, self.now) == self.model[lease][0]
        else:
            with pytest.raises(LeaseNotFound):
                self.table.get(lease, self.now)

    @rule(lease=leases, ttl=st.integers(1, 100))
    def renew(self, lease: LeaseId, ttl: int) -> None:
        if self._live(lease):
            self.table.renew(lease, ttl, self.now)
            self.model[lease] = (self.model[lease][0], self.now + ttl / 1000)
        else:
            with pytest.raises(LeaseNotFound):
                self.table.renew(lease, ttl, self.now)

    @rule(
        ttl=st.integers(1, 100),
        rounds=st.integers(1, 3),
        step_ms=st.integers(0, 2),
        order=st.randoms(use_true_random=False),
    )
    def renew_storm(self, ttl: int, rounds: int, step_ms: int, order: random.Random) -> None:
        """Every lease renewed to one ttl, round after round, in random order, so that each
        renewal moves a deadline past the others; next_deadline after each renewal, as the
        server asks after a batch of requests."""
        for _ in range(rounds):
            every = list(self.model)
            order.shuffle(every)
            for lease in every:
                self.now += step_ms / 1000
                self.renew(lease, ttl)
                self.next_deadline_is_the_earliest()

    @rule(lease=leases)
    def release(self, lease: LeaseId) -> None:
        if self._live(lease):
            self.table.release(lease, self.now)
            del self.model[lease]
        else:
            with pytest.raises(LeaseNotFound):
                self.table.release(lease, self.now)

    @rule(ms=st.integers(0, 60), limit=st.integers(1, 5))
    def tick_and_expire(self, ms: int, limit: int) -> None:
        self.now += ms / 1000
        due = [d for _, d in self.model.values() if d <= self.now]
        freed = self.table.expire(self.now, limit)
        assert freed == min(limit, len(due))
        assert len(self._forget_freed()) == freed

    def _held(self, lease: LeaseId) -> bool:
        """Still in the table, due or not (expire has not freed it)."""
        maps = self.table._by_uuid if isinstance(lease, uuid.UUID) else self.table._by_int
        return any(lease in ids for ids in maps)

    @invariant()
    def next_deadline_is_the_earliest(self) -> None:
        deadlines = [d for _, d in self.model.values()]
        earliest = self.table.next_deadline()
        if not deadlines:
            assert earliest is None
            return
        # The heap orders to the microsecond: deadlines within one microsecond may come in
        # either order (0.288 and 0.28800000000000003 are the same instant to it).
        assert earliest is not None
        assert earliest in deadlines
        assert abs(earliest - min(deadlines)) < 1e-6

    @invariant()
    def expiry_order_holds_one_entry_per_lease(self) -> None:
        table = self.table
        entries = check_order(table._order)
        assert table.expiry_entries == len(entries) == len(self.model)
        slots = [entry & table._slot_mask for entry in entries]
        for entry, slot in zip(entries, slots, strict=True):
            assert entry >> table._slot_bits == int(table._deadlines[slot] * 1_000_000)
        assert sorted(table._deadlines[slot] for slot in slots) == sorted(
            d for _, d in self.model.values()
        )

    @invariant()
    def arena_holds_exactly_the_model(self) -> None:
        assert len(self.table) == len(self.model)
        assert self.table.arena.live_blocks == len(self.model)


TestLeaseModel = LeaseModel.TestCase
TestLeaseModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


class SessionModel(RuleBasedStateMachine):
    """Versions, batches, bound leases and notices against a model: each lease's bytes,
    deadline, version and owning session; each session's watches, and the notices it must
    have been told (checked, as a multiset, after every step)."""

    leases = Bundle("session_leases")
    SESSIONS = 3

    def __init__(self) -> None:
        super().__init__()
        counter = itertools.count(1)
        self.table = LeaseTable(
            BuddyArena(1024, min_block=16),
            max_ttl_ms=100,
            int_ids=lambda: next(counter) % 50 + 1,
        )
        self.heard: list[list[Notice]] = [[] for _ in range(self.SESSIONS)]
        self.sessions = [self._session(i) for i in range(self.SESSIONS)]
        # id -> (region, deadline, version, owner index or None)
        self.model: dict[LeaseId, tuple[bytearray, float, int, int | None]] = {}
        self.watchers: dict[LeaseId, set[int]] = {}
        self.expected: list[list[Notice]] = [[] for _ in range(self.SESSIONS)]
        self.now = 0.0

    def _session(self, index: int) -> Session:
        return Session(self.heard[index].append)

    def _live(self, lease: LeaseId) -> bool:
        return lease in self.model and self.now < self.model[lease][1]

    def _ended(self, lease: LeaseId, reason: EndReason) -> None:
        del self.model[lease]
        for index in self.watchers.pop(lease, set()):
            self.expected[index].append(Notice(lease, reason))

    @rule(
        target=leases,
        count=st.integers(1, 4),
        size=st.integers(1, 200),
        ttl=st.integers(1, 100),
        owner=st.none() | st.integers(0, SESSIONS - 1),
    )
    def grant_many(self, count: int, size: int, ttl: int, owner: int | None) -> LeaseId:
        session = None if owner is None else self.sessions[owner]
        blocks = self.table.arena.live_blocks
        try:
            granted = self.table.grant_many(count, size, ttl, self.now, IdKind.INT, session)
        except NoRoom:
            assert self.table.arena.live_blocks == blocks  # none left behind
            return -1
        assert len(granted) == count
        for lease in granted:
            assert not self._live(lease)
            self.model[lease] = (bytearray(size), self.now + ttl / 1000, 1, owner)
        return granted[0]

    @rule(lease=leases, offset=st.integers(0, 200), data=st.binary(max_size=30))
    def write(self, lease: LeaseId, offset: int, data: bytes) -> None:
        if not self._live(lease):
            with pytest.raises(LeaseNotFound):
                self.table.write(lease, offset, data, self.now)
            return
        region, deadline, version, owner = self.model[lease]
        if offset + len(data) > len(region):
            with pytest.raises(LeaseTooSmall):
                self.table.write(lease, offset, data, self.now)
            return
        assert self.table.write(lease, offset, data, self.now) == version + 1
        region[offset : offset + len(data)] = data
        self.model[lease] = (region, deadline, version + 1, owner)

    @rule(lease=leases, stale=st.booleans(), data=st.binary(max_size=30))
    def cas(self, lease: LeaseId, stale: bool, data: bytes) -> None:
        if not self._live(lease):
            with pytest.raises(LeaseNotFound):
                self.table.cas(lease, 1, 0, data, self.now)
            return
        region, deadline, version, owner = self.model[lease]
        if len(data) > len(region):
            with pytest.raises(LeaseTooSmall):
                self.table.cas(lease, version - stale, 0, data, self.now)
            return
        if stale:
            assert self.table.cas(lease, version - 1, 0, data, self.now) == (False, version)
        else:
            assert self.table.cas(lease, version, 0, data, self.now) == (True, version + 1)
            region[: len(data)] = data
            self.model[lease] = (region, deadline, version + 1, owner)

    @rule(lease=leases)
    def gets(self, lease: LeaseId) -> None:
        if self._live(lease):
            region, _, version, _ = self.model[lease]
            view, found = self.table.gets(lease, self.now)
            assert (view.tobytes(), found) == (bytes(region), version)
            assert self.table.stat(lease, self.now).version == version
        else:
            with pytest.raises(LeaseNotFound):
                self.table.gets(lease, self.now)

    @rule(ids=st.lists(leases, max_size=4), ttl=st.integers(1, 100))
    def renew_many(self, ids: list[LeaseId], ttl: int) -> None:
        expected_missing = []
        for lease in ids:
            if self._live(lease):
                region, _, version, owner = self.model[lease]
                self.model[lease] = (region, self.now + ttl / 1000, version, owner)
            else:
                expected_missing.append(lease)
        assert self.table.renew_many(ids, ttl, self.now) == expected_missing

    @rule(ids=st.lists(leases, max_size=4))
    def release_many(self, ids: list[LeaseId]) -> None:
        expected_missing = []
        for lease in ids:
            if self._live(lease):
                self._ended(lease, EndReason.RELEASED)
            else:
                expected_missing.append(lease)
        assert self.table.release_many(ids, self.now) == expected_missing

    @rule(index=st.integers(0, SESSIONS - 1), ids=st.lists(leases, min_size=1, max_size=3))
    def watch(self, index: int, ids: list[LeaseId]) -> None:
        if all(self._live(lease) for lease in ids):
            self.table.watch(ids, self.sessions[index], self.now)
            for lease in ids:
                self.watchers.setdefault(lease, set()).add(index)
        else:
            with pytest.raises(LeaseNotFound):
                self.table.watch(ids, self.sessions[index], self.now)

    @rule(index=st.integers(0, SESSIONS - 1), ids=st.lists(leases, min_size=1, max_size=3))
    def unwatch(self, index: int, ids: list[LeaseId]) -> None:
        not_watched = []
        for lease in ids:
            # Held, even past its deadline (not yet expired): a watch of it is still a watch.
            if lease in self.model and index in self.watchers.get(lease, set()):
                self.watchers[lease].discard(index)
            else:
                not_watched.append(lease)
        assert self.table.unwatch(ids, self.sessions[index], self.now) == not_watched

    @rule(index=st.integers(0, SESSIONS - 1))
    def connection_closes(self, index: int) -> None:
        for watched in self.watchers.values():
            watched.discard(index)
        for lease, (_, deadline, _, owner) in list(self.model.items()):
            if owner == index:
                reason = EndReason.EXPIRED if deadline <= self.now else EndReason.CLOSED
                self._ended(lease, reason)
        self.table.end_session(self.sessions[index], self.now)
        self.sessions[index] = self._session(index)  # the next connection

    @rule(ms=st.integers(0, 60))
    def tick_and_expire(self, ms: int) -> None:
        self.now += ms / 1000
        due = [lease for lease, (_, d, _, _) in self.model.items() if d <= self.now]
        assert self.table.expire(self.now, len(self.model) + 1) == len(due)
        for lease in due:
            self._ended(lease, EndReason.EXPIRED)

    @invariant()
    def every_session_heard_exactly_its_notices(self) -> None:
        for heard, expected in zip(self.heard, self.expected, strict=True):
            assert sorted(map(repr, heard)) == sorted(map(repr, expected))
            heard.clear()
            expected.clear()

    @invariant()
    def bound_and_watched_bookkeeping_matches(self) -> None:
        assert len(self.table) == len(self.model)
        for index, session in enumerate(self.sessions):
            owned = {lease for lease, (*_, owner) in self.model.items() if owner == index}
            assert len(session.bound) == len(owned)
            watched = {lease for lease, who in self.watchers.items() if index in who}
            assert len(session.watching) == len(watched)
        assert self.table.watches == sum(map(len, self.watchers.values()))


TestSessionModel = SessionModel.TestCase
TestSessionModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
