"""One memory budget for everything the server's connections hold beyond the arena: the
buffers of messages being received, and replies the clients have not taken yet.

Sans-IO: plain counts. A connection takes from the budget before it holds more (before a
receive, before a large message gets a buffer of its own, before it sends a large reply
from a lease's memory) and gives back what it no longer holds; what cannot be taken is
waited for (a receive: back pressure on that client alone) or refused (a large reply: the
client gets a SERVER_BUSY error and may try again). So the total never passes the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

RECEIVE_ROOM: Final = 64 * 1024
"""What one receive may add to a connection's buffers: the server reads at most this much
at a time (its shared receive buffer's size)."""


STREAM_PIECE: Final = 256 * 1024
"""Bytes a stream without partial sends (TLS) is given at a time: a reader that takes a
large reply slowly but steadily shows progress piece by piece."""

STREAM_SEND_ROOM: Final = STREAM_PIECE + RECEIVE_ROOM
"""What such a stream holds of a blocked send beside the bytes left: its piece, encrypted,
and a record's worth more."""


class MemoryBudget:
    """``limit`` bytes for all connections together; ``held`` is what they hold now.

    ``waiting`` counts the connections waiting for memory to be given back (their driver
    keeps it); only then does a give call ``on_release``, which wakes them."""

    def __init__(self, limit: int, on_release: Callable[[], object] | None = None) -> None:
        self.limit = limit
        self.held = 0
        self.waiting = 0
        self.refused = 0
        """Times a take did not fit (a receive made to wait, or a reply refused)."""
        self._on_release = on_release

    def fits(self, n: int) -> bool:
        """Whether ``n`` more bytes would fit now."""
        return self.held + n <= self.limit

    def take(self, n: int) -> bool:
        """Take ``n`` more bytes if they fit; whether they did."""
        if not self.fits(n):
            self.refused += 1
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken before."""
        self.held -= n
        if self.waiting and n and self._on_release is not None:
            self._on_release()


class Holding:
    """What one connection holds of a budget: for what it receives (its codec's buffers, and
    room for the next receive) and for what it sends (replies not yet handed to the kernel).
    Not bound to the connection, so that its codec may keep :meth:`take_input` without a
    reference cycle."""

    __slots__ = ("budget", "input", "output")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.input = 0
        self.output = 0

    def take_input(self, n: int) -> bool:
        if self.budget.take(n):
            self.input += n
            return True
        return False

    def input_needed(self, needed: int) -> bool:
        """Hold at least ``needed`` bytes for input, taking what is missing if it fits, and
        give back what is beyond it by more than a receive's worth (so that a connection
        going back and forth by a few bytes does not take and give every time). Whether the
        connection holds enough now."""
        held = self.input
        if held >= needed:
            if held - needed > RECEIVE_ROOM:
                self.input = needed
                self.budget.give(held - needed)
            return True
        return self.take_input(needed - held)

    def take_output(self, n: int) -> bool:
        if self.budget.take(n):
            self.output += n
            return True
        return False

    def give_output(self) -> None:
        output = self.output
        if output:
            self.output = 0
            self.budget.give(output)

    def give_all(self) -> None:
        self.give_output()
        held, self.input = self.input, 0
        self.budget.give(held)
