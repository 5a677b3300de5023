"""No call on the lease table waits on a rebuild (issue 16, item 5).

The table once kept its deadlines in a heap with lazy deletion: every renewal left an entry
behind, one request now and then rebuilt the whole heap, and ``next_deadline`` or ``expire``
skipped every left-behind entry ahead of the first live one. With 2M leases either took
seconds while every client waited. The deadlines now live in a DeadlineOrder, one entry per
lease, kept in order by each call: there is nothing to compact.

The work of a call is counted as the lines it executes in memlease/core/leases.py (anything
per entry, be it a rebuild or a skip, runs at least one line per entry), never timed.
"""

from __future__ import annotations

import itertools
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memlease.core.leases as leases_module
from memlease.core.arena import BuddyArena
from memlease.core.deadline_order import DeadlineOrder
from memlease.core.errors import InternalError
from memlease.core.leases import LeaseTable
from memlease.core.messages import IdKind, LeaseId


def check_order(order: DeadlineOrder) -> list[int]:
    """The order's entries, after checking its chunks: sorted, within their size bounds,
    indexed by their last entries, and counted."""
    chunks = order._chunks
    load = order._load
    assert order._maxes == [chunk[-1] for chunk in chunks]
    if len(chunks) > 1:
        assert all(load // 2 < len(chunk) <= 2 * load for chunk in chunks)
    else:
        assert all(0 < len(chunk) <= 2 * load for chunk in chunks)
    entries = [entry for chunk in chunks for entry in chunk]
    assert entries == sorted(set(entries))
    assert len(order) == len(entries)
    assert order.first() == (entries[0] if entries else None)
    return entries


def held(table: LeaseTable, lease: LeaseId) -> bool:
    """Still in the table, due or not (expire has not freed it)."""
    maps = table._by_uuid if isinstance(lease, uuid.UUID) else table._by_int
    return any(lease in ids for ids in maps)


# ---------------------------------------------------------------------- DeadlineOrder


@settings(max_examples=200, deadline=None)
@given(
    load=st.integers(2, 6),
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "remove", "drop_head"]), st.integers(0, 200)),
        max_size=300,
    ),
)
def test_deadline_order_against_a_sorted_list(load: int, ops: list[tuple[str, int]]) -> None:
    order = DeadlineOrder(load=load)
    model: list[int] = []
    for op, value in ops:
        if op == "add" and value not in model:
            order.add(value)
            model.append(value)
        elif op == "remove" and model:
            victim = model[value % len(model)]
            order.remove(victim)
            model.remove(victim)
        elif op == "drop_head":
            head = order.head()
            count = min(value % 4, len(head))
            least = sorted(model)[:count]
            assert head[:count] == least
            order.drop_head(count)
            for entry in least:
                model.remove(entry)
        assert check_order(order) == sorted(model)


def test_removing_an_entry_that_is_not_there_is_an_internal_error() -> None:
    order = DeadlineOrder(load=2)
    for entry in (5, 1, 9, 3, 7):
        order.add(entry)
    for missing in (0, 4, 10):
        with pytest.raises(InternalError, match="missing"):
            order.remove(missing)
    assert check_order(order) == [1, 3, 5, 7, 9]


def test_chunks_stay_few_and_full_through_churn() -> None:
    """The chunk index stays short (each split or merge moves it whole) and no chunk grows
    past 2 * load (each insert or removal moves a chunk's tail)."""
    order = DeadlineOrder(load=8)
    rng = random.Random(5)
    live: set[int] = set()
    for step in range(20_000):
        if len(live) < 500 or rng.random() < 0.5:
            entry = rng.randrange(1 << 40)
            if entry not in live:
                order.add(entry)
                live.add(entry)
        else:
            entry = rng.choice(tuple(live)) if step % 7 else min(live)
            order.remove(entry)
            live.discard(entry)
        assert len(order._chunks) <= 2 * len(live) // 8 + 1
    assert check_order(order) == sorted(live)


# ---------------------------------------------------------------------- work per call


@contextmanager
def lines_run_in_leases() -> Iterator[Callable[[], int]]:
    """Counts the lines executed in memlease/core/leases.py while the block runs."""
    count = 0
    target = leases_module.__file__

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == target else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield lambda: count
    finally:
        sys.settrace(previous)


class WorstCall:
    """The most lines any one call of each kind ran."""

    def __init__(self) -> None:
        self.worst: dict[str, int] = {}

    def __call__(self, kind: str, call: Callable[..., Any], *args: Any) -> Any:
        with lines_run_in_leases() as lines:
            result = call(*args)
        self.worst[kind] = max(self.worst.get(kind, 0), lines())
        return result


PER_CALL_LINES = 80
"""Lines a call on one lease may run: its own, a lookup, a removal and an insert with a
chunk split or merge. The old heap ran thousands in one call of the storm below."""

EXPIRE_LINES = 40
EXPIRE_LINES_PER_LEASE = 15


def renew_storm(
    leases: int, *, ask_every: int = 1, one_ttl: bool = True, rounds: int = 3, seed: int = 7
) -> WorstCall:
    """Leases renewed in random order round after round, with next_deadline after every
    ``ask_every`` renewals (as the server asks after a batch that moved a deadline), some
    released and granted again, then all expired in batches of 100.

    With ``one_ttl`` every renewal moves a deadline past all the others (a lazily cleaned
    heap then has its left-behind entries ahead of the first live one); without, ttls are
    random from 5 to 15 s (its left-behind entries then pile up until a rebuild)."""
    rng = random.Random(seed)
    # Ids from a counter: the CSPRNG source refills 1024 ids in one grant out of 1024,
    # work of its own that does not grow with the table either.
    ints = itertools.count(1)
    table = LeaseTable(
        BuddyArena(leases * 32, min_block=32),
        max_ttl_ms=60_000,
        int_ids=ints.__next__,
        uuid_ids=lambda: uuid.UUID(int=next(ints), version=4),
    )
    worst = WorstCall()
    now = 0.0
    ids: list[LeaseId] = [
        worst("grant", table.grant, 32, 10_000, now, rng.choice(list(IdKind)))
        for _ in range(leases)
    ]
    for _ in range(rounds):
        rng.shuffle(ids)
        for at, lease in enumerate(ids):
            now += 0.0001
            ttl = 10_000 if one_ttl else rng.randint(5000, 15_000)
            worst("renew", table.renew, lease, ttl, now)
            if at % ask_every == 0:
                worst("next_deadline", table.next_deadline)
            if at % 10 == 0:
                worst("release", table.release, lease, now)
                ids[at] = worst("grant", table.grant, 32, 10_000, now)
            assert len(table) == leases
    now += 20.0
    while worst("expire", table.expire, now, 100):
        worst("next_deadline", table.next_deadline)
    assert len(table) == 0 and table.arena.used == 0
    return worst


@pytest.mark.parametrize(
    ("leases", "ask_every", "one_ttl"), [(300, 1, True), (3000, 1, True), (3000, 64, False)]
)
def test_no_call_in_a_renew_storm_does_work_that_grows_with_the_table(
    leases: int, ask_every: int, one_ttl: bool
) -> None:
    worst = renew_storm(leases, ask_every=ask_every, one_ttl=one_ttl)
    single = {kind: lines for kind, lines in worst.worst.items() if kind != "expire"}
    assert max(single.values()) <= PER_CALL_LINES, single
    assert worst.worst["expire"] <= EXPIRE_LINES + EXPIRE_LINES_PER_LEASE * 100, worst.worst


def test_the_expiry_order_holds_one_entry_per_lease_through_a_storm() -> None:
    """Nothing is left behind by a renewal or a release, so memory stays bounded by the
    live leases and no call ever has stale entries to skip or rebuild."""
    rng = random.Random(11)
    table = LeaseTable(BuddyArena(2000 * 32, min_block=32), max_ttl_ms=60_000)
    ids = [table.grant(32, 10_000, 0.0) for _ in range(2000)]
    for step in range(10_000):
        now = step / 10_000
        at = rng.randrange(len(ids))
        table.renew(ids[at], rng.choice([10_000, rng.randint(2000, 20_000)]), now)
        if step % 7 == 0:
            table.release(ids[at], now)
            ids[at] = table.grant(32, 10_000, now)
        assert table.expiry_entries == len(table) == 2000
    assert check_order(table._order) == sorted(
        (int(table.deadline(lease, 1.0) * 1_000_000) << table._slot_bits) | table._slot(lease, 1.0)
        for lease in ids
    )


def test_next_deadline_and_expire_stay_exact_through_a_storm() -> None:
    table = LeaseTable(BuddyArena(64 * 1024, min_block=32), max_ttl_ms=60_000)
    table._order = DeadlineOrder(load=2)
    rng = random.Random(3)
    deadlines: dict[LeaseId, float] = {}
    for _ in range(500):
        lease = table.grant(8, 1000, 0.0)
        deadlines[lease] = 1.0
    now = 0.0
    for step in range(3000):
        now += 0.0001
        lease = rng.choice([lease for lease, d in deadlines.items() if d > now])
        ttl = rng.choice([1000, rng.randint(1, 2000)])
        table.renew(lease, ttl, now)
        deadlines[lease] = now + ttl / 1000
        if step % 50 == 0:
            due = [lease for lease, d in deadlines.items() if d <= now]
            assert table.expire(now, 3) == min(3, len(due))
            gone = [lease for lease in due if not held(table, lease)]
            left = [lease for lease in due if lease not in gone]
            assert len(gone) == min(3, len(due))
            # Earliest first, to the microsecond the order keeps.
            if gone and left:
                assert max(deadlines[g] for g in gone) < min(deadlines[k] for k in left) + 1e-6
            for lease in gone:
                del deadlines[lease]
        assert table.next_deadline() == pytest.approx(min(deadlines.values()), abs=1e-6)
    assert check_order(table._order) == sorted(
        (int(d * 1_000_000) << table._slot_bits) | table._slot(lease, 0.0)
        for lease, d in deadlines.items()
    )


# ---------------------------------------------------------------------- id maps


def test_no_id_map_holds_more_than_a_small_share_of_the_leases() -> None:
    """A dict copies every entry when it grows or sheds the dummies of deleted keys: at 2M
    leases one map would stall a grant for 50 ms and more, again and again under churn."""
    leases = 20_000
    table = LeaseTable(BuddyArena((leases + 1) * 32, min_block=32), max_ttl_ms=60_000)
    for i in range(leases):
        table.grant(1, 1000, 0.0, IdKind.UUID if i % 2 else IdKind.INT)
    # Every attribute, whether the table keeps them in a __dict__ or (compiled) does not.
    values = [getattr(table, name) for name in dir(table) if not name.startswith("__")]
    dicts = [
        d
        for value in values
        for d in (value if isinstance(value, list) else [value])
        if isinstance(d, dict)
    ]
    assert dicts
    assert max(len(d) for d in dicts) <= leases // 64
    assert len(table) == leases
    some = table.grant(1, 1000, 0.0, IdKind.UUID)
    assert isinstance(some, uuid.UUID) and table.get(some, 0.5) == b"\0"
    table.release(some, 0.5)
    assert table.expire(1.0, leases) == leases and len(table) == 0
