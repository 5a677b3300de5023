"""The lease table: ids, deadlines and expiry over a BuddyArena. No clock, no I/O.

``now`` is monotonic seconds (a float) passed into every call. A lease granted at ``now`` for
``ttl_ms`` has the deadline ``now + ttl_ms / 1000`` and is gone from the instant
``now >= deadline``, whether or not ``expire`` has run yet.

Lease records live in parallel arrays indexed by a slot number (reused after a lease ends),
so a live lease costs a dict entry, two ints and one heap entry, not an object per field.
The expiry heap holds one int per entry, ``(deadline in microseconds << slot_bits) | slot``;
entries left behind by renew or release are skipped when they reach the top (lazy deletion)
and the heap is rebuilt when they outnumber the live leases.
"""

from __future__ import annotations

import heapq
import math
import os
import secrets
import struct
import uuid
from array import array
from collections.abc import Callable
from typing import NamedTuple

from memlease.core.arena import BuddyArena, format_bytes
from memlease.core.errors import (
    BadSize,
    BadTtl,
    ConfigError,
    InternalError,
    LeaseError,
    LeaseNotFound,
    LeaseTooSmall,
    not_found_message,
)
from memlease.core.messages import IdKind, LeaseId

MAX_INT_ID = 2**31 - 1
"""Int ids are positive 31-bit: they fit the native protocol's int32."""

_ID_ATTEMPTS = 64
"""Draws of a fresh id before giving up: with a CSPRNG, a repeat this long means a broken source."""


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
    """A live lease's size in bytes and its remaining ttl in whole milliseconds (>= 1)."""

    size: int
    ttl_ms: int


def _micros(deadline: float) -> int:
    return int(deadline * 1_000_000)


class LeaseTable:
    """Live leases, by id, over ``arena``.

    ``max_lease_size`` defaults to (and is capped at) the arena's largest block. ``int_ids``
    and ``uuid_ids`` replace the CSPRNG id sources (for tests); an id already live is drawn
    again. Counters ``granted``, ``expired``, ``released`` and ``refused`` (lease requests
    refused) only grow.
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
        self._by_int: dict[int, int] = {}
        self._by_uuid: dict[uuid.UUID, int] = {}
        self._uuid_of_slot: dict[int, uuid.UUID] = {}
        # Per slot: the int id (0 for a UUID lease), offset, size (0: slot free), deadline.
        self._ids = array("q")
        self._offsets = array("q")
        self._sizes = array("q")
        self._deadlines = array("d")
        self._free_slots = array("q")
        self._slot_bits = max(arena.units.bit_length(), 1)
        self._slot_mask = (1 << self._slot_bits) - 1
        self._heap: list[int] = []
        self.granted = 0
        self.expired = 0
        self.released = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._by_int) + len(self._by_uuid)

    # ------------------------------------------------------------------ grant

    def grant(self, size: int, ttl_ms: int, now: float, id_kind: IdKind = IdKind.INT) -> LeaseId:
        """Lease ``size`` zeroed bytes for ``ttl_ms`` ms from ``now``; the new lease's id.

        Raises BadSize, BadTtl or NoRoom.
        """
        try:
            if not 1 <= size <= self.max_lease_size:
                raise BadSize(
                    f"lease size {size} B refused: ask for 1 B to "
                    f"{format_bytes(self.max_lease_size)} ({self.max_lease_size} B)"
                )
            if not 1 <= ttl_ms <= self.max_ttl_ms:
                raise self._bad_ttl(ttl_ms)
            offset = self.arena.alloc(size)
        except LeaseError:
            self.refused += 1
            raise
        uuid_id: uuid.UUID | None = None
        int_id = 0
        try:
            if id_kind is IdKind.INT:
                int_id = self._int_ids()
                if int_id in self._by_int or not 1 <= int_id <= MAX_INT_ID:
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
        else:
            slot = len(self._sizes)
            self._ids.append(int_id)
            self._offsets.append(offset)
            self._sizes.append(size)
            self._deadlines.append(deadline)
        lease_id: LeaseId
        if uuid_id is None:
            lease_id = int_id
            self._by_int[int_id] = slot
        else:
            self._by_uuid[uuid_id] = slot
            self._uuid_of_slot[slot] = uuid_id
            lease_id = uuid_id
        heapq.heappush(self._heap, (int(deadline * 1_000_000) << self._slot_bits) | slot)
        self.granted += 1
        return lease_id

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
            if lease_id not in self._by_int:
                return lease_id
        raise InternalError(f"id source repeated live ids {_ID_ATTEMPTS} times; is it random?")

    def _new_uuid(self) -> uuid.UUID:
        for _ in range(_ID_ATTEMPTS):
            lease_id = self._uuid_ids()
            if lease_id not in self._by_uuid:
                return lease_id
        raise InternalError(f"id source repeated live ids {_ID_ATTEMPTS} times; is it random?")

    # ------------------------------------------------------------------ lookups

    def _slot(self, lease_id: LeaseId, now: float) -> int:
        slot: int | None
        if type(lease_id) is int:
            slot = self._by_int.get(lease_id)
        elif isinstance(lease_id, uuid.UUID):
            slot = self._by_uuid.get(lease_id)
        else:
            slot = None
        if slot is None or self._deadlines[slot] <= now:
            raise LeaseNotFound(not_found_message(lease_id))
        return slot

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
    ) -> None:
        """Write ``data`` at ``offset``; nothing is written if it does not fit."""
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

    def set(self, lease_id: LeaseId, data: bytes | bytearray | memoryview, now: float) -> None:
        """Write ``data`` as a prefix of the region; the rest is left as it was."""
        self.write(lease_id, 0, data, now)

    def stat(self, lease_id: LeaseId, now: float) -> LeaseStat:
        """The lease's size and remaining ttl (whole ms, rounded up, at least 1)."""
        slot = self._slot(lease_id, now)
        # Rounded to the microsecond first so that float noise cannot add a millisecond.
        remaining = math.ceil(round((self._deadlines[slot] - now) * 1000, 3))
        return LeaseStat(int(self._sizes[slot]), max(remaining, 1))

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
        moved = _micros(deadline) != _micros(self._deadlines[slot])
        self._deadlines[slot] = deadline
        # The entry for an unchanged deadline is still in the heap; a second would be a twin.
        if moved:
            heapq.heappush(self._heap, (_micros(deadline) << self._slot_bits) | slot)
        self._compact_heap_if_stale()

    def release(self, lease_id: LeaseId, now: float) -> None:
        """End the lease at once and return its memory. Raises LeaseNotFound."""
        self._drop(self._slot(lease_id, now))
        self.released += 1
        self._compact_heap_if_stale()

    def _drop(self, slot: int) -> None:
        int_id = self._ids[slot]
        if int_id:
            del self._by_int[int_id]
        else:
            del self._by_uuid[self._uuid_of_slot.pop(slot)]
        self.arena.free(self._offsets[slot])
        self._sizes[slot] = 0
        self._free_slots.append(slot)

    def _is_current(self, entry: int) -> bool:
        slot = entry & self._slot_mask
        return bool(self._sizes[slot]) and (entry >> self._slot_bits) == _micros(
            self._deadlines[slot]
        )

    def expire(self, now: float, limit: int) -> int:
        """Free leases whose deadline is <= ``now``, at most ``limit``; how many were freed.

        Leases are freed earliest deadline first (to the microsecond).
        """
        heap = self._heap
        heappop = heapq.heappop
        deadlines = self._deadlines
        sizes = self._sizes
        mask = self._slot_mask
        bits = self._slot_bits
        freed = 0
        while heap and freed < limit:
            entry = heap[0]
            slot = entry & mask
            deadline = deadlines[slot]
            # _is_current, inlined: this loop is the expiry hot path.
            if not sizes[slot] or entry >> bits != int(deadline * 1_000_000):
                heappop(heap)
                continue
            if deadline > now:
                break
            heappop(heap)
            self._drop(slot)
            freed += 1
        self.expired += freed
        return freed

    def next_deadline(self) -> float | None:
        """The earliest deadline of a live lease (monotonic seconds), or None if none is live.

        At or after that instant ``expire`` frees at least that lease.
        """
        heap = self._heap
        while heap:
            entry = heap[0]
            if self._is_current(entry):
                return self._deadlines[entry & self._slot_mask]
            heapq.heappop(heap)
        return None

    def _compact_heap_if_stale(self) -> None:
        live = len(self)
        if len(self._heap) > 2 * live + 1024:
            self._heap = list({e for e in self._heap if self._is_current(e)})
            heapq.heapify(self._heap)
