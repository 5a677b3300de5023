"""One protocol's requests as the metrics count them, sans-IO: per op, how many were answered,
how long each took from its last byte to its reply handed to the socket, and the refusals.

Only a server with metrics on keeps them: its connections note each request's type as they
answer it, and hand the list over once the replies went to the socket (one call per send,
not per request), with the time from the requests' last byte to the replies all in the
kernel's hands.
"""

from __future__ import annotations

from collections import Counter
from typing import get_args

from memlease.core.errors import ErrorCode
from memlease.core.messages import OPS, Request
from memlease.core.seconds_histogram import REQUEST_BOUNDS, SecondsHistogram

_SLOT_OF: dict[type, int] = {kind: OPS.index(kind.op) for kind in get_args(Request)}
"""A request type's op, as its index in OPS."""


class RequestFigures:
    """One protocol's answered requests: ``times[i]`` for the op ``OPS[i]`` (its count is
    the requests answered), ``refused`` by (op index, error code)."""

    def __init__(self) -> None:
        self.times = [SecondsHistogram(REQUEST_BOUNDS) for _ in OPS]
        self.refused: Counter[tuple[int, ErrorCode]] = Counter()
        self._times_of = {kind: self.times[slot] for kind, slot in _SLOT_OF.items()}

    def served(
        self, kinds: list[type], refused: list[tuple[type, ErrorCode]], seconds: float
    ) -> None:
        """Requests of types ``kinds`` were answered, their replies handed to the socket
        ``seconds`` after their last byte came; ``refused``: those of them refused, with
        their error codes. A type that is no request of this release is not counted."""
        times_of = self._times_of.get
        # A send answers few kinds of request: a count per kind, in C.
        for kind in set(kinds):
            times = times_of(kind)
            if times is not None:
                times.observe(seconds, kinds.count(kind))
        for kind, code in refused:
            slot = _SLOT_OF.get(kind)
            if slot is not None:
                self.refused[slot, code] += 1
