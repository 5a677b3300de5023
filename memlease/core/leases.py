"""The lease table: ids, deadlines and expiry over a BuddyArena. No clock, no I/O.

``now`` is monotonic seconds (a float) passed into every call. A lease granted at ``now`` for
``ttl_ms`` has the deadline ``now + ttl_ms / 1000`` and is gone from the instant
``now >= deadline``, whether or not ``expire`` has run yet.

Lease records live in parallel arrays indexed by a slot number (reused after a lease ends),
so a live lease costs a dict entry, a few array items and one int in a DeadlineOrder (the
deadlines, sorted), not an object per field. No call does work that grows with the number of
leases: a renewal or a release moves its lease's one entry in the order at once, so nothing
is left behind for a later request to rebuild or skip, and the id maps are split in 256
dicts, so no insert copies every id when a dict grows.
"""

from __future__ import annotations

import math
import os
import secrets
import struct
import uuid
from array import array
from bisect import bisect_left
from collections.abc import Callable
from itertools import islice, repeat
from operator import add, lshift, rshift, sub
from typing import Final, NamedTuple

from memlease.core.arena import BuddyArena, format_bytes
from memlease.core.deadline_order import DeadlineOrder
from memlease.core.errors import (
    BadSize,
    BadTtl,
    ConfigError,
    InternalError,
    LeaseError,
    LeaseNotFound,
    LeaseTooSmall,
    NoRoom,
    not_found_message,
)
from memlease.core.messages import EndReason, IdKind, LeaseId, Notice
from memlease.core.seconds_histogram import EXPIRY_LAG_BOUNDS, SecondsHistogram
from memlease.core.sessions import Session

MAX_INT_ID: Final = 2**31 - 1
"""Int ids are positive 31-bit: they fit the native protocol's int32."""

_ID_ATTEMPTS: Final = 64
"""Draws of a fresh id before giving up: with a CSPRNG, a repeat this long means a broken source."""

_ID_SHARDS: Final = 256
"""The id maps are split into this many dicts by the id's low bits. A dict that grows, or
that many deletions have filled with dummies, copies every entry in one insert: 50 ms at
1.4M leases, and with 2M leases and churn it happens again and again. A shard copies 1/256."""
_SHARD: Final = _ID_SHARDS - 1

RECLAIM_STEP: Final = 4096
"""The most expired leases a grant without room frees before it looks for a block again."""


def random_int_id() -> int:
    """A random id in 1..2**31-1 from the operating system's CSPRNG."""
    return secrets.randbelow(MAX_INT_ID) + 1


class BufferedRandomIds:
    """Ids from ``os.urandom``, drawn a few KiB at a time.

    One ``os.urandom`` call per id costs microseconds, most of a grant's budget; the bytes
    are the same CSPRNG output when taken in bulk. Not to be shared across ``fork``.
    """

    _BATCH = 1024

    def __init__(self) -> None:
        self._ints: list[int] = []
        self._uuid_bytes = b""
        self._uuid_at = 0

    def int_id(self) -> int:
        """A random id in 1..2**31-1."""
        if not self._ints:
            words = struct.unpack(f"<{self._BATCH}I", os.urandom(4 * self._BATCH))
            self._ints = [w & MAX_INT_ID for w in words if w & MAX_INT_ID] or [random_int_id()]
        return self._ints.pop()

    def uuid4(self) -> uuid.UUID:
        """A random version-4 UUID."""
        if self._uuid_at >= len(self._uuid_bytes):
            self._uuid_bytes = os.urandom(16 * self._BATCH)
            self._uuid_at = 0
        at = self._uuid_at
        self._uuid_at = at + 16
        return uuid.UUID(bytes=self._uuid_bytes[at : at + 16], version=4)


class LeaseStat(NamedTuple):
    """A live lease's size in bytes, its remaining ttl in whole milliseconds (>= 1) and its
    version."""

    size: int
    ttl_ms: int
    version: int


def _micros(deadline: float) -> int:
    return int(deadline * 1_000_000)


class LeaseTable:
    """Live leases, by id, over ``arena``.

    ``max_lease_size`` defaults to (and is capped at) the arena's largest block. ``int_ids``
    and ``uuid_ids`` replace the CSPRNG id sources (for tests); an id already live is drawn
    again. Counters ``granted``, ``expired``, ``released`` and ``refused`` (lease requests
    refused) only grow; ``closed`` counts bound leases released because their session ended.

    Every lease has a version: 1 when granted, one more after each write (a set is a write).
    A lease may be bound to a :class:`Session` (released when it ends) and watched by
    sessions (each told by a :class:`Notice` when the lease ends, whatever ended it).
    """

    def __init__(
        self,
        arena: BuddyArena,
        *,
        max_ttl_ms: int,
        max_lease_size: int | None = None,
        int_ids: Callable[[], int] | None = None,
        uuid_ids: Callable[[], uuid.UUID] | None = None,
    ) -> None:
        if max_ttl_ms < 1:
            raise ConfigError(f"max_ttl_ms = {max_ttl_ms}: the maximum ttl must be >= 1 ms")
        if max_lease_size is not None and max_lease_size < 1:
            raise ConfigError(
                f"max_lease_size = {max_lease_size}: the largest lease must be >= 1 byte"
            )
        self.arena = arena
        self.max_ttl_ms = max_ttl_ms
        self.max_lease_size = min(max_lease_size or arena.max_block, arena.max_block)
        ids = BufferedRandomIds()
        self._int_ids = int_ids or ids.int_id
        self._uuid_ids = uuid_ids or ids.uuid4
        self._memory = arena.memory
        self._readonly = arena.memory.toreadonly()
        # Shard i holds the ids (or the slots, for _uuid_of_slot) whose value & _SHARD is i.
        self._by_int: list[dict[int, int]] = [{} for _ in range(_ID_SHARDS)]
        self._by_uuid: list[dict[uuid.UUID, int]] = [{} for _ in range(_ID_SHARDS)]
        self._uuid_of_slot: list[dict[int, uuid.UUID]] = [{} for _ in range(_ID_SHARDS)]
        self._live = 0
        # Per slot: the int id (0 for a UUID lease), offset, size (0: slot free), deadline.
        self._ids = array("q")
        self._offsets = array("q")
        self._sizes = array("q")
        self._deadlines = array("d")
        self._versions = array("q")
        self._free_slots = array("q")
        # Only leases that use them cost an entry: slot -> owning session; slot -> watchers.
        self._owners: dict[int, Session] = {}
        self._watchers: dict[int, list[Session]] = {}
        self.watches = 0
        """Watches in force, over all sessions."""
        self.notices_pending = 0
        """Notices told to sessions and not yet sent (``notices_sent``): each holds the memory
        of the watch it came from until then."""
        self._slot_bits = max(arena.units.bit_length(), 1)
        self._slot_mask = (1 << self._slot_bits) - 1
        self._order = DeadlineOrder()
        # Where _drop returns a block: the arena at once, or, inside expire, a list that
        # goes back in one BuddyArena.free_many pass.
        self._free_block: Callable[[int], None] = arena.free
        self.granted = 0
        self.expired = 0
        self.released = 0
        self.refused = 0
        self.closed = 0
        self.expiry_lag = SecondsHistogram(EXPIRY_LAG_BOUNDS)
        """Of every lease that expired (its deadline passed, not released): how long after
        its deadline its memory was back in the arena, to the microsecond."""
        self._lag_bounds_us = [int(bound * 1_000_000) for bound in EXPIRY_LAG_BOUNDS]

    def __len__(self) -> int:
        return self._live

    # ------------------------------------------------------------------ grant

    def grant(
        self,
        size: int,
        ttl_ms: int,
        now: float,
        id_kind: IdKind = IdKind.INT,
        owner: Session | None = None,
    ) -> LeaseId:
        """Lease ``size`` zeroed bytes for ``ttl_ms`` ms from ``now``; the new lease's id.
        With ``owner``, the lease is bound to that session: released when it ends.

        Without room, expired leases are freed first (see :meth:`_alloc_reclaiming`): NoRoom
        means the leases live at ``now`` leave no block for ``size``. Raises BadSize, BadTtl
        or NoRoom.
        """
        try:
            if not 1 <= size <= self.max_lease_size:
                raise BadSize(
                    f"lease size {size} B refused: ask for 1 B to "
                    f"{format_bytes(self.max_lease_size)} ({self.max_lease_size} B)"
                )
            if not 1 <= ttl_ms <= self.max_ttl_ms:
                raise self._bad_ttl(ttl_ms)
            try:
                offset = self.arena.alloc(size)
            except NoRoom:
                offset = self._alloc_reclaiming(size, now)
        except LeaseError:
            self.refused += 1
            raise
        uuid_id: uuid.UUID | None = None
        int_id = 0
        try:
            if id_kind is IdKind.INT:
                int_id = self._int_ids()
                if int_id in self._by_int[int_id & _SHARD] or not 1 <= int_id <= MAX_INT_ID:
                    int_id = self._new_int_id()
            else:
                uuid_id = self._new_uuid()
        except LeaseError:
            self.arena.free(offset)
            self.refused += 1
            raise
        deadline = now + ttl_ms / 1000
        if self._free_slots:
            slot = self._free_slots.pop()
            self._ids[slot] = int_id
            self._offsets[slot] = offset
            self._sizes[slot] = size
            self._deadlines[slot] = deadline
            self._versions[slot] = 1
        else:
            slot = len(self._sizes)
            self._ids.append(int_id)
            self._offsets.append(offset)
            self._sizes.append(size)
            self._deadlines.append(deadline)
            self._versions.append(1)
        if owner is not None:
            self._owners[slot] = owner
            owner.bound.add(slot)
        lease_id: LeaseId
        if uuid_id is None:
            lease_id = int_id
            self._by_int[int_id & _SHARD][int_id] = slot
        else:
            self._by_uuid[uuid_id.int & _SHARD][uuid_id] = slot
            self._uuid_of_slot[slot & _SHARD][slot] = uuid_id
            lease_id = uuid_id
        self._live += 1
        self._order.add((int(deadline * 1_000_000) << self._slot_bits) | slot)
        self.granted += 1
        return lease_id

    def grant_many(
        self,
        count: int,
        size: int,
        ttl_ms: int,
        now: float,
        id_kind: IdKind = IdKind.INT,
        owner: Session | None = None,
    ) -> list[LeaseId]:
        """``count`` leases as :meth:`grant` gives them, all or none: on a refusal, those
        already granted are taken back (uncounted) and the refusal is raised."""
        granted: list[LeaseId] = []
        try:
            for _ in range(count):
                granted.append(self.grant(size, ttl_ms, now, id_kind, owner))
        except LeaseError as exc:
            for lease_id in granted:
                slot = self._slot(lease_id, now)
                self._order.remove((_micros(self._deadlines[slot]) << self._slot_bits) | slot)
                self._drop(slot, None)
            self.granted -= len(granted)
            if isinstance(exc, NoRoom) and granted:
                raise NoRoom(
                    f"{count} leases of {format_bytes(size)} refused: only {len(granted)} "
                    f"fit; none was granted ({exc})"
                ) from None
            raise
        return granted

    def _alloc_reclaiming(self, size: int, now: float) -> int:
        """Allocate ``size`` bytes after freeing expired leases (deadline <= ``now``),
        earliest deadline first, until a block fits; NoRoom when none is left to free.

        They are freed through :meth:`expire`, in steps that double from one lease up to
        ``RECLAIM_STEP``, so that a grant needing one lease's room frees one and one needing
        a million frees them in batches (``BuddyArena.free_many``); it frees fewer than
        twice the leases it needs (or at most RECLAIM_STEP more). The stall is bounded by
        the expired leases the expiry task has not freed yet, about 0.9 us each: work that
        task would do anyway (benchmarks/expiry_reclaim.py, core-stall).
        """
        arena = self.arena
        order = arena.order_for(size)
        reclaimed = 0
        while not arena.has_free_block(order):
            freed = self.expire(now, min(max(reclaimed, 1), RECLAIM_STEP))
            if not freed:
                break
            reclaimed += freed
        return arena.alloc(size)

    def _bad_ttl(self, ttl_ms: int) -> BadTtl:
        return BadTtl(
            f"ttl {ttl_ms} ms refused: ask for 1 to {self.max_ttl_ms} ms "
            "(renew before it runs out to keep a lease longer)"
        )

    def _new_int_id(self) -> int:
        for _ in range(_ID_ATTEMPTS):
            lease_id = self._int_ids()
            if not 1 <= lease_id <= MAX_INT_ID:
                raise InternalError(f"id source gave {lease_id}, outside 1..{MAX_INT_ID}")
            if lease_id not in self._by_int[lease_id & _SHARD]:
                return lease_id
        raise InternalError(f"id source repeated live ids {_ID_ATTEMPTS} times; is it random?")

    def _new_uuid(self) -> uuid.UUID:
        for _ in range(_ID_ATTEMPTS):
            lease_id = self._uuid_ids()
            if lease_id not in self._by_uuid[lease_id.int & _SHARD]:
                return lease_id
        raise InternalError(f"id source repeated live ids {_ID_ATTEMPTS} times; is it random?")

    # ------------------------------------------------------------------ lookups

    def _slot(self, lease_id: LeaseId, now: float) -> int:
        slot: int | None
        if type(lease_id) is int:
            slot = self._by_int[lease_id & _SHARD].get(lease_id)
        elif isinstance(lease_id, uuid.UUID):
            slot = self._by_uuid[lease_id.int & _SHARD].get(lease_id)
        else:
            slot = None
        if slot is None or self._deadlines[slot] <= now:
            raise LeaseNotFound(not_found_message(lease_id))
        return slot

    def _held_slot(self, lease_id: LeaseId) -> int | None:
        """The slot of a lease the table holds, live or past its deadline; None if none."""
        if type(lease_id) is int:
            return self._by_int[lease_id & _SHARD].get(lease_id)
        if isinstance(lease_id, uuid.UUID):
            return self._by_uuid[lease_id.int & _SHARD].get(lease_id)
        return None

    def view(self, lease_id: LeaseId, now: float) -> memoryview:
        """The lease's whole region (its size, not its block's), writable, without a copy."""
        slot = self._slot(lease_id, now)
        offset = self._offsets[slot]
        return self._memory[offset : offset + self._sizes[slot]]

    def region(self, lease_id: LeaseId, now: float) -> memoryview:
        """The lease's whole region, read-only, without a copy: what it holds until the next
        write to it, grant or release."""
        slot = self._slot(lease_id, now)
        offset = self._offsets[slot]
        return self._readonly[offset : offset + self._sizes[slot]]

    def get(self, lease_id: LeaseId, now: float) -> bytes:
        """A copy of the lease's whole region. Raises LeaseNotFound."""
        slot = self._slot(lease_id, now)
        offset = self._offsets[slot]
        return self._memory[offset : offset + self._sizes[slot]].tobytes()

    def read(self, lease_id: LeaseId, offset: int, length: int, now: float) -> bytes:
        """``length`` bytes from ``offset``. Raises LeaseNotFound or LeaseTooSmall."""
        slot = self._slot(lease_id, now)
        size = self._sizes[slot]
        if offset < 0 or length < 0 or offset + length > size:
            raise LeaseTooSmall(
                f"read of {length} B at offset {offset} refused: lease {lease_id} holds "
                f"{size} B; read within 0..{size}"
            )
        start = self._offsets[slot] + offset
        return self._memory[start : start + length].tobytes()

    def write(
        self, lease_id: LeaseId, offset: int, data: bytes | bytearray | memoryview, now: float
    ) -> int:
        """Write ``data`` at ``offset``; the lease's new version. Nothing is written (and the
        version stays) if it does not fit."""
        slot = self._slot(lease_id, now)
        size = self._sizes[slot]
        length = len(data)
        if offset < 0 or offset + length > size:
            raise LeaseTooSmall(
                f"write of {length} B at offset {offset} refused: lease {lease_id} holds "
                f"{size} B; nothing was written"
            )
        start = self._offsets[slot] + offset
        self._memory[start : start + length] = data
        version = self._versions[slot] + 1
        self._versions[slot] = version
        return version

    def set(self, lease_id: LeaseId, data: bytes | bytearray | memoryview, now: float) -> int:
        """Write ``data`` as a prefix of the region (the rest is left as it was); the new
        version."""
        return self.write(lease_id, 0, data, now)

    def gets(self, lease_id: LeaseId, now: float) -> tuple[memoryview, int]:
        """The lease's whole region (read-only, as :meth:`region`) and its version."""
        slot = self._slot(lease_id, now)
        offset = self._offsets[slot]
        return self._readonly[offset : offset + self._sizes[slot]], self._versions[slot]

    def cas(
        self,
        lease_id: LeaseId,
        version: int,
        offset: int,
        data: bytes | bytearray | memoryview,
        now: float,
    ) -> tuple[bool, int]:
        """Write ``data`` at ``offset`` only if the lease is at ``version``: (True, the new
        version), or (False, the current version) with nothing written. Raises
        LeaseNotFound, or LeaseTooSmall (whatever the version) for data that does not fit."""
        slot = self._slot(lease_id, now)
        current = self._versions[slot]
        if current != version:
            size = self._sizes[slot]
            if offset < 0 or offset + len(data) > size:
                self.write(lease_id, offset, data, now)  # raises the LeaseTooSmall
            return False, current
        return True, self.write(lease_id, offset, data, now)

    def stat(self, lease_id: LeaseId, now: float) -> LeaseStat:
        """The lease's size, remaining ttl (whole ms, rounded up, at least 1) and version."""
        slot = self._slot(lease_id, now)
        # Rounded to the microsecond first so that float noise cannot add a millisecond.
        remaining = math.ceil(round((self._deadlines[slot] - now) * 1000, 3))
        return LeaseStat(int(self._sizes[slot]), max(remaining, 1), self._versions[slot])

    def deadline(self, lease_id: LeaseId, now: float) -> float:
        """The lease's deadline, monotonic seconds."""
        return self._deadlines[self._slot(lease_id, now)]

    # ------------------------------------------------------------------ renew / release / expire

    def renew(self, lease_id: LeaseId, ttl_ms: int, now: float) -> None:
        """Set the deadline to ``now + ttl_ms``. Raises BadTtl or LeaseNotFound."""
        if not 1 <= ttl_ms <= self.max_ttl_ms:
            raise self._bad_ttl(ttl_ms)
        slot = self._slot(lease_id, now)
        deadline = now + ttl_ms / 1000
        bits = self._slot_bits
        # The entries of _micros(deadline), inlined: a renewal is a request's hot path.
        old = (int(self._deadlines[slot] * 1_000_000) << bits) | slot
        new = (int(deadline * 1_000_000) << bits) | slot
        self._deadlines[slot] = deadline
        if new != old:
            order = self._order
            order.remove(old)
            order.add(new)

    def release(self, lease_id: LeaseId, now: float) -> None:
        """End the lease at once and return its memory. Raises LeaseNotFound."""
        slot = self._slot(lease_id, now)
        self._order.remove((_micros(self._deadlines[slot]) << self._slot_bits) | slot)
        self._drop(slot, EndReason.RELEASED)
        self.released += 1

    def renew_many(self, lease_ids: list[LeaseId], ttl_ms: int, now: float) -> list[LeaseId]:
        """Renew every live lease of ``lease_ids``; the ids that were not found. Raises
        BadTtl (renewing none)."""
        if not 1 <= ttl_ms <= self.max_ttl_ms:
            raise self._bad_ttl(ttl_ms)
        missing: list[LeaseId] = []
        for lease_id in lease_ids:
            try:
                self.renew(lease_id, ttl_ms, now)
            except LeaseNotFound:
                missing.append(lease_id)
        return missing

    def release_many(self, lease_ids: list[LeaseId], now: float) -> list[LeaseId]:
        """Release every live lease of ``lease_ids``; the ids that were not found."""
        missing: list[LeaseId] = []
        for lease_id in lease_ids:
            try:
                self.release(lease_id, now)
            except LeaseNotFound:
                missing.append(lease_id)
        return missing

    # ------------------------------------------------------------------ sessions

    def watch(self, lease_ids: list[LeaseId], session: Session, now: float) -> None:
        """``session`` is told when each of ``lease_ids`` ends. All or none: raises
        LeaseNotFound, watching none, if one is not live. Watching twice is watching once."""
        slots = [self._slot(lease_id, now) for lease_id in lease_ids]
        watchers = self._watchers
        watching = session.watching
        for slot in slots:
            if slot not in watching:
                watching.add(slot)
                watchers.setdefault(slot, []).append(session)
                self.watches += 1

    def unwatch(self, lease_ids: list[LeaseId], session: Session, now: float) -> list[LeaseId]:
        """``session`` is no longer told when these leases end; the ids it was not watching
        (unknown, ended, or never watched: not an error)."""
        not_watched: list[LeaseId] = []
        for lease_id in lease_ids:
            # Past its deadline but not yet expired, a watched lease is still watched.
            slot = self._held_slot(lease_id)
            if slot is not None and slot in session.watching:
                self._forget_watch(slot, session)
            else:
                not_watched.append(lease_id)
        return not_watched

    def notices_sent(self, count: int) -> None:
        """``count`` notices left a connection's queue (sent, or dropped with it)."""
        self.notices_pending -= count

    def _forget_watch(self, slot: int, session: Session) -> None:
        self.watches -= 1
        session.watching.discard(slot)
        sessions = self._watchers[slot]
        sessions.remove(session)
        if not sessions:
            del self._watchers[slot]

    def end_session(self, session: Session, now: float, limit: int | None = None) -> int:
        """The session's connection closed at ``now``: drop its watches and release the
        leases bound to it (watchers are told CLOSED, or EXPIRED for a lease already past
        its deadline), at most ``limit`` of them together (None: all); how many it did.
        The session is done with once it has neither (``session.bound``, ``.watching``)."""
        todo = len(session.watching) + len(session.bound)
        budget = todo if limit is None else min(limit, todo)
        watching = session.watching
        while watching and budget:
            self._forget_watch(next(iter(watching)), session)
            budget -= 1
        closed = expired = 0
        bound = session.bound
        while bound and budget:
            slot = next(iter(bound))
            budget -= 1
            deadline = self._deadlines[slot]
            entry = (_micros(deadline) << self._slot_bits) | slot
            self._order.remove(entry)
            if deadline <= now:
                self._drop(slot, EndReason.EXPIRED)
                self._count_lags([entry], 1, now)  # to the microsecond, as expire counts
                expired += 1
            else:
                self._drop(slot, EndReason.CLOSED)
                closed += 1
        self.closed += closed
        self.expired += expired
        return todo - len(session.watching) - len(session.bound)

    def _drop(self, slot: int, reason: EndReason | None = EndReason.EXPIRED) -> None:
        """Forget the lease in ``slot`` and free its block; its entry is already out of the
        expiry order. Every lease that ends passes here: its watchers are told ``reason``
        (None: a grant taken back, which nobody could watch yet)."""
        int_id = self._ids[slot]
        lease_id: LeaseId
        if int_id:
            lease_id = int_id
            del self._by_int[int_id & _SHARD][int_id]
        else:
            lease_id = uuid_id = self._uuid_of_slot[slot & _SHARD].pop(slot)
            del self._by_uuid[uuid_id.int & _SHARD][uuid_id]
        if self._owners:
            owner = self._owners.pop(slot, None)
            if owner is not None:
                owner.bound.discard(slot)
        if self._watchers:
            sessions = self._watchers.pop(slot, None)
            if sessions is not None:
                self.watches -= len(sessions)
                notice = Notice(lease_id, reason or EndReason.RELEASED)
                for session in sessions:
                    session.watching.discard(slot)
                    if reason is not None:
                        self.notices_pending += 1
                        session.notify(notice)
        self._live -= 1
        self._free_block(self._offsets[slot])
        self._sizes[slot] = 0
        self._free_slots.append(slot)

    def expire(self, now: float, limit: int) -> int:
        """Free leases whose deadline is <= ``now``, at most ``limit``; how many were freed.

        Leases are freed earliest deadline first (to the microsecond), and their blocks go
        back to the arena together, in one ``free_many`` pass. The call's work grows with
        ``limit``, never with the renewals and releases that came before it.
        """
        order = self._order
        deadlines = self._deadlines
        mask = self._slot_mask
        drop = self._drop
        freeing: list[int] = []
        self._free_block = freeing.append
        freed = 0
        try:
            while freed < limit:
                head = order.head()
                taken = 0
                for entry in head[: limit - freed]:
                    slot = entry & mask
                    if deadlines[slot] > now:
                        break
                    drop(slot)
                    taken += 1
                if taken:
                    self._count_lags(head, taken, now)
                order.drop_head(taken)
                freed += taken
                if not taken:
                    break
        finally:
            self._free_block = self.arena.free
            self.arena.free_many(freeing)
            self.expired += freed
        return freed

    def _count_lags(self, entries: list[int], taken: int, now: float) -> None:
        """Count in :attr:`expiry_lag` the first ``taken`` of ``entries`` (the expiry
        order's, earliest deadline first), freed at ``now``: the buckets take one binary
        search per bound, whatever the number of leases, since the entries are in deadline
        order; the sum takes one C-level step per lease (calls over iterators, not a loop)."""
        now_us = _micros(now)
        bits = self._slot_bits
        # A lag within a bound: a deadline at or after now - bound, so an entry at or after
        # (now - bound) << bits, whatever its slot bits. How many come before that entry
        # (lag past the bound) falls as the bounds grow.
        marks = map(lshift, map(sub, repeat(now_us), self._lag_bounds_us), repeat(bits))
        past = list(map(bisect_left, repeat(entries), marks, repeat(0), repeat(taken)))
        histogram = self.expiry_lag
        # Bucket i: past bound i - 1 (all taken, for the first) and within bound i; the last
        # bucket (+Inf): past every bound.
        in_bucket = map(sub, [taken, *past], [*past, 0])
        histogram.counts[:] = map(add, histogram.counts, in_bucket)
        deadlines_us = sum(map(rshift, islice(entries, taken), repeat(bits)))
        histogram.total += (taken * now_us - deadlines_us) / 1_000_000

    def next_deadline(self) -> float | None:
        """The earliest deadline of a live lease (monotonic seconds), or None if none is live.

        At or after that instant ``expire`` frees at least that lease. O(1).
        """
        entry = self._order.first()
        return None if entry is None else self._deadlines[entry & self._slot_mask]

    @property
    def expiry_entries(self) -> int:
        """Entries in the expiry order: one per lease not yet freed, never more."""
        return len(self._order)
