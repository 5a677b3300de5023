"""The lease table's deadlines in order: a sorted list of ints in chunks, where a renewal or
a release moves or removes its entry at once and no call does work that grows with the
number of leases."""

from __future__ import annotations

from bisect import bisect_left, insort

from memlease.core.errors import InternalError


class DeadlineOrder:
    """Distinct ints kept sorted in chunks, as sortedcontainers' SortedList keeps them.

    The lease table's entries are ``(deadline in microseconds << slot_bits) | slot``: one per
    lease, in deadline order as ints. Every chunk holds more than ``load // 2`` and at most
    ``2 * load`` entries (a lone chunk may hold fewer); ``_maxes`` holds the last entry of
    each. An insert or a removal is two binary searches and one move of at most ``2 * load``
    pointers; splitting or merging a chunk moves ``2 * len / load`` more, all of it in C.
    Nothing is left behind for a later call to clean up. (A heap with lazy deletion leaves
    an entry behind per renewal, and the request that rebuilds it, or that finds a million
    of them ahead of the first live lease, makes every client wait: 2.4 s at 2M leases.)
    """

    def __init__(self, load: int = 512) -> None:
        self._load = max(load, 2)
        self._chunks: list[list[int]] = []
        self._maxes: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def first(self) -> int | None:
        """The least entry, or None when there is none."""
        return self._chunks[0][0] if self._chunks else None

    def head(self) -> list[int]:
        """The first chunk: the least entries, in order (empty when there is none). Read it,
        then give back what was taken with :meth:`drop_head`; never change it."""
        return self._chunks[0] if self._chunks else []

    def add(self, entry: int) -> None:
        """Insert ``entry`` (not already present)."""
        maxes = self._maxes
        self._len += 1
        if not maxes:
            self._chunks.append([entry])
            maxes.append(entry)
            return
        if entry > maxes[-1]:
            # Past every entry: the usual grant or renewal, a deadline later than the rest.
            at = len(maxes) - 1
            chunk = self._chunks[at]
            chunk.append(entry)
            maxes[at] = entry
        else:
            at = bisect_left(maxes, entry)
            chunk = self._chunks[at]
            insort(chunk, entry)
        if len(chunk) > 2 * self._load:
            self._split(at)

    def remove(self, entry: int) -> None:
        """Take ``entry`` out; InternalError if it is not there."""
        maxes = self._maxes
        at = bisect_left(maxes, entry)
        chunk = self._chunks[at] if at < len(maxes) else []
        index = bisect_left(chunk, entry)
        if index == len(chunk) or chunk[index] != entry:
            raise InternalError(f"deadline entry {entry:#x} missing from the expiry order")
        del chunk[index]
        self._len -= 1
        if len(chunk) > self._load // 2:
            if index == len(chunk):
                maxes[at] = chunk[-1]
        else:
            self._shrunk(at)

    def drop_head(self, count: int) -> None:
        """Take out the first ``count`` entries of :meth:`head`."""
        if count:
            del self._chunks[0][:count]
            self._len -= count
            self._shrunk(0)

    def _shrunk(self, at: int) -> None:
        chunks = self._chunks
        maxes = self._maxes
        chunk = chunks[at]
        if not chunk:
            del chunks[at]
            del maxes[at]
        elif len(chunk) > self._load // 2 or len(chunks) == 1:
            maxes[at] = chunk[-1]
        else:
            # Too small: merged into a neighbour, so that chunks stay few (the chunk index
            # short) and each one costs its list header only once per load / 2 entries.
            if not at:
                at = 1
            before = chunks[at - 1]
            before.extend(chunks[at])
            del chunks[at]
            del maxes[at]
            maxes[at - 1] = before[-1]
            if len(before) > 2 * self._load:
                self._split(at - 1)

    def _split(self, at: int) -> None:
        chunk = self._chunks[at]
        rest = chunk[self._load :]
        del chunk[self._load :]
        self._maxes[at] = chunk[-1]
        self._chunks.insert(at + 1, rest)
        self._maxes.insert(at + 1, rest[-1])
