"""The fleet's server rules, sans-IO: placement by power of two choices on free memory, a
failed server refused at once until its doubling back-off ends, membership from discovery."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memlease import ConfigError, ServerUnavailable
from memlease.client.server_set import ServerSet, ServerState, as_address
from memlease.core.messages import ServerStats

ARENA = 64 << 20


def _stats(free: int, largest: int | None = None) -> ServerStats:
    return ServerStats(ARENA, ARENA - free, free, free if largest is None else largest,
                       0, 0.0, 0, 0, 0, 0, 0, 0)  # fmt: skip


def _place(servers: ServerSet, used: dict[ServerState, int], size: int, now: float) -> ServerState:
    """One lease as a fleet places it, against servers that hold what ``used`` says."""
    candidates = servers.candidates(now)
    for state in candidates[:2]:
        if servers.needs_stats(state, now):
            servers.update_stats(state, _stats(ARENA - used[state]), now)
    for state in servers.order(candidates, size):
        if ARENA - used[state] >= size:
            used[state] += size
            servers.placed(state, size)
            return state
        servers.refused(state)
    raise AssertionError("no room anywhere")


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 8),
    st.integers(0, 10_000),
    st.lists(st.integers(1, 64 << 10), min_size=200, max_size=400),
)
def test_placement_spreads_memory_evenly(count: int, seed: int, sizes: list[int]) -> None:
    servers = ServerSet(stats_every=0.5, rng=random.Random(seed))
    servers.set_members((f"10.0.0.{i}", 7413) for i in range(count))
    used = {state: 0 for state in servers.members}
    for step, size in enumerate(sizes):
        _place(servers, used, size, now=step * 0.01)
    # Two random choices keep every server within a few leases of the mean.
    mean = sum(used.values()) / count
    assert max(used.values()) - mean <= 4 * max(sizes)


def test_the_server_with_more_free_memory_and_room_is_tried_first() -> None:
    servers = ServerSet(rng=random.Random(1))
    servers.set_members([("a", 1), ("b", 1)])
    a, b = servers.members
    servers.update_stats(a, _stats(10 << 20), 0.0)
    servers.update_stats(b, _stats(20 << 20, largest=1 << 20), 0.0)
    assert servers.order(servers.candidates(0.0), 1024)[0] is b
    # b has more free memory, but no block for 2 MiB
    assert servers.order(servers.candidates(0.0), 2 << 20)[0] is a


def test_a_failed_server_is_refused_at_once_until_its_doubling_back_off_ends() -> None:
    servers = ServerSet(dead_timeout=1.0, max_dead_timeout=3.0)
    servers.set_members([("a", 1), ("b", 1)])
    a, _ = servers.members
    backoffs = []
    now = 0.0
    for _ in range(4):
        error = servers.failed(a, now, ConnectionRefusedError("refused"))
        assert isinstance(error, ServerUnavailable)
        backoffs.append(a.down_until - now)
        with pytest.raises(ServerUnavailable, match="marked down"):
            servers.check(a, a.down_until - 0.01)
        assert a not in servers.candidates(a.down_until - 0.01)
        servers.check(a, a.down_until)  # tried again: no error
        assert a in servers.candidates(a.down_until)
        now = a.down_until
    assert backoffs == [1.0, 2.0, 3.0, 3.0]
    servers.answered(a)
    servers.failed(a, now, TimeoutError("silent"))
    assert a.down_until - now == 1.0


def test_members_join_and_leave_and_a_left_server_is_still_reachable() -> None:
    servers = ServerSet()
    servers.set_members([("a", 1), ("b", 1)])
    b = servers.state(("b", 1))
    servers.set_members([("b", 1), ("c", 1)])
    assert [s.name for s in servers.members] == ["b:1", "c:1"]
    assert servers.state(("b", 1)) is b and b.member
    gone = servers.state(("a", 1))
    assert not gone.member and gone not in servers.candidates(0.0)
    assert servers.state(("::1", 7413)).name == "[::1]:7413"


def test_addresses_are_checked() -> None:
    assert as_address("[::1]:7413") == ("::1", 7413)
    assert as_address(("h", 1)) == ("h", 1)
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        as_address("::1:7413")
