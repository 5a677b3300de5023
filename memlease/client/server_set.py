"""The servers of a fleet, sans-IO: which are up, when a down one is tried again, and where a
new lease goes. The blocking fleet (memlease.client.fleet) and the trio fleet
(memlease.client.trio_fleet) move the bytes; every rule about servers lives here, once.

Placement policy: power of two choices on free memory. For each new lease two live servers
are drawn at random; the one with more free memory (as of its last ``stats``, cached for
``stats_every`` seconds and lowered locally by each lease placed there since) is tried first,
then the other, then every other live server from the most free to the least. A server whose
cached largest free block is smaller than the lease goes behind those that have room. Two
random choices spread leases almost as evenly as always picking the emptiest server, without
every client herding onto the same one between two stats (Mitzenmacher, "The Power of Two
Choices in Randomized Load Balancing").

Down servers: a call that cannot connect, or gets no reply within the fleet's timeout, marks
its server down. Calls for it then fail at once with :class:`ServerUnavailable` until its
back-off ends (``dead_timeout``, doubled for each failure in a row up to
``max_dead_timeout``, as pymemcache's ``dead_timeout``); the next call after that tries the
server again, and one that answers is up again with its back-off reset.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from memlease.client.handle import BadHandle, format_server, parse_server
from memlease.core.errors import ConfigError, ConnectionFailed
from memlease.core.messages import LeaseId, ServerStats

DEFAULT_FLEET_TIMEOUT = 1.0
"""Seconds a fleet waits to connect to a server, or for one reply, before marking it down:
short, so that a call on a server that stopped answering fails within 2 s."""

DEFAULT_DEAD_TIMEOUT = 1.0
"""Seconds a server stays marked down after its first failure; doubled for each further
failure in a row, up to DEFAULT_MAX_DEAD_TIMEOUT."""

DEFAULT_MAX_DEAD_TIMEOUT = 30.0

DEFAULT_STATS_EVERY = 1.0
"""Seconds a server's free-memory figure is trusted for placement before it is asked again."""

Address = tuple[str, int]


def as_address(server: str | Address) -> Address:
    """A fleet's server as (host, port): from ``"host:port"``, ``"[v6addr]:port"`` or a pair.
    Raises ConfigError saying what an address looks like."""
    if isinstance(server, tuple):
        return server
    try:
        return parse_server(server)
    except BadHandle as exc:
        raise ConfigError(str(exc)) from None


class ServerUnavailable(ConnectionFailed):
    """The lease's server is marked down: it stopped answering, or cannot be reached. Its
    leases may be gone; the fleet tries it again after a back-off."""


@dataclass(eq=False)
class ServerState:
    """What a fleet knows of one server."""

    address: Address
    name: str
    member: bool
    """In the fleet's list (new leases may go there); False for a server known only from a
    handle the caller gave."""
    down_until: float = 0.0
    failures: int = 0
    reason: str = ""
    free: int = 0
    largest_free: int = 0
    stats_at: float | None = None

    def is_down(self, now: float) -> bool:
        return now < self.down_until


@dataclass
class ServerSet:
    """The fleet's servers and their states, by address. ``now`` is monotonic seconds, passed
    in by the caller."""

    dead_timeout: float = DEFAULT_DEAD_TIMEOUT
    max_dead_timeout: float = DEFAULT_MAX_DEAD_TIMEOUT
    stats_every: float = DEFAULT_STATS_EVERY
    rng: random.Random = field(default_factory=random.Random)
    _states: dict[Address, ServerState] = field(default_factory=dict)
    _members: list[ServerState] = field(default_factory=list)

    def set_members(self, addresses: Iterable[Address]) -> None:
        """The servers new leases may go to, from now on. A server that leaves keeps its
        state, so handles on it still reach it; one that joins starts up."""
        members: dict[Address, ServerState] = {}
        for address in addresses:
            state = self.state(address)
            state.member = True
            members[address] = state
        for state in self._members:
            if state.address not in members:
                state.member = False
        self._members = list(members.values())

    @property
    def members(self) -> list[ServerState]:
        return list(self._members)

    def state(self, address: Address) -> ServerState:
        """The state of the server at ``address``, made (not a member) on first sight."""
        found = self._states.get(address)
        if found is None:
            found = ServerState(address, format_server(*address), member=False)
            self._states[address] = found
        return found

    def check(self, state: ServerState, now: float) -> None:
        """Raise ServerUnavailable while ``state``'s server is in its back-off."""
        if state.is_down(now):
            raise ServerUnavailable(
                f"{state.name} is marked down ({state.reason}); its leases may be gone; "
                f"it is tried again in {state.down_until - now:.1f} s"
            )

    def failed(self, state: ServerState, now: float, cause: BaseException) -> ServerUnavailable:
        """Mark ``state``'s server down after ``cause``; the error to raise for the call."""
        backoff = min(self.dead_timeout * 2**state.failures, self.max_dead_timeout)
        state.failures += 1
        state.down_until = now + backoff
        state.reason = str(cause) or type(cause).__name__
        state.stats_at = None
        return ServerUnavailable(
            f"{state.name} is unavailable ({state.reason}); marked down for {backoff:g} s"
        )

    def answered(self, state: ServerState) -> None:
        """``state``'s server answered: it is up, its back-off starts again from the least."""
        if state.failures:
            state.failures = 0
            state.down_until = 0.0
            state.reason = ""

    # ------------------------------------------------------------ placement

    def candidates(self, now: float) -> list[ServerState]:
        """The live members in random order: the first two are the placement's two choices.
        A member whose back-off has ended is live again (the placement probes it)."""
        live = [state for state in self._members if not state.is_down(now)]
        self.rng.shuffle(live)
        return live

    def needs_stats(self, state: ServerState, now: float) -> bool:
        return state.stats_at is None or now - state.stats_at >= self.stats_every

    def update_stats(self, state: ServerState, stats: ServerStats, now: float) -> None:
        state.free, state.largest_free, state.stats_at = stats.free, stats.largest_free, now

    def order(self, candidates: list[ServerState], size: int) -> list[ServerState]:
        """The order to try ``candidates`` (from :meth:`candidates`, the first two's stats
        fresh) for a lease of ``size`` bytes."""
        choices, rest = candidates[:2], candidates[2:]
        choices.sort(key=lambda state: (state.largest_free < size, -state.free))
        rest.sort(key=lambda state: (state.largest_free < size, -state.free))
        return choices + rest

    def placed(self, state: ServerState, size: int) -> None:
        """A lease of ``size`` bytes went to ``state``'s server: its cached free memory is
        that much less until the next stats."""
        state.free = max(0, state.free - size)

    def refused(self, state: ServerState) -> None:
        """``state``'s server had no room: ask it again before the next placement."""
        state.stats_at = None
        state.largest_free = 0

    def none_live(self) -> str:
        """Why no server could take a call: each member's reason, or that there is none."""
        if not self.members:
            return "the fleet has no servers"
        return "no server of the fleet is live: " + "; ".join(
            f"{state.name}: {state.reason or 'no answer'}" for state in self.members
        )


def by_server(
    routed: Iterable[tuple[LeaseId, ServerState]],
) -> list[tuple[ServerState, list[LeaseId]]]:
    """Lease ids, each with its server, grouped by server in the order first met: a batch
    over many handles makes one call per server."""
    groups: dict[Address, tuple[ServerState, list[LeaseId]]] = {}
    for lease_id, state in routed:
        groups.setdefault(state.address, (state, []))[1].append(lease_id)
    return list(groups.values())
