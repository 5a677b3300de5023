"""BuddyArena: examples at the edges, then a stateful property test of its invariants."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from memlease.core.arena import BuddyArena, format_bytes
from memlease.core.errors import BadSize, ConfigError, InternalError, NoRoom


def test_size_not_a_power_of_two_is_covered_by_top_level_blocks() -> None:
    arena = BuddyArena(13 * 32)
    assert arena.top_level_blocks == [(0, 256), (256, 128), (384, 32)]
    assert arena.size == 416
    offsets = [arena.alloc(32) for _ in range(13)]
    assert sorted(offsets) == [i * 32 for i in range(13)]
    with pytest.raises(NoRoom):
        arena.alloc(1)


def test_size_not_a_multiple_of_min_block_is_rounded_down() -> None:
    arena = BuddyArena(100, min_block=32)
    assert arena.size == 96
    assert arena.requested_size == 100
    assert arena.figures().free == 96


@pytest.mark.parametrize(
    ("size", "min_block", "fragment"),
    [(1024, 24, "power of two"), (1024, 0, "power of two"), (16, 32, "smaller than")],
)
def test_bad_configuration_is_refused(size: int, min_block: int, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        BuddyArena(size, min_block=min_block)


def test_alloc_takes_the_smallest_block_that_fits() -> None:
    arena = BuddyArena(1024, min_block=32)
    assert arena.block_size(arena.alloc(1)) == 32
    assert arena.block_size(arena.alloc(32)) == 32
    assert arena.block_size(arena.alloc(33)) == 64
    assert arena.block_size(arena.alloc(129)) == 256
    assert arena.order_for(1) == 0
    assert arena.order_for(1024) == 5
    with pytest.raises(BadSize):
        arena.alloc(0)


def test_freed_buddies_coalesce_up_to_the_top() -> None:
    arena = BuddyArena(256, min_block=32)
    offsets = [arena.alloc(32) for _ in range(8)]
    assert arena.largest_free == 0
    for offset in offsets[:-1]:
        arena.free(offset)
    assert arena.largest_free == 128
    arena.free(offsets[-1])
    assert arena.free_blocks() == [(0, 256)]


def test_figures() -> None:
    arena = BuddyArena(1024, min_block=32)
    offset = arena.alloc(100)
    figures = arena.figures()
    assert (figures.size, figures.used, figures.free) == (1024, 128, 896)
    assert figures.internal_fragmentation == 28
    assert figures.largest_free == 512
    assert figures.external_fragmentation == pytest.approx(1 - 512 / 896)
    assert figures.live_blocks == 1
    arena.free(offset)
    assert arena.figures().external_fragmentation == 0.0
    assert arena.figures().internal_fragmentation == 0
    full = BuddyArena(32)
    full.alloc(32)
    assert full.figures().external_fragmentation == 0.0


def test_view_is_the_whole_block_without_a_copy() -> None:
    arena = BuddyArena(1024)
    offset = arena.alloc(40)
    view = arena.view(offset)
    assert len(view) == 64
    view[:3] = b"abc"
    assert bytes(arena.memory[offset : offset + 3]) == b"abc"


def test_new_blocks_are_zeroed_even_if_an_old_view_wrote_after_free() -> None:
    arena = BuddyArena(64)
    offset = arena.alloc(64)
    stale = arena.view(offset)
    arena.free(offset)
    stale[:] = b"\xff" * 64
    again = arena.alloc(64)
    assert bytes(arena.view(again)) == bytes(64)


def test_free_of_a_bad_offset_is_refused() -> None:
    arena = BuddyArena(1024)
    offset = arena.alloc(64)
    for bad in (offset + 1, offset + 32, -32, 4096):
        with pytest.raises(InternalError):
            arena.free(bad)
    arena.free(offset)
    with pytest.raises(InternalError):
        arena.free(offset)


def test_free_many_of_a_bad_or_repeated_offset_frees_nothing() -> None:
    arena = BuddyArena(1024)
    first, second = arena.alloc(64), arena.alloc(64)
    before = arena.free_blocks()
    with pytest.raises(InternalError, match="not the start of an allocated block"):
        arena.free_many([first, second + 32])
    with pytest.raises(InternalError, match="given twice"):
        arena.free_many([second, first, second])
    assert arena.free_blocks() == before and arena.live_blocks == 2
    arena.free_many([second, first])
    assert arena.free_blocks() == [(0, 1024)]


def _state(arena: BuddyArena) -> tuple[object, ...]:
    return (
        [sorted(units) for units in arena._free],
        bytes(arena._order_plus_one),
        arena._asked.tolist(),
        arena.figures(),
    )


@given(
    units=st.integers(min_value=1, max_value=96),
    min_block=st.sampled_from([1, 16]),
    sizes=st.lists(st.integers(min_value=1, max_value=700), max_size=60),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_free_many_leaves_the_state_single_frees_leave(
    units: int, min_block: int, sizes: list[int], data: st.DataObject
) -> None:
    def filled() -> tuple[BuddyArena, list[int]]:
        arena = BuddyArena(units * min_block, min_block=min_block)
        offsets = []
        for nbytes in sizes:
            with contextlib.suppress(NoRoom):
                offsets.append(arena.alloc(nbytes))
        return arena, offsets

    one_by_one, offsets = filled()
    batched, same = filled()
    assert offsets == same
    chosen = data.draw(st.lists(st.sampled_from(offsets), unique=True)) if offsets else []
    for offset in data.draw(st.permutations(chosen)):
        one_by_one.free(offset)
    batched.free_many(data.draw(st.permutations(chosen)))
    assert _state(batched) == _state(one_by_one)
    for nbytes in sizes:  # and both grant the same from then on (which free block a set
        try:  # gives first is the sets' own business)
            expected = one_by_one.block_size(one_by_one.alloc(nbytes))
        except NoRoom:
            with pytest.raises(NoRoom):
                batched.alloc(nbytes)
        else:
            assert batched.block_size(batched.alloc(nbytes)) == expected
        assert batched.figures() == one_by_one.figures()


def test_no_room_messages_say_what_to_do() -> None:
    arena = BuddyArena(96 * 1024 * 1024)
    with pytest.raises(NoRoom, match=r"largest block of this 96 MiB arena is 64 MiB"):
        arena.alloc(65 * 1024 * 1024)
    arena.alloc(64 * 1024 * 1024)
    with pytest.raises(
        NoRoom, match=r"arena full: 32 MiB of 96 MiB free, largest free block 32 MiB"
    ):
        arena.alloc(40 * 1024 * 1024)


def test_format_bytes() -> None:
    assert format_bytes(100) == "100 B"
    assert format_bytes(64 * 1024 * 1024) == "64 MiB"
    assert format_bytes(1536) == "1.5 KiB"


class ArenaMachine(RuleBasedStateMachine):
    """Random allocs and frees against the arena's invariants."""

    blocks = Bundle("blocks")

    @initialize(
        units=st.integers(min_value=1, max_value=64),
        min_block=st.sampled_from([1, 8, 32]),
    )
    def make_arena(self, units: int, min_block: int) -> None:
        # Sizes that are and are not powers of two.
        self.arena = BuddyArena(units * min_block, min_block=min_block)
        self.initial = self.arena.free_blocks()
        self.live: dict[int, int] = {}

    @rule(target=blocks, nbytes=st.integers(min_value=1, max_value=2048))
    def alloc(self, nbytes: int) -> list[int]:
        arena = self.arena
        order = arena.order_for(nbytes)
        possible = order <= arena.max_order and arena.has_free_block(order)
        try:
            offset = arena.alloc(nbytes)
        except NoRoom:
            assert not possible, "refused although a free block of a sufficient order existed"
            return []
        assert possible
        assert bytes(arena.view(offset)) == bytes(arena.block_size(offset))
        assert nbytes <= arena.block_size(offset) < 2 * max(nbytes, arena.min_block)
        # Garbage, so that a block handed out again without zeroing is caught.
        arena.view(offset)[:] = b"\xa5" * arena.block_size(offset)
        self.live[offset] = nbytes
        return [offset]

    @rule(offsets=consumes(blocks))
    def free(self, offsets: list[int]) -> None:
        for offset in offsets:
            if offset in self.live:
                del self.live[offset]
                self.arena.free(offset)

    @rule(data=st.data())
    def free_a_batch(self, data: st.DataObject) -> None:
        live = sorted(self.live)
        batch = data.draw(st.lists(st.sampled_from(live), unique=True)) if live else []
        self.arena.free_many(batch)
        for offset in batch:
            del self.live[offset]

    @rule()
    def free_everything(self) -> None:
        for offset in list(self.live):
            self.arena.free(offset)
        self.live.clear()
        assert self.arena.free_blocks() == self.initial

    @invariant()
    def blocks_are_disjoint_and_inside(self) -> None:
        arena = self.arena
        spans = sorted((o, arena.block_size(o)) for o in self.live)
        spans += arena.free_blocks()
        spans.sort()
        end = 0
        for offset, size in spans:
            assert offset >= end, "blocks overlap"
            assert offset % size == 0, "block not aligned to its size"
            end = offset + size
        assert end <= arena.size
        assert sum(size for _, size in spans) == arena.size

    @invariant()
    def figures_add_up(self) -> None:
        figures = self.arena.figures()
        assert figures.used + figures.free == figures.size
        assert figures.used == sum(self.arena.block_size(o) for o in self.live)
        assert figures.internal_fragmentation == figures.used - sum(self.live.values())
        assert figures.live_blocks == len(self.live)


TestArenaMachine = ArenaMachine.TestCase
TestArenaMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
